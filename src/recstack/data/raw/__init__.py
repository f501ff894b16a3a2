"""Raw formats, both directions: the MMCTR parquet layout, the TencentGR platform (jsonl + pickles) and parquet
layouts (one shared assembly, `tencentgr.assemble`), checked Arrow column access, the restricted unpickler."""
