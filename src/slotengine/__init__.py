"""slotengine: fair, durable, explainable allocation of scarce hospital slots.

Public names only; see README.md for the model and docs/semantics.md for the
exact rules both engines (compiled core and ``reference``) implement.
"""
from .engine import (
    BatchResult,
    BookingInfo,
    Engine,
    Event,
    FlagRecord,
    RiskInfo,
    SessionInfo,
    SlotCounts,
    TicketInfo,
    TicketPosition,
    WaitlistInfo,
)
from .credit import Bill, Cover, Line, Movement, Settlement, Statement
from .errors import SlotEngineError
from .outcomes import (
    BillState,
    BookingState,
    EventKind,
    FlagReason,
    LedgerAccount,
    LineKind,
    LineState,
    MoveKind,
    Reason,
    RequestState,
    SlotState,
    Status,
    TicketState,
    Tier,
)
from .policy import CreditTerms, Policy
from .threadsafe import AsyncEngine, LockedEngine
from .times import DAY, HOUR, MINUTE, from_ms, to_ms

from . import errors  # noqa: E402  (slotengine.errors is public)

__all__ = [
    "Engine",
    "LockedEngine",
    "AsyncEngine",
    "Policy",
    "Status",
    "Reason",
    "BookingState",
    "SlotState",
    "EventKind",
    "Tier",
    "TicketState",
    "FlagReason",
    "RequestState",
    "LineKind",
    "LineState",
    "BillState",
    "LedgerAccount",
    "MoveKind",
    "CreditTerms",
    "Cover",
    "Line",
    "Statement",
    "Bill",
    "Movement",
    "Settlement",
    "TicketInfo",
    "WaitlistInfo",
    "TicketPosition",
    "RiskInfo",
    "FlagRecord",
    "Event",
    "BookingInfo",
    "SessionInfo",
    "SlotCounts",
    "BatchResult",
    "SlotEngineError",
    "errors",
    "to_ms",
    "from_ms",
    "MINUTE",
    "HOUR",
    "DAY",
]
__version__ = "0.1.0"
