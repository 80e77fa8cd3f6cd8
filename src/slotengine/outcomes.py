"""Outcome codes shared by the compiled core and the reference model.

Expected outcomes are values, not exceptions: every command returns a
``Status`` and, when it did not do what was asked, a ``Reason``.  Each stage of
the command path owns one range of reason codes (exchange-core style), so a
code says at a glance where a request stopped:

=======  ===========  =================================================
range    stage        meaning
=======  ===========  =================================================
1xx      request      the session cannot take requests now
2xx      eligibility  the patient or account may not book this
3xx      risk         flags, blocks and throttles (fair-release issue)
4xx      allocate     no slot or no quota left
5xx      credit       no cover for the fee (credit issue)
6xx      lifecycle    confirm / cancel / check-in of an existing booking
=======  ===========  =================================================
"""
from __future__ import annotations

from enum import IntEnum

__all__ = [
    "Status", "Reason", "BookingState", "SlotState", "EventKind", "Tier", "TicketState",
    "FlagReason", "RequestState", "LineKind", "LineState", "BillState", "LedgerAccount",
    "MoveKind",
]


class Status(IntEnum):
    """What a command did."""

    BOOKED = 1
    HELD = 2
    QUEUED = 3
    WAITLISTED = 4
    REJECTED = 5
    CANCELLED = 6
    ARRIVED = 7


class Reason(IntEnum):
    """Why a command did not do what was asked (``NONE`` when it did)."""

    NONE = 0
    # 1xx request: the session's state or clock
    SESSION_SUSPENDED = 101
    SESSION_CLOSED = 102
    NOT_RELEASED = 103
    # 2xx eligibility: patient and account rules
    PATIENT_BANNED = 201
    DUPLICATE_SESSION = 202
    DUPLICATE_DEPARTMENT_DAY = 203
    PATIENT_LIMIT = 204
    ACCOUNT_PATIENT_LIMIT = 205
    FIRST_VISIT_EXPERT = 206
    DUPLICATE_TICKET = 207
    DUPLICATE_WAITLIST = 208
    WAITLIST_PATIENT_CAP = 209
    # 3xx risk
    BLOCKED = 301
    THROTTLED = 302
    FLAGGED = 303
    # 4xx allocate
    FULL = 401
    QUOTA_EXHAUSTED = 402
    SLOTS_LEFT = 403
    WAITLIST_FULL = 404
    # 5xx credit: the fee is not covered
    NO_COVER = 501
    CREDIT_SUSPENDED = 502
    # 6xx lifecycle of an existing booking
    NOT_OWNER = 601
    NOT_ACTIVE = 602
    CANCEL_CUTOFF = 603
    HOLD_EXPIRED = 604
    NOT_HELD = 605
    NOT_CONFIRMED = 606
    SLOT_RELEASED = 607

    @property
    def stage(self) -> str:
        return _STAGES.get(self.value // 100, "none")

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_STAGES = {1: "request", 2: "eligibility", 3: "risk", 4: "allocate", 5: "credit", 6: "lifecycle"}

_MESSAGES = {
    Reason.NONE: "done as asked",
    Reason.SESSION_SUSPENDED: "the session is suspended (停诊)",
    Reason.SESSION_CLOSED: "the session has ended; it takes no more requests",
    Reason.NOT_RELEASED: "neither the channel's quota nor the public pool is released yet",
    Reason.PATIENT_BANNED: "the patient is banned from booking after no-shows or cancellations",
    Reason.DUPLICATE_SESSION: "the patient already holds a live booking in this session",
    Reason.DUPLICATE_DEPARTMENT_DAY: "the patient already holds a live booking in this department that day",
    Reason.PATIENT_LIMIT: "the patient reached a booking limit (count per window)",
    Reason.ACCOUNT_PATIENT_LIMIT: "the account booked for too many distinct patients in the period",
    Reason.FIRST_VISIT_EXPERT: "first-visit patients may not book the expert tier at this hospital",
    Reason.DUPLICATE_TICKET: "the patient already has a queued request for this session",
    Reason.DUPLICATE_WAITLIST: "the patient already has an open waitlist request for this session",
    Reason.WAITLIST_PATIENT_CAP: "the patient has as many open waitlist requests as the policy allows",
    Reason.BLOCKED: "the account or patient is blocked",
    Reason.THROTTLED: "the slow lane admits this account again after retry_after ms",
    Reason.FLAGGED: "the account or patient is flagged; waitlist fills skip it until the flag ends",
    Reason.FULL: "the session has no free slot",
    Reason.QUOTA_EXHAUSTED: "free slots remain, but not in any quota this channel may draw from",
    Reason.SLOTS_LEFT: "the session still has a free slot for this channel: book it instead of waiting",
    Reason.WAITLIST_FULL: "the session's waitlist is as long as the policy allows",
    Reason.NO_COVER: "the prepaid balance and the credit line's free credit do not cover the fee",
    Reason.CREDIT_SUSPENDED: "the balance does not cover the fee and the credit line is suspended for overdue debt",
    Reason.NOT_OWNER: "the booking, ticket or waitlist request belongs to another account",
    Reason.NOT_ACTIVE: "it is no longer live: the booking ended, or the ticket or request was already settled",
    Reason.CANCEL_CUTOFF: "the cancellation cut-off for this session has passed",
    Reason.HOLD_EXPIRED: "the hold expired before it was confirmed",
    Reason.NOT_HELD: "only a held booking can be confirmed",
    Reason.NOT_CONFIRMED: "a held booking must be confirmed before check-in",
    Reason.SLOT_RELEASED: "the patient had not arrived by the grace time; the slot was released",
}


class BookingState(IntEnum):
    """Life of one booking: HELD -> BOOKED -> ARRIVED | NO_SHOW, or it ends early."""

    HELD = 1
    BOOKED = 2
    ARRIVED = 3
    NO_SHOW = 4
    CANCELLED = 5
    EXPIRED = 6


class SlotState(IntEnum):
    """State of one numbered slot.

    CANCELLED marks the slots of a suspended session.  RETURNING is a freed
    slot no waitlist request could take: it is hidden from open booking for
    a randomized delay, then becomes FREE (no instant cancel-then-rebook).
    """

    FREE = 0
    HELD = 1
    BOOKED = 2
    ARRIVED = 3
    NO_SHOW = 4
    CANCELLED = 5
    BLOCKED = 6
    RETURNING = 7


class EventKind(IntEnum):
    """What the engine tells the host after time-driven or host-driven changes."""

    HOLD_EXPIRED = 1
    QUOTA_ROLLED = 2
    NO_SHOW = 3
    PATIENT_BANNED = 4
    SESSION_SUSPENDED = 5
    BOOKING_CANCELLED = 6
    CAPACITY_ADDED = 7
    FLAGGED = 8
    UNFLAGGED = 9
    BLOCKED = 10
    UNBLOCKED = 11
    COHORT_DRAWN = 12
    TICKET_SERVED = 13
    TICKET_FAILED = 14
    WAITLIST_FILLED = 15
    WAITLIST_EXPIRED = 16
    WAITLIST_SKIPPED = 17
    BOOKING_MOVED = 18
    BOOKING_WAITLISTED = 19
    SLOT_RERELEASED = 20
    BILLED = 21
    BILL_DUE_SOON = 22
    BILL_OVERDUE = 23
    BILL_PAID = 24
    CREDIT_SUSPENDED = 25
    CREDIT_REINSTATED = 26
    LIMIT_CHANGED = 27


class TicketState(IntEnum):
    """Life of a queued request (fair-release cohort, drain queue or slow lane)."""

    QUEUED = 1
    SERVED = 2
    FAILED = 3
    CANCELLED = 4


class RequestState(IntEnum):
    """Life of a waitlist request (候补): open until filled, expired or cancelled."""

    OPEN = 1
    FILLED = 2
    EXPIRED = 3
    CANCELLED = 4


class FlagReason(IntEnum):
    """Why an account or patient is in the slow lane: a host decision or a policy rule."""

    HOST = 1
    BLACKLIST = 2
    EARLY_REQUESTS = 3
    CANCELLATIONS = 4
    MANY_PATIENTS = 5
    CANCEL_REBOOK = 6

    @property
    def source(self) -> str:
        return "host" if self.value <= 2 else "rule"


class LineKind(IntEnum):
    """A credit line's kind (先看病后付费): it sets the starting limit and its bounds."""

    OUTPATIENT = 1
    INPATIENT = 2


class LineState(IntEnum):
    """A patient's credit line: none yet, open, suspended for overdue debt, or closed."""

    NONE = 0
    OPEN = 1
    SUSPENDED = 2
    CLOSED = 3


class BillState(IntEnum):
    """A bill on the credit line: open until paid; overdue once its due date passes unpaid."""

    OPEN = 1
    OVERDUE = 2
    PAID = 3


class LedgerAccount(IntEnum):
    """The accounts of the double-entry money ledger.

    EXTERNAL is the world outside the engine (cash in by top-up and repayment,
    cash out by refund) and HOSPITAL the fees earned; BALANCE and CREDIT are
    per patient: the prepaid balance, and the credit line (negative: debt).
    """

    EXTERNAL = 0
    HOSPITAL = 1
    BALANCE = 2
    CREDIT = 3


class MoveKind(IntEnum):
    """What a movement of money was (the ledger's ``kind`` column)."""

    TOP_UP = 1        # EXTERNAL -> BALANCE
    PAY_BALANCE = 2   # BALANCE -> HOSPITAL (a settlement)
    PAY_CREDIT = 3    # CREDIT -> HOSPITAL (a settlement billed to the line)
    REPAY = 4         # EXTERNAL -> CREDIT (a bill paid)
    REFUND = 5        # BALANCE -> EXTERNAL


class Tier(IntEnum):
    GENERAL = 0
    ASSOCIATE = 1
    EXPERT = 2
