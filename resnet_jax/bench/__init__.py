"""Measurement: benchmarks that print figures (never timed tests), the accelerator
benchmark and numerics checks, cost comparisons of recipe components, and the SIGKILL
drill (chaos). tools/ holds the commands users run on their models."""
