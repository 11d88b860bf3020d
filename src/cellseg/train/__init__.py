"""Training a run: the trainer, its callbacks and checkpoints, and fine-tuning from a shipped model."""
