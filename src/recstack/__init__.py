"""recstack: a competition workspace for multimodal recommendation tracks (MMCTR, TencentGR)."""

__version__ = "0.1.0"
