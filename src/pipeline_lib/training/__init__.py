"""Training: the loaders that batch images (balanced retain/forget batches for unlearning) and the one training loop."""
