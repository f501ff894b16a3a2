"""LightGBM stacker and its features (the `stack` stage)."""
