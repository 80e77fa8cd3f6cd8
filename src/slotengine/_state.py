"""Canonical state hashing shared by both engines (see docs/semantics.md)."""
from __future__ import annotations

import hashlib

__all__ = ["state_hash"]


def state_hash(dump: dict) -> str:
    """blake2b of the canonical repr of ``dump()``: equal states hash equal across engines."""
    return hashlib.blake2b(repr(_canon(dump)).encode(), digest_size=16).hexdigest()


def _canon(x: object) -> object:
    if isinstance(x, dict):
        return tuple((k, _canon(x[k])) for k in sorted(x))
    if isinstance(x, (list, tuple)):
        return tuple(_canon(v) for v in x)
    if isinstance(x, bool):
        return int(x)
    if hasattr(x, "__index__"):
        return int(x)  # numpy ints, IntEnums
    return x
