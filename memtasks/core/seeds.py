"""Derived seeds from a stable hash: the same parts give the same seed on every machine and run."""
from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from a sha256 of ``parts`` as JSON (never Python's salted ``hash()``)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "little") >> 1
