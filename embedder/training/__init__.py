"""Training: the plan, the epoch loop, validation, model choice, cross-validation, checkpoints."""
