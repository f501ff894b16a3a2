"""The training loop: device placement, AMP, early stopping, checkpoints, OOF folds, DDP."""
