"""Training: optimiser and schedule, distributed set-up, checkpoint state, the training loop."""
