"""How much memory one allocation may plan for: half of this machine's physical memory.

Sizes that cannot fit (a length, a batch, a parameter budget, a reservoir) are refused up front
against this limit, with the limit named, instead of failing inside an allocation."""
from __future__ import annotations

import os

GIB = 1024**3
FALLBACK_LIMIT = 8 * GIB


def memory_limit_bytes() -> int:
    """Half of the machine's physical memory (8 GiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return FALLBACK_LIMIT
