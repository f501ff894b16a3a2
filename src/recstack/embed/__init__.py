"""Transformers text/image encoders, fusion, reduction, behaviour alignment (the `embed` stage)."""
