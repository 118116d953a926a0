"""On-disk state: checkpoints, the run directory and its records, trained models."""
