"""Prepared tables: readers of what `prepare` writes (mmctr samples / items, tencentgr events and held-out
targets), the one scored-rows prediction format, and the checked ranker inputs."""
