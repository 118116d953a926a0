"""Command-line tools that are not training: fault injection."""
