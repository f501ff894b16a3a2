"""The registry of rankers: every model the `rank_<name>` stages can train (STYLE.md section 3)."""

from __future__ import annotations

from recstack.models.din import DIN
from recstack.models.qin import QIN

RANKERS = {"din": DIN, "qin": QIN}
