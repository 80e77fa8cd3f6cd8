"""Typed errors for misuse and bad input.

Every error is raised before any state changes.  Catch ``SlotEngineError`` for
all of them; the subclasses also derive from the matching builtin (``TypeError``,
``ValueError``, ``KeyError``) so generic handlers keep working.
"""
from __future__ import annotations

__all__ = [
    "SlotEngineError",
    "InvalidType",
    "InvalidArgument",
    "TimeWentBackwards",
    "PolicyError",
    "DuplicateId",
    "UnknownId",
    "UnknownSession",
    "UnknownChannel",
    "UnknownBooking",
    "UnknownTicket",
    "UnknownRequest",
    "UnknownBill",
    "UnknownAccount",
    "UnknownPatient",
    "InvalidState",
    "JournalError",
    "CorruptJournal",
    "SnapshotError",
    "JournalWarning",
]


class SlotEngineError(Exception):
    """Base class of every error slotengine raises on purpose."""


class InvalidType(SlotEngineError, TypeError):
    """An argument has the wrong type (a float for money, a naive datetime, ...)."""


class InvalidArgument(SlotEngineError, ValueError):
    """An argument has the right type but a value out of range or malformed."""


class TimeWentBackwards(InvalidArgument):
    """A command's ``now`` is earlier than the engine's clock."""


class PolicyError(InvalidArgument):
    """A Policy field is inconsistent or out of range."""


class DuplicateId(InvalidArgument):
    """An id that must be new (a session id) is already taken."""


class UnknownId(SlotEngineError, KeyError):
    """An id the engine has never seen."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message plain
        return str(self.args[0]) if self.args else ""


class UnknownSession(UnknownId):
    pass


class UnknownChannel(UnknownId):
    pass


class UnknownBooking(UnknownId):
    pass


class UnknownTicket(UnknownId):
    pass


class UnknownRequest(UnknownId):
    """A waitlist request id the engine never issued."""


class UnknownBill(UnknownId):
    """A bill id the engine never issued."""


class UnknownAccount(UnknownId):
    pass


class UnknownPatient(UnknownId):
    pass


class InvalidState(SlotEngineError, RuntimeError):
    """The command is not allowed in the target's state (adding capacity to a suspended session)."""


class JournalError(SlotEngineError, OSError):
    """The journal could not be written or read, or its directory is in use.

    Raised before the command changes anything when a new segment cannot be
    created (a full disk); after a failed sync the engine refuses every later
    command with it (reopen the directory to recover).
    """


class CorruptJournal(JournalError):
    """A bad record that is not the last one: ``path`` and ``offset`` say where."""

    def __init__(self, message: str, path: str = "", offset: int = -1) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SnapshotError(JournalError):
    """A snapshot that does not load (bad header, checksum, version or sizes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class JournalWarning(UserWarning):
    """Recovery dropped something: a torn last record, a bad snapshot, a repair."""
