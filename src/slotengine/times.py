"""Engine time: int milliseconds since the Unix epoch (UTC).

Hosts may pass aware ``datetime`` objects or int milliseconds; the core only
ever sees ints.  Naive datetimes are refused: a booking engine must not guess
a timezone.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from .errors import InvalidArgument, InvalidType

__all__ = ["SECOND", "MINUTE", "HOUR", "DAY", "MAX_MS", "to_ms", "from_ms"]

SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
#: Latest instant the engine accepts (year 9999); keeps every sum of times in int64.
MAX_MS = 253_402_300_799_999

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_ms(value: object, name: str = "now") -> int:
    """Convert an aware datetime or int milliseconds to int milliseconds, checked."""
    if type(value) is int:
        ms = value
    elif isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidType(f"{name} must be an aware datetime (naive datetimes are refused)")
        ms = (value - _EPOCH) // timedelta(milliseconds=1)
    elif (isinstance(value, int) or hasattr(value, "__index__")) and not isinstance(value, (bool, float)):
        try:
            ms = value.__index__()  # int subclasses and numpy integers
        except TypeError:
            raise InvalidType(f"{name} must be an aware datetime or int milliseconds") from None
    else:
        raise InvalidType(f"{name} must be an aware datetime or int milliseconds, not {type(value).__name__}")
    if not 0 <= ms <= MAX_MS:
        raise InvalidArgument(f"{name}={ms} is outside 0..{MAX_MS} milliseconds")
    return ms


def from_ms(ms: int, tz: timezone = timezone.utc) -> datetime:
    """The aware datetime for ``ms`` (UTC unless ``tz`` is given)."""
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(tz)
