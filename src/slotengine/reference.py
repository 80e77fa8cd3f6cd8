"""Reference model: the backend contract of docs/semantics.md in plain Python.

This is the oracle the compiled core (``slotengine._core.Core``) is tested
against, step by step, and the baseline every benchmark reports against.  It
favours obviously-correct code over speed: small dataclasses, lists, dicts,
sets and ``heapq``; each rule of the contract is written out once, in the
order the contract states it.

Canonical ``dump()`` layout (the compiled core must produce the same values;
lists and tuples exactly as shown, every number a plain ``int``, flags
``bool``)::

    {
      'now':  int,                        # engine clock, starts at 0
      'rng':  int,                        # splitmix64 state, 0 <= rng < 2**64
      'seq':  int,                        # timers pushed so far (next timer's seq)
      'sessions': [                       # by session id
        {'hospital': int, 'department': int, 'tier': int, 'day': int,
         'starts_at': int, 'end_at': int, 'rollover_at': int,
         'cancel_cutoff_at': int, 'slot_ms': int,
         'capacity': int,                 # current (add_capacity raises it)
         'fee': int,
         'quotas': [int] * n_channels,    # as given to add_session, never changed
         'quota_left': [int] * n_channels,
         'release': [int] * n_channels,
         'rolled': bool, 'suspended': bool, 'closed': bool,
         'slot_states': [int] * capacity,    # SlotState values, slot 1 first
         'slot_bookings': [int] * capacity,  # booking id on a HELD/BOOKED/ARRIVED/
                                             # NO_SHOW slot, else -1
         # -- issue 3 --
         'collecting': bool,              # a cohort is open
         'cohort_close': int,             # 0 until the first cohort opens; keeps its
                                          # last value after the cohort closes
         'cohort': [int],                 # ticket ids of the open cohort: the fair
                                          # list then the slow list, each in arrival
                                          # order ([] when not collecting)
         'queue': [int],                  # drain queue from its head on: ticket ids
                                          # not yet passed by a drain, in queue order,
                                          # including ones no longer QUEUED that a
                                          # drain has not skipped yet
         'last_cancel': (int, int)},      # (at, account) of the last cancel, or (0, -1)
      ...],
      'bookings': [booking_info(b) for b in range(n_bookings)],
      'patients': [patient_info(p) + patient_flags(p) for p in range(n_patients)],
                                          # 7-tuples
      'accounts': [account_info(a) for a in range(n_accounts)],
      'tickets':  [ticket_info(t) for t in range(n_tickets)],
      'flag_log': [(at, kind, key, reason, until), ...],   # flag_log(), in order
      'known':  sorted list of (patient, hospital) tuples,
      'timers': sorted list of (due, seq, kind, id) tuples, stale ones included;
                kind: 1 HOLD_EXPIRE (id = booking), 2 ROLLOVER (id = session),
                3 SESSION_END (id = session), 4 COHORT_CLOSE (id = session),
                5 DRAIN (id = session), 6 SLOW_SERVE (id = ticket),
      'events': [(kind, at, session, booking, patient, account, detail), ...]
                                          # not drained yet
    }

where

* ``booking_info(b)`` = ``(session, slot_no, patient, account, channel, quota,
  state, created_at, changed_at, hold_until, end_reason)``;
* ``patient_info(p)`` = ``(banned_until, tuple(strikes), tuple(cancels))``;
* ``patient_flags(p)`` = ``(flag_until, flag_reason, flag_since,
  blocked_until)``, all 0 initially (flag_reason 0 = none);
* ``account_info(a)`` = ``(flag_until, flag_reason, flag_since, blocked_until,
  tat, tuple(early), tuple(cancels))``, all 0 / () initially; the rings hold
  times oldest first;
* ``ticket_info(t)`` = ``(session, patient, account, channel, hold, lane,
  submitted_at, state, draw, cohort_size, served_at, booking, reason)`` with
  ``hold`` a **bool**, ``lane`` 0 FAIR / 1 SLOW, ``state`` a TicketState,
  ``draw`` -1 and ``cohort_size`` 0 until (unless) its cohort is drawn,
  ``served_at`` -1 until served or failed, ``booking`` -1 unless SERVED,
  ``reason`` 0 unless FAILED (then the Reason of the failed serve);
* ``flag_log`` rows ``(at, kind, key, reason, until)``: kind 0 account /
  1 patient; reason a FlagReason for a flag, 0 for an unflag (until = now),
  -1 for a block (until = the ``until`` argument as given); unblock is not
  logged.

Events ``(kind, at, session, booking, patient, account, detail)``, -1 for none:

* HOLD_EXPIRED, NO_SHOW, BOOKING_CANCELLED: session, booking, its patient and
  **its account**; PATIENT_BANNED: the causing booking's session, booking,
  patient and account, detail n; QUOTA_ROLLED, SESSION_SUSPENDED,
  CAPACITY_ADDED, COHORT_DRAWN (detail = cohort size): session only.
* FLAGGED (detail = FlagReason), UNFLAGGED, BLOCKED, UNBLOCKED (detail -1):
  session -1, booking -1, and only the flagged key's field set (account for
  kind 0, patient for kind 1), also for automatic flags.
* TICKET_SERVED: session, booking (new), ticket's patient and account, detail
  = ticket id.  TICKET_FAILED: session, booking -1, patient, account, detail =
  ticket id.

``drain_events_array()`` returns ``{'kind', 'at', 'session', 'booking',
'patient', 'account', 'detail'}`` -> numpy int64 arrays (same rows as
``drain_events()``) and clears the buffer.

Issue-3 readings (where the contract leaves a choice):

* Results: ``ticket`` is None unless a ticket is named (QUEUED book results;
  every ``cancel_ticket`` result, which also sets ``session``); ``retry_after``
  is an int, 0 unless THROTTLED.  ``as_tuple()`` is unchanged (4 ints).
  ``book_many`` returns ``(status, reason, slot, booking, ticket,
  retry_after)``, ticket int64 (-1), retry_after int64 (0).
* Validation of ``flag``: kind in {0, 1} (else InvalidArgument), key in range
  (UnknownAccount / UnknownPatient), reason in {HOST, BLACKLIST} (else
  InvalidArgument), until a time, then now, then ``until > now`` (else
  InvalidArgument).  ``block`` likewise without reason (until > now required
  too).  ``import_blacklist`` checks equal lengths, then every row (kind, key,
  until a time), then now, then every ``until > now``; then flags row by row.
  ``cancel_ticket``: ticket out of range -> UnknownTicket, then account, now.
  ``position``/``ticket_info`` of an unknown ticket -> UnknownTicket.
* The flag rule's "already flagged" for ``flag_since`` is judged at ``t``
  (before the change).  ``unflag`` changes only ``flag_until`` (reason and
  since stay).  ``block`` always logs and emits BLOCKED, even when it does not
  lengthen the block; ``unblock`` sets ``blocked_until = 0`` and emits
  UNBLOCKED only if blocked at now.
* A ``cancel`` does, in order: free the slot, the patient's cancellation
  record (maybe a strike), ``last_cancel``, the account's cancel ring (maybe a
  flag).  Suspend and hold expiry are not cancels.
* After an allocation: many-patients signal, then the rebook signal.
* Drain queue "not empty" means entries remain from the head (cancelled ones
  included).  "More remain" likewise.  A DRAIN found with only non-QUEUED
  entries consumes them and serves nobody.
* ``position``: ``ahead`` counts the QUEUED tickets before it from the head of
  the drain queue; a QUEUED ticket still in a collecting cohort, or any
  non-QUEUED ticket, has -1; a QUEUED slow-lane ticket outside any queue has 0.

Readings of the contract where it leaves a choice (the simplest one each time):

* A timer takes ``seq = dump()['seq']`` and the counter then goes up by one,
  so the first timer has seq 0.
* Timers pushed by a command (``add_session``, a hold) run at the start of a
  later command, even if already due: a command runs timers only before it
  acts.
* Validation checks arguments left to right (``add_session``: all types
  first, then values), then ``now`` (``TimeWentBackwards``); ``add_capacity``'s
  ``InvalidState`` comes last and uses ``closed or now >= end_at``, so it is
  decided before timers run, like every other error.  ``book_many`` checks
  lengths, then accounts, patients, sessions, channels, then times.
* Number domains (shared with the core's storage): every time (``now``,
  session times, releases) in ``0..times.MAX_MS``; hospital and department
  labels in ``0..2**31-1``; ``ensure_*`` sizes in ``0..2**31-1``; other ints
  must fit in int64 (else InvalidArgument); ids of any size that are out of
  range are Unknown*, never InvalidArgument.
* ``book`` results carry the requested ``session`` even when rejected
  (slot, window and booking are then None).
* A hold that expires keeps end reason NONE; a booking cancelled by
  ``suspend`` gets ``changed_at = now`` and end reason SESSION_SUSPENDED.
* Events without a detail use -1 (HOLD_EXPIRED, NO_SHOW).
* A strike with no strike inside the window (only possible with a
  hand-built ``strike_window_ms == 0``) uses ``ban_ms[-1]``, Python's reading
  of index ``min(n, len) - 1 == -1``.
"""
from __future__ import annotations

import heapq
import operator
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ._state import state_hash as _state_hash
from .errors import (
    InvalidArgument,
    InvalidState,
    InvalidType,
    PolicyError,
    TimeWentBackwards,
    UnknownAccount,
    UnknownBooking,
    UnknownChannel,
    UnknownPatient,
    UnknownSession,
    UnknownTicket,
)
from .outcomes import BookingState, EventKind, FlagReason, Reason, SlotState, Status, TicketState
from .policy import CorePolicy
from .times import MAX_MS

__all__ = ["Core", "Result", "TIMER_HOLD_EXPIRE", "TIMER_ROLLOVER", "TIMER_SESSION_END",
           "TIMER_COHORT_CLOSE", "TIMER_DRAIN", "TIMER_SLOW_SERVE"]

#: Timer kinds as they appear in ``dump()['timers']``.
TIMER_HOLD_EXPIRE = 1
TIMER_ROLLOVER = 2
TIMER_SESSION_END = 3
TIMER_COHORT_CLOSE = 4
TIMER_DRAIN = 5
TIMER_SLOW_SERVE = 6

#: Ticket lanes as they appear in ``ticket_info``.
LANE_FAIR = 0
LANE_SLOW = 1
# Where a QUEUED ticket waits.
_IN_COHORT, _IN_QUEUE, _IN_SLOW = 0, 1, 2

_MASK64 = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_LABEL = 2**31 - 1  # hospital and department labels (int32 in the core)
_MAX_ID = 2**31 - 1  # patients, accounts (int32 in the core)
_MAX_CAPACITY = 65535
_MAX_SLOT_MS = 86_400_000
_MAX_FEE = 10**12
_MAX_ADD = 10_000

_LIVE = (BookingState.HELD, BookingState.BOOKED)
_COUNTED = (BookingState.HELD, BookingState.BOOKED, BookingState.ARRIVED, BookingState.NO_SHOW)
_OK = (Status.BOOKED, Status.HELD, Status.CANCELLED, Status.ARRIVED)
# Slot state a booking in this state occupies.
_SLOT_OF = {
    BookingState.HELD: SlotState.HELD,
    BookingState.BOOKED: SlotState.BOOKED,
    BookingState.ARRIVED: SlotState.ARRIVED,
    BookingState.NO_SHOW: SlotState.NO_SHOW,
}


class Result:
    """The outcome of one command: a status, a reason, and the booking acted on."""

    __slots__ = ("status", "reason", "slot", "booking", "window", "session", "ticket",
                 "retry_after")

    def __init__(self, status: Status, reason: Reason = Reason.NONE, slot: int | None = None,
                 booking: int | None = None, window: tuple[int, int] | None = None,
                 session: int | None = None, ticket: int | None = None,
                 retry_after: int = 0) -> None:
        self.status = status
        self.reason = reason
        self.slot = slot
        self.booking = booking
        self.window = window
        self.session = session
        self.ticket = ticket  # the queued request this result names, if any
        self.retry_after = retry_after  # ms to wait when THROTTLED, else 0

    @property
    def ok(self) -> bool:
        """True when the command did what was asked."""
        return self.status in _OK

    def as_tuple(self) -> tuple[int, int, int, int]:
        """``(status, reason, slot or 0, booking or -1)`` as plain ints."""
        return (int(self.status), int(self.reason), self.slot or 0,
                -1 if self.booking is None else self.booking)

    def __eq__(self, other: object) -> bool:
        if not hasattr(other, "as_tuple"):
            return NotImplemented
        return self.as_tuple() == other.as_tuple()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __repr__(self) -> str:
        parts = [f"status={self.status.name}"]
        if self.reason != Reason.NONE:
            parts.append(f"reason={self.reason.name}")
        for name in ("session", "slot", "booking", "window", "ticket"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        if self.retry_after:
            parts.append(f"retry_after={self.retry_after!r}")
        return f"Result({', '.join(parts)})"


@dataclass
class _Session:
    hospital: int
    department: int
    tier: int
    day: int
    starts_at: int
    end_at: int
    rollover_at: int
    cancel_cutoff_at: int
    slot_ms: int
    fee: int
    quotas: list[int]
    release: list[int]
    quota_left: list[int]
    slot_states: list[int]  # index k-1 holds slot k
    slot_bookings: list[int]  # -1 when the slot has no booking
    free_heap: list[int] = field(default_factory=list)  # slot indexes; stale entries allowed
    rolled: bool = False
    suspended: bool = False
    closed: bool = False
    # fair release
    collecting: bool = False
    cohort_close: int = 0
    fair: list[int] = field(default_factory=list)  # open cohort, arrival order
    slow: list[int] = field(default_factory=list)
    queue: list[int] = field(default_factory=list)  # drain queue; entries before head are done
    head: int = 0
    drain_pending: bool = False  # a DRAIN timer for this session is in the heap
    last_cancel_at: int = 0
    last_cancel_account: int = -1

    @property
    def capacity(self) -> int:
        return len(self.slot_states)

    def window(self, slot_no: int) -> tuple[int, int]:
        start = self.starts_at + (slot_no - 1) * self.slot_ms
        return (start, start + self.slot_ms)


@dataclass
class _Booking:
    session: int
    slot_no: int
    patient: int
    account: int
    channel: int
    quota: int
    state: BookingState
    created_at: int
    changed_at: int
    hold_until: int
    end_reason: Reason = Reason.NONE

    def info(self) -> tuple[int, ...]:
        return (self.session, self.slot_no, self.patient, self.account, self.channel,
                self.quota, int(self.state), self.created_at, self.changed_at,
                self.hold_until, int(self.end_reason))


@dataclass
class _Patient:
    banned_until: int = 0
    strikes: list[int] = field(default_factory=list)
    cancels: list[int] = field(default_factory=list)
    live: set[int] = field(default_factory=set)  # HELD or BOOKED booking ids
    bookings: list[int] = field(default_factory=list)  # every booking, oldest first
    queued: set[int] = field(default_factory=set)  # QUEUED ticket ids
    flag_until: int = 0
    flag_reason: int = 0
    flag_since: int = 0
    blocked_until: int = 0

    def flags(self) -> tuple[int, int, int, int]:
        return (self.flag_until, self.flag_reason, self.flag_since, self.blocked_until)


@dataclass
class _Account:
    bookings: list[int] = field(default_factory=list)  # every booking, oldest first
    flag_until: int = 0
    flag_reason: int = 0
    flag_since: int = 0
    blocked_until: int = 0
    tat: int = 0  # GCRA theoretical arrival time (slow lane)
    early: list[int] = field(default_factory=list)  # ring of early-request times
    cancels: list[int] = field(default_factory=list)  # ring of cancel times

    def info(self) -> tuple[Any, ...]:
        return (self.flag_until, self.flag_reason, self.flag_since, self.blocked_until,
                self.tat, tuple(self.early), tuple(self.cancels))


@dataclass
class _Ticket:
    session: int
    patient: int
    account: int
    channel: int
    hold: bool
    lane: int
    submitted_at: int
    where: int  # _IN_COHORT, _IN_QUEUE or _IN_SLOW (meaningful while QUEUED)
    state: TicketState = TicketState.QUEUED
    draw: int = -1
    cohort_size: int = 0
    served_at: int = -1
    booking: int = -1
    reason: Reason = Reason.NONE

    def info(self) -> tuple[Any, ...]:
        return (self.session, self.patient, self.account, self.channel, self.hold, self.lane,
                self.submitted_at, int(self.state), self.draw, self.cohort_size,
                self.served_at, self.booking, int(self.reason))


def _id(value: object, name: str) -> int:
    """An int id (anything with ``__index__`` but bool), else InvalidType.  Any size."""
    if isinstance(value, bool):
        raise InvalidType(f"{name} must be an int, not bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidType(f"{name} must be an int, not {type(value).__name__}") from None


def _int(value: object, name: str) -> int:
    """An int value: like ``_id``, and it must fit in int64 (else InvalidArgument)."""
    v = _id(value, name)
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise InvalidArgument(f"{name}={v} is out of range")
    return v


def _time(v: int, name: str) -> int:
    if not 0 <= v <= MAX_MS:
        raise InvalidArgument(f"{name}={v} is outside 0..{MAX_MS} milliseconds")
    return v


def _ints(values: object, name: str, n: int) -> list[int]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise InvalidType(f"{name} must be a sequence of ints")
    out = [_int(v, name) for v in values]  # type: ignore[attr-defined]
    if len(out) != n:
        raise InvalidArgument(f"{name} has {len(out)} entries, expected {n}")
    return out


class Core:
    """The plain-Python backend: same constructor, methods, results and dump as ``_core.Core``.

    Example::

        >>> from slotengine.policy import Policy
        >>> c = Core(Policy().compile(), seed=1)
        >>> c.ensure_patients(1); c.ensure_accounts(1)
        >>> c.add_session(0, 0, 0, 0, 10**6, 2 * 10**6, 10**5, 10**5, 10, 2, 0, [2, 0, 0, 0, 0, 0],
        ...               [0] * 6, 0)
        0
        >>> c.book(0, 0, 0, 0, 10, False)  # inside the release's cohort window
        Result(status=QUEUED, session=0, ticket=0)
        >>> c.advance(60_000)  # the cohort closes and is served
        >>> c.ticket_info(0)[7:12]  # state SERVED, draw 0 of 1, served at 60000, booking 0
        (2, 0, 1, 60000, 0)
    """

    def __init__(self, policy: CorePolicy, seed: int) -> None:
        seed = _id(seed, "seed")
        if not 0 <= seed < 2**64:
            raise InvalidArgument(f"seed={seed} is outside 0..2**64-1")
        if not 1 <= policy.n_channels <= 32 or not 0 <= policy.public_channel < policy.n_channels:
            raise PolicyError("policy channels are inconsistent")
        if not policy.ban_ms:
            raise PolicyError("policy.ban_ms must not be empty")
        self._policy = policy
        self._ban_ms = tuple(policy.ban_ms)
        self._limits = tuple((int(n), int(w)) for n, w in policy.patient_limits)
        self._now = 0
        self._rng = seed
        self._seq = 0
        self._timers: list[tuple[int, int, int, int]] = []  # heap of (due, seq, kind, id)
        self._sessions: list[_Session] = []
        self._bookings: list[_Booking] = []
        self._patients: list[_Patient] = []
        self._accounts: list[_Account] = []
        self._tickets: list[_Ticket] = []
        self._flag_log: list[tuple[int, int, int, int, int]] = []
        self._known: set[tuple[int, int]] = set()
        self._events: list[tuple[int, int, int, int, int, int, int]] = []

    # -- introspection -------------------------------------------------------

    @property
    def now(self) -> int:
        return self._now

    @property
    def n_sessions(self) -> int:
        return len(self._sessions)

    @property
    def n_bookings(self) -> int:
        return len(self._bookings)

    @property
    def n_patients(self) -> int:
        return len(self._patients)

    @property
    def n_accounts(self) -> int:
        return len(self._accounts)

    @property
    def n_tickets(self) -> int:
        return len(self._tickets)

    def session_counts(self, session: int) -> tuple[int, ...]:
        """Slots by SlotState order (free, held, booked, arrived, no_show, cancelled, blocked).  O(capacity)."""
        s = self._session(session)
        counts = [0] * len(SlotState)
        for st in s.slot_states:
            counts[st] += 1
        return tuple(counts)

    def session_quota(self, session: int) -> list[int]:
        return list(self._session(session).quota_left)

    def session_flags(self, session: int) -> tuple[bool, bool, bool, int]:
        s = self._session(session)
        return (s.rolled, s.suspended, s.closed, s.capacity)

    def patient_live(self, patient: int) -> list[int]:
        return sorted(self._patient(patient).live)

    def booking_info(self, booking: int) -> tuple[int, ...]:
        return self._booking(booking).info()

    def patient_info(self, patient: int) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
        p = self._patient(patient)
        return (p.banned_until, tuple(p.strikes), tuple(p.cancels))

    def patient_flags(self, patient: int) -> tuple[int, int, int, int]:
        """``(flag_until, flag_reason, flag_since, blocked_until)`` of a patient."""
        return self._patient(patient).flags()

    def account_info(self, account: int) -> tuple[Any, ...]:
        """``(flag_until, flag_reason, flag_since, blocked_until, tat, early, cancels)``."""
        return self._accounts[self._check_account(account)].info()

    def ticket_info(self, ticket: int) -> tuple[Any, ...]:
        """``(session, patient, account, channel, hold, lane, submitted_at, state, draw,
        cohort_size, served_at, booking, reason)``."""
        return self._ticket(ticket).info()

    def flag_log(self) -> list[tuple[int, int, int, int, int]]:
        """Every flag, unflag and block so far: ``(at, kind, key, reason, until)``."""
        return list(self._flag_log)

    def position(self, ticket: int) -> tuple[int, int, int, int]:
        """``(state, ahead, draw, cohort_size)`` of a ticket (see the contract)."""
        t = self._ticket(ticket)
        ahead = -1
        if t.state == TicketState.QUEUED:
            if t.where == _IN_SLOW:
                ahead = 0
            elif t.where == _IN_QUEUE:
                s = self._sessions[t.session]
                k = _id(ticket, "ticket")
                i = s.queue.index(k, s.head)
                ahead = sum(1 for x in s.queue[s.head:i]
                            if self._tickets[x].state == TicketState.QUEUED)
        return (int(t.state), ahead, t.draw, t.cohort_size)

    def dump(self) -> dict:
        """The canonical state (layout in the module docstring)."""
        sessions = []
        for s in self._sessions:
            sessions.append({
                "hospital": s.hospital, "department": s.department, "tier": s.tier,
                "day": s.day, "starts_at": s.starts_at, "end_at": s.end_at,
                "rollover_at": s.rollover_at, "cancel_cutoff_at": s.cancel_cutoff_at,
                "slot_ms": s.slot_ms, "capacity": s.capacity, "fee": s.fee,
                "quotas": list(s.quotas), "quota_left": list(s.quota_left),
                "release": list(s.release), "rolled": s.rolled, "suspended": s.suspended,
                "closed": s.closed, "slot_states": [int(x) for x in s.slot_states],
                "slot_bookings": list(s.slot_bookings),
                "collecting": s.collecting, "cohort_close": s.cohort_close,
                "cohort": list(s.fair) + list(s.slow), "queue": s.queue[s.head:],
                "last_cancel": (s.last_cancel_at, s.last_cancel_account),
            })
        return {
            "now": self._now,
            "rng": self._rng,
            "seq": self._seq,
            "sessions": sessions,
            "bookings": [b.info() for b in self._bookings],
            "patients": [self.patient_info(p) + self._patients[p].flags()
                         for p in range(len(self._patients))],
            "accounts": [a.info() for a in self._accounts],
            "tickets": [t.info() for t in self._tickets],
            "flag_log": list(self._flag_log),
            "known": sorted(self._known),
            "timers": sorted(self._timers),
            "events": list(self._events),
        }

    def state_hash(self) -> str:
        return _state_hash(self.dump())

    def memory_usage(self) -> dict[str, int]:
        """A rough count of bytes in the main containers (shallow sizes)."""
        size = sys.getsizeof
        return {
            "sessions": sum(size(s.slot_states) + size(s.slot_bookings) + size(s.free_heap)
                            for s in self._sessions),
            "bookings": size(self._bookings) + sum(size(b) for b in self._bookings),
            "patients": size(self._patients) + sum(size(p) for p in self._patients),
            "timers": size(self._timers),
            "tickets": size(self._tickets) + sum(size(t) for t in self._tickets),
            "accounts": size(self._accounts) + sum(size(a) for a in self._accounts),
        }

    def rng_next(self) -> int:
        """Advance the splitmix64 generator and return its next 64-bit output."""
        self._rng = (self._rng + 0x9E3779B97F4A7C15) & _MASK64
        z = self._rng
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def drain_events(self) -> list[tuple[int, int, int, int, int, int, int]]:
        """Events since the last drain: ``(kind, at, session, booking, patient, account, detail)``."""
        out, self._events = self._events, []
        return out

    def drain_events_array(self) -> dict[str, np.ndarray]:
        """Events since the last drain as int64 numpy columns (keys as in the tuples)."""
        rows = self.drain_events()
        names = ("kind", "at", "session", "booking", "patient", "account", "detail")
        return {name: np.array([r[i] for r in rows], dtype=np.int64)
                for i, name in enumerate(names)}

    # -- id space --------------------------------------------------------------

    def ensure_patients(self, n: int) -> None:
        """Make room for patient ids ``< n`` (never shrinks)."""
        n = _int(n, "n")
        if not 0 <= n <= _MAX_ID:
            raise InvalidArgument(f"n={n} is outside 0..{_MAX_ID}")
        while len(self._patients) < n:
            self._patients.append(_Patient())

    def ensure_accounts(self, n: int) -> None:
        """Make room for account ids ``< n`` (never shrinks)."""
        n = _int(n, "n")
        if not 0 <= n <= _MAX_ID:
            raise InvalidArgument(f"n={n} is outside 0..{_MAX_ID}")
        while len(self._accounts) < n:
            self._accounts.append(_Account())

    # -- validation helpers (raise, change nothing) ----------------------------

    def _session(self, session: object) -> _Session:
        s = _id(session, "session")
        if not 0 <= s < len(self._sessions):
            raise UnknownSession(f"unknown session {s}")
        return self._sessions[s]

    def _booking(self, booking: object) -> _Booking:
        b = _id(booking, "booking")
        if not 0 <= b < len(self._bookings):
            raise UnknownBooking(f"unknown booking {b}")
        return self._bookings[b]

    def _patient(self, patient: object) -> _Patient:
        p = _id(patient, "patient")
        if not 0 <= p < len(self._patients):
            raise UnknownPatient(f"unknown patient {p}")
        return self._patients[p]

    def _check_account(self, account: object) -> int:
        a = _id(account, "account")
        if not 0 <= a < len(self._accounts):
            raise UnknownAccount(f"unknown account {a}")
        return a

    def _check_channel(self, channel: object) -> int:
        c = _id(channel, "channel")
        if not 0 <= c < self._policy.n_channels:
            raise UnknownChannel(f"unknown channel {c}")
        return c

    def _ticket(self, ticket: object) -> _Ticket:
        t = _id(ticket, "ticket")
        if not 0 <= t < len(self._tickets):
            raise UnknownTicket(f"unknown ticket {t}")
        return self._tickets[t]

    def _kind_key(self, kind: object, key: object) -> tuple[int, int]:
        """``(kind, key)`` of an account (0) or patient (1); raises like the contract says."""
        k = _int(kind, "kind")
        if k not in (0, 1):
            raise InvalidArgument(f"kind={k} must be 0 (account) or 1 (patient)")
        if k == 0:
            return k, self._check_account(key)
        p = _id(key, "key")
        self._patient(p)
        return k, p

    def _check_now(self, now: object) -> int:
        t = _int(now, "now")
        if t < self._now:
            raise TimeWentBackwards(f"now={t} is earlier than the engine clock {self._now}")
        if t > MAX_MS:
            raise InvalidArgument(f"now={t} is after {MAX_MS} ms")
        return t

    # -- timers ------------------------------------------------------------------

    def _push(self, due: int, kind: int, ident: int) -> None:
        heapq.heappush(self._timers, (due, self._seq, kind, ident))
        self._seq += 1

    def _run_timers(self, now: int) -> None:
        """Handle every timer due by ``now`` in (due, seq) order, then set the clock."""
        while self._timers and self._timers[0][0] <= now:
            due, _seq, kind, ident = heapq.heappop(self._timers)
            if kind == TIMER_HOLD_EXPIRE:
                b = self._bookings[ident]
                if b.state == BookingState.HELD and b.hold_until == due:
                    self._expire(ident, due)
            elif kind == TIMER_ROLLOVER:
                self._rollover(ident, due)
            elif kind == TIMER_SESSION_END:
                self._session_end(ident, due)
            elif kind == TIMER_COHORT_CLOSE:
                s = self._sessions[ident]
                if s.collecting and s.cohort_close == due:
                    self._close_cohort(ident, due)
            elif kind == TIMER_DRAIN:
                self._sessions[ident].drain_pending = False
                self._drain(ident, due)
            else:  # TIMER_SLOW_SERVE
                if self._tickets[ident].state == TicketState.QUEUED:
                    self._serve(ident, due)
        self._now = now

    def _close_cohort(self, s_id: int, at: int) -> None:
        """Draw the lottery (fair list, then slow list), queue the cohort, drain."""
        s = self._sessions[s_id]
        for lst in (s.fair, s.slow):  # Fisher-Yates from the engine generator
            for i in range(len(lst) - 1, 0, -1):
                j = self.rng_next() % (i + 1)
                lst[i], lst[j] = lst[j], lst[i]
        order = s.fair + s.slow
        for rank, k in enumerate(order):
            t = self._tickets[k]
            t.draw = rank
            t.cohort_size = len(order)
            t.where = _IN_QUEUE
        s.queue.extend(order)
        s.fair, s.slow = [], []
        s.collecting = False
        self._event(EventKind.COHORT_DRAWN, at, s_id, -1, -1, -1, len(order))
        self._drain(s_id, at)

    def _drain(self, s_id: int, at: int) -> None:
        """Serve the queue (all of it, or one live ticket per outflow gap)."""
        s = self._sessions[s_id]
        gap = self._policy.outflow_gap_ms
        while s.head < len(s.queue):
            k = s.queue[s.head]
            s.head += 1
            if self._tickets[k].state == TicketState.QUEUED:
                self._serve(k, at)
                if gap > 0:
                    break
        if s.head < len(s.queue):
            if not s.drain_pending:
                self._push(at + gap, TIMER_DRAIN, s_id)
                s.drain_pending = True
        else:
            s.queue, s.head = [], 0

    def _serve(self, k: int, at: int) -> None:
        """Serve ticket ``k`` at ``at``: request, eligibility and allocate stages only."""
        t = self._tickets[k]
        s = self._sessions[t.session]
        reason = self._request_stage(s, t.channel, at)
        if reason == Reason.NONE:
            reason = self._eligibility(t.account, t.patient, t.session, at)
        b_id = -1
        if reason == Reason.NONE:
            r = self._allocate(t.account, t.patient, t.session, t.channel, at, t.hold)
            reason = r.reason
            b_id = -1 if r.booking is None else r.booking
        t.served_at = at
        self._patients[t.patient].queued.discard(k)
        if reason == Reason.NONE:
            t.state = TicketState.SERVED
            t.booking = b_id
            self._event(EventKind.TICKET_SERVED, at, t.session, b_id, t.patient, t.account, k)
        else:
            t.state = TicketState.FAILED
            t.reason = reason
            self._event(EventKind.TICKET_FAILED, at, t.session, -1, t.patient, t.account, k)

    def _expire(self, b_id: int, at: int) -> None:
        b = self._bookings[b_id]
        b.state = BookingState.EXPIRED
        b.changed_at = at
        self._free_slot(b_id)
        self._event(EventKind.HOLD_EXPIRED, at, b.session, b_id, b.patient, b.account, -1)

    def _rollover(self, s_id: int, at: int) -> None:
        s = self._sessions[s_id]
        if s.suspended:
            return
        pub = self._policy.public_channel
        moved = 0
        for c in range(len(s.quota_left)):
            if c != pub:
                moved += s.quota_left[c]
                s.quota_left[c] = 0
        s.quota_left[pub] += moved
        s.rolled = True
        if moved > 0:
            self._event(EventKind.QUOTA_ROLLED, at, s_id, -1, -1, -1, moved)

    def _session_end(self, s_id: int, at: int) -> None:
        s = self._sessions[s_id]
        if s.suspended:
            return
        s.closed = True
        for k in range(s.capacity):
            b_id = s.slot_bookings[k]
            if b_id < 0:
                continue
            b = self._bookings[b_id]
            if b.state == BookingState.BOOKED:
                b.state = BookingState.NO_SHOW
                b.changed_at = at
                s.slot_states[k] = SlotState.NO_SHOW
                self._patients[b.patient].live.discard(b_id)
                self._event(EventKind.NO_SHOW, at, s_id, b_id, b.patient, b.account, -1)
                self._strike(b.patient, at, s_id, b_id)
            elif b.state == BookingState.HELD:
                self._expire(b_id, at)

    # -- shared steps --------------------------------------------------------------

    def _event(self, kind: EventKind, at: int, session: int, booking: int, patient: int,
               account: int, detail: int) -> None:
        self._events.append((int(kind), at, session, booking, patient, account, detail))

    def _flag(self, kind: int, key: int, reason: int, until: int, t: int) -> None:
        """The flag rule: never shortens a live flag; logs and emits FLAGGED when it acts."""
        obj: Any = self._accounts[key] if kind == 0 else self._patients[key]
        flagged = t < obj.flag_until
        if flagged and until <= obj.flag_until:
            return
        obj.flag_until = until
        obj.flag_reason = int(reason)
        if not flagged:
            obj.flag_since = t
        self._flag_log.append((t, kind, key, int(reason), until))
        self._party_event(EventKind.FLAGGED, t, kind, key, int(reason))

    def _party_event(self, ev: EventKind, t: int, kind: int, key: int, detail: int) -> None:
        self._event(ev, t, -1, -1, key if kind == 1 else -1, key if kind == 0 else -1, detail)

    def _auto_flag(self, a: int, reason: FlagReason, t: int) -> None:
        """A rule flags an unflagged account for flag_ms; a flagged one is left as it is."""
        if t < self._accounts[a].flag_until:
            return
        self._flag(0, a, reason, t + self._policy.flag_ms, t)

    def _free_slot(self, b_id: int) -> None:
        """The booking's slot becomes FREE and its quota comes back (to public once rolled)."""
        b = self._bookings[b_id]
        s = self._sessions[b.session]
        k = b.slot_no - 1
        s.slot_states[k] = SlotState.FREE
        s.slot_bookings[k] = -1
        heapq.heappush(s.free_heap, k)
        self._patients[b.patient].live.discard(b_id)
        pub = self._policy.public_channel
        q = pub if (b.quota != pub and s.rolled) else b.quota
        s.quota_left[q] += 1

    def _strike(self, patient: int, t: int, session: int, booking: int) -> None:
        p = self._patients[patient]
        cap = len(self._ban_ms)
        p.strikes.append(t)
        del p.strikes[:-cap]
        n = sum(1 for x in p.strikes if x > t - self._policy.strike_window_ms)
        until = t + self._ban_ms[min(n, cap) - 1]
        p.banned_until = max(p.banned_until, until)
        self._event(EventKind.PATIENT_BANNED, t, session, booking, patient,
                    self._bookings[booking].account, n)

    def _record_cancel(self, patient: int, t: int, session: int, booking: int) -> None:
        k = self._policy.cancel_strikes
        if k <= 0:
            return
        p = self._patients[patient]
        p.cancels.append(t)
        del p.cancels[:-k]
        if sum(1 for x in p.cancels if x > t - self._policy.cancel_window_ms) >= k:
            p.cancels.clear()
            self._strike(patient, t, session, booking)

    def _created_since(self, ids: list[int], after: int) -> list[_Booking]:
        """The bookings among ``ids`` with ``created_at > after``.

        ``ids`` is in creation order and the clock never goes back, so
        ``created_at`` is non-decreasing along it: walk back from the newest
        and stop at the first one too old.  O(bookings in the window).
        """
        out = []
        for b_id in reversed(ids):
            b = self._bookings[b_id]
            if b.created_at <= after:
                break
            out.append(b)
        return out

    def _lowest_free(self, s: _Session) -> int:
        """Index of the lowest FREE slot, or -1.  Drops stale heap entries on the way."""
        heap = s.free_heap
        while heap and s.slot_states[heap[0]] != SlotState.FREE:
            heapq.heappop(heap)
        return heap[0] if heap else -1

    def _result_for(self, status: Status, reason: Reason, b_id: int) -> Result:
        b = self._bookings[b_id]
        s = self._sessions[b.session]
        return Result(status, reason, b.slot_no, b_id, s.window(b.slot_no), b.session)

    # -- commands ------------------------------------------------------------------

    def advance(self, now: int) -> None:
        """Run the timers due by ``now``."""
        self._run_timers(self._check_now(now))

    def add_session(self, hospital: int, department: int, tier: int, day: int, starts_at: int,
                    end_at: int, rollover_at: int, cancel_cutoff_at: int, slot_ms: int,
                    capacity: int, fee: int, quotas: Sequence[int], release: Sequence[int],
                    now: int) -> int:
        """Add a session with ``capacity`` FREE slots; returns its id.  O(capacity)."""
        hospital = _int(hospital, "hospital")
        department = _int(department, "department")
        tier = _int(tier, "tier")
        day = _int(day, "day")
        starts_at = _int(starts_at, "starts_at")
        end_at = _int(end_at, "end_at")
        rollover_at = _int(rollover_at, "rollover_at")
        cancel_cutoff_at = _int(cancel_cutoff_at, "cancel_cutoff_at")
        slot_ms = _int(slot_ms, "slot_ms")
        capacity = _int(capacity, "capacity")
        fee = _int(fee, "fee")
        nch = self._policy.n_channels
        quotas = _ints(quotas, "quotas", nch)
        release = _ints(release, "release", nch)
        if not (0 <= hospital <= _MAX_LABEL and 0 <= department <= _MAX_LABEL):
            raise InvalidArgument(f"hospital and department ids must be in 0..{_MAX_LABEL}")
        if not 0 <= tier <= 2:
            raise InvalidArgument(f"tier={tier} is outside 0..2")
        for name, v in (("starts_at", starts_at), ("end_at", end_at),
                        ("rollover_at", rollover_at), ("cancel_cutoff_at", cancel_cutoff_at)):
            _time(v, name)
        if not starts_at < end_at:
            raise InvalidArgument("starts_at must be before end_at")
        if not 1 <= slot_ms <= _MAX_SLOT_MS:
            raise InvalidArgument(f"slot_ms={slot_ms} is outside 1..{_MAX_SLOT_MS}")
        if not 1 <= capacity <= _MAX_CAPACITY:
            raise InvalidArgument(f"capacity={capacity} is outside 1..{_MAX_CAPACITY}")
        if not 0 <= fee <= _MAX_FEE:
            raise InvalidArgument(f"fee={fee} is outside 0..{_MAX_FEE}")
        if any(q < 0 for q in quotas) or sum(quotas) != capacity:
            raise InvalidArgument("quotas must be >= 0 and sum to capacity")
        for v in release:
            _time(v, "release")
        now = self._check_now(now)
        self._run_timers(now)
        s_id = len(self._sessions)
        self._sessions.append(_Session(
            hospital, department, tier, day, starts_at, end_at, rollover_at, cancel_cutoff_at,
            slot_ms, fee, list(quotas), list(release), list(quotas),
            [SlotState.FREE] * capacity, [-1] * capacity, list(range(capacity)),
        ))
        self._push(rollover_at, TIMER_ROLLOVER, s_id)
        self._push(end_at, TIMER_SESSION_END, s_id)
        return s_id

    def book(self, account: int, patient: int, session: int, channel: int, now: int,
             hold: bool) -> Result:
        """Book (or hold) the lowest FREE slot, or say at which check it stopped.

        O(capacity) worst case for the free-slot search (amortised O(log
        capacity)), plus O(bookings of the patient and of the account).
        """
        a = self._check_account(account)
        p = _id(patient, "patient")
        self._patient(p)
        s_id = _id(session, "session")
        self._session(s_id)
        c = self._check_channel(channel)
        now = self._check_now(now)
        self._run_timers(now)
        return self._book(a, p, s_id, c, now, bool(hold))

    def _book(self, a: int, p_id: int, s_id: int, c: int, now: int, hold: bool) -> Result:
        """The book path: request -> risk -> eligibility -> route -> allocate."""
        pol = self._policy
        s = self._sessions[s_id]
        p = self._patients[p_id]
        acc = self._accounts[a]
        pub = pol.public_channel

        def reject(reason: Reason, retry_after: int = 0) -> Result:
            return Result(Status.REJECTED, reason, session=s_id, retry_after=retry_after)

        # 1. request stage
        reason = self._request_stage(s, c, now)
        if reason != Reason.NONE:
            return reject(reason)
        # 2. risk stage
        if now < acc.blocked_until or now < p.blocked_until:
            return reject(Reason.BLOCKED)
        if pol.early_count > 0 and any(
                s.release[x] - pol.prequeue_ms <= now < s.release[x] + pol.early_ms
                for x in (c, pub)):
            acc.early.append(now)
            del acc.early[:-pol.early_count]
            if sum(1 for t in acc.early if t > now - pol.early_window_ms) >= pol.early_count:
                acc.early.clear()
                self._auto_flag(a, FlagReason.EARLY_REQUESTS, now)
        slow = now < acc.flag_until or now < p.flag_until
        if slow:
            period = pol.slow_interval_ms
            tau = period * (pol.slow_burst - 1)
            if now < acc.tat - tau:
                return reject(Reason.THROTTLED, acc.tat - tau - now)
            acc.tat = max(acc.tat, now) + period
        # 3. eligibility stage
        reason = self._eligibility(a, p_id, s_id, now)
        if reason != Reason.NONE:
            return reject(reason)
        if any(self._tickets[k].session == s_id for k in p.queued):
            return reject(Reason.DUPLICATE_TICKET)
        # 4. route
        lane = LANE_SLOW if slow else LANE_FAIR
        window = None
        for x in (c, pub):
            if s.release[x] - pol.prequeue_ms <= now < s.release[x] + pol.cohort_ms:
                window = x
                break
        if s.collecting or window is not None:
            if not s.collecting:
                assert window is not None
                s.collecting = True
                s.cohort_close = s.release[window] + pol.cohort_ms
                self._push(s.cohort_close, TIMER_COHORT_CLOSE, s_id)
            k = self._new_ticket(a, p_id, s_id, c, hold, lane, now, _IN_COHORT)
            (s.slow if slow else s.fair).append(k)
            return Result(Status.QUEUED, Reason.NONE, session=s_id, ticket=k)
        if s.head < len(s.queue):
            k = self._new_ticket(a, p_id, s_id, c, hold, lane, now, _IN_QUEUE)
            s.queue.append(k)
            return Result(Status.QUEUED, Reason.NONE, session=s_id, ticket=k)
        if slow:
            k = self._new_ticket(a, p_id, s_id, c, hold, lane, now, _IN_SLOW)
            self._push(now + pol.slow_delay_ms, TIMER_SLOW_SERVE, k)
            return Result(Status.QUEUED, Reason.NONE, session=s_id, ticket=k)
        # 5. allocate stage
        return self._allocate(a, p_id, s_id, c, now, hold)

    def _new_ticket(self, a: int, p_id: int, s_id: int, c: int, hold: bool, lane: int,
                    now: int, where: int) -> int:
        k = len(self._tickets)
        self._tickets.append(_Ticket(s_id, p_id, a, c, hold, lane, now, where))
        self._patients[p_id].queued.add(k)
        return k

    def _request_stage(self, s: _Session, c: int, now: int) -> Reason:
        pre = self._policy.prequeue_ms
        pub = self._policy.public_channel
        if s.suspended:
            return Reason.SESSION_SUSPENDED
        if s.closed or now >= s.end_at:
            return Reason.SESSION_CLOSED
        if now < s.release[c] - pre and now < s.release[pub] - pre:
            return Reason.NOT_RELEASED
        return Reason.NONE

    def _eligibility(self, a: int, p_id: int, s_id: int, now: int) -> Reason:
        """The eligibility stage without the duplicate-ticket check."""
        pol = self._policy
        s = self._sessions[s_id]
        p = self._patients[p_id]
        if now < p.banned_until:
            return Reason.PATIENT_BANNED
        live = [self._bookings[b] for b in p.live]
        if any(b.session == s_id for b in live):
            return Reason.DUPLICATE_SESSION
        if pol.one_per_department_day:
            for b in live:
                other = self._sessions[b.session]
                if other.department == s.department and other.day == s.day:
                    return Reason.DUPLICATE_DEPARTMENT_DAY
        for count, window_ms in self._limits:
            n = sum(1 for b in self._created_since(p.bookings, now - window_ms)
                    if b.state in _COUNTED)
            if n >= count:
                return Reason.PATIENT_LIMIT
        if pol.account_patients > 0:
            recent = {b.patient for b in self._created_since(self._accounts[a].bookings,
                                                             now - pol.account_window_ms)}
            if p_id not in recent and len(recent) >= pol.account_patients:
                return Reason.ACCOUNT_PATIENT_LIMIT
        if pol.bar_first_visit_expert and s.tier == 2 and (p_id, s.hospital) not in self._known:
            return Reason.FIRST_VISIT_EXPERT
        return Reason.NONE

    def _allocate(self, a: int, p_id: int, s_id: int, c: int, now: int, hold: bool) -> Result:
        """The allocate stage, then the many-patients and rebook signals on success."""
        pol = self._policy
        s = self._sessions[s_id]
        p = self._patients[p_id]
        acc = self._accounts[a]
        pub = pol.public_channel
        k = self._lowest_free(s)
        if k < 0:
            return Result(Status.REJECTED, Reason.FULL, session=s_id)
        if now >= s.release[c] and s.quota_left[c] > 0:
            q = c
        elif now >= s.release[pub] and s.quota_left[pub] > 0:
            q = pub
        else:
            return Result(Status.REJECTED, Reason.QUOTA_EXHAUSTED, session=s_id)
        s.quota_left[q] -= 1
        b_id = len(self._bookings)
        state = BookingState.HELD if hold else BookingState.BOOKED
        hold_until = now + pol.hold_ms if hold else 0
        self._bookings.append(_Booking(s_id, k + 1, p_id, a, c, q, state, now, now, hold_until))
        heapq.heappop(s.free_heap)  # k is the top after _lowest_free
        s.slot_states[k] = _SLOT_OF[state]
        s.slot_bookings[k] = b_id
        p.live.add(b_id)
        p.bookings.append(b_id)
        acc.bookings.append(b_id)
        if hold:
            self._push(hold_until, TIMER_HOLD_EXPIRE, b_id)
        # many-patients signal
        if pol.patients_flag_count > 0:
            recent = {b.patient for b in self._created_since(acc.bookings,
                                                             now - pol.patients_flag_window_ms)}
            if len(recent) >= pol.patients_flag_count and not now < acc.flag_until:
                self._auto_flag(a, FlagReason.MANY_PATIENTS, now)
        # cancel-then-rebook signal
        if (pol.rebook_ms > 0 and s.last_cancel_account >= 0 and s.last_cancel_account != a
                and now - s.last_cancel_at <= pol.rebook_ms):
            self._auto_flag(s.last_cancel_account, FlagReason.CANCEL_REBOOK, now)
            self._auto_flag(a, FlagReason.CANCEL_REBOOK, now)
            s.last_cancel_at, s.last_cancel_account = 0, -1
        status = Status.HELD if hold else Status.BOOKED
        return Result(status, Reason.NONE, k + 1, b_id, s.window(k + 1), s_id)

    def book_many(self, accounts: Any, patients: Any, sessions: Any, channels: Any, nows: Any,
                  hold: bool) -> tuple[np.ndarray, ...]:
        """``book`` row by row after validating every row.

        Returns ``(status, reason, slot, booking, ticket, retry_after)``.
        """
        cols = [[_int(v, name) for v in col] for col, name in
                ((accounts, "accounts"), (patients, "patients"), (sessions, "sessions"),
                 (channels, "channels"), (nows, "nows"))]
        n = len(cols[0])
        if any(len(col) != n for col in cols):
            raise InvalidArgument("book_many columns must have equal lengths")
        acc, pat, ses, chan, times = cols
        for a in acc:
            self._check_account(a)
        for p in pat:
            self._patient(p)
        for s in ses:
            self._session(s)
        for c in chan:
            self._check_channel(c)
        prev = self._now
        for t in times:
            if t < prev:
                raise TimeWentBackwards(f"now={t} is earlier than {prev}")
            if t > MAX_MS:
                raise InvalidArgument(f"now={t} is after {MAX_MS} ms")
            prev = t
        status = np.zeros(n, dtype=np.int8)
        reason = np.zeros(n, dtype=np.int16)
        slot = np.zeros(n, dtype=np.int32)
        booking = np.full(n, -1, dtype=np.int64)
        ticket = np.full(n, -1, dtype=np.int64)
        retry = np.zeros(n, dtype=np.int64)
        hold = bool(hold)
        for i in range(n):
            self._run_timers(times[i])
            r = self._book(acc[i], pat[i], ses[i], chan[i], times[i], hold)
            status[i], reason[i], slot[i], booking[i] = r.as_tuple()
            ticket[i] = -1 if r.ticket is None else r.ticket
            retry[i] = r.retry_after
        return status, reason, slot, booking, ticket, retry

    def confirm(self, booking: int, account: int, now: int) -> Result:
        """HELD -> BOOKED by the owning account.  O(1)."""
        b = self._booking(booking)
        a = self._check_account(account)
        now = self._check_now(now)
        self._run_timers(now)
        b_id = _id(booking, "booking")
        if b.account != a:
            return self._result_for(Status.REJECTED, Reason.NOT_OWNER, b_id)
        if b.state == BookingState.EXPIRED:
            return self._result_for(Status.REJECTED, Reason.HOLD_EXPIRED, b_id)
        if b.state != BookingState.HELD:
            return self._result_for(Status.REJECTED, Reason.NOT_HELD, b_id)
        b.state = BookingState.BOOKED
        b.changed_at = now
        self._sessions[b.session].slot_states[b.slot_no - 1] = SlotState.BOOKED
        return self._result_for(Status.BOOKED, Reason.NONE, b_id)

    def cancel(self, booking: int, account: int, now: int) -> Result:
        """Cancel a live booking before the cut-off and free its slot.  O(1)."""
        b = self._booking(booking)
        a = self._check_account(account)
        now = self._check_now(now)
        self._run_timers(now)
        b_id = _id(booking, "booking")
        if b.account != a:
            return self._result_for(Status.REJECTED, Reason.NOT_OWNER, b_id)
        if b.state not in _LIVE:
            return self._result_for(Status.REJECTED, Reason.NOT_ACTIVE, b_id)
        s = self._sessions[b.session]
        if b.state == BookingState.BOOKED and now >= s.cancel_cutoff_at:
            return self._result_for(Status.REJECTED, Reason.CANCEL_CUTOFF, b_id)
        was_booked = b.state == BookingState.BOOKED
        b.state = BookingState.CANCELLED
        b.changed_at = now
        b.end_reason = Reason.NONE
        self._free_slot(b_id)
        if was_booked:
            self._record_cancel(b.patient, now, b.session, b_id)
        s.last_cancel_at, s.last_cancel_account = now, a
        pol = self._policy
        if pol.cancel_flag_count > 0:
            acc = self._accounts[a]
            acc.cancels.append(now)
            del acc.cancels[:-pol.cancel_flag_count]
            if (sum(1 for t in acc.cancels if t > now - pol.cancel_flag_window_ms)
                    >= pol.cancel_flag_count):
                acc.cancels.clear()
                self._auto_flag(a, FlagReason.CANCELLATIONS, now)
        return self._result_for(Status.CANCELLED, Reason.NONE, b_id)

    def cancel_ticket(self, ticket: int, account: int, now: int) -> Result:
        """Withdraw a QUEUED ticket of this account.  O(1)."""
        t = self._ticket(ticket)
        k = _id(ticket, "ticket")
        a = self._check_account(account)
        now = self._check_now(now)
        self._run_timers(now)
        if t.account != a:
            return Result(Status.REJECTED, Reason.NOT_OWNER, session=t.session, ticket=k)
        if t.state != TicketState.QUEUED:
            return Result(Status.REJECTED, Reason.NOT_ACTIVE, session=t.session, ticket=k)
        t.state = TicketState.CANCELLED
        self._patients[t.patient].queued.discard(k)
        return Result(Status.CANCELLED, Reason.NONE, session=t.session, ticket=k)

    # -- flags and blocks ------------------------------------------------------------

    def _until(self, until: object, name: str = "until") -> int:
        return _time(_int(until, name), name)

    def flag(self, kind: int, key: int, reason: int, until: int, now: int) -> None:
        """Host flag (HOST or BLACKLIST) of an account (kind 0) or patient (1) until ``until``."""
        kind, key = self._kind_key(kind, key)
        r = _int(reason, "reason")
        if r not in (FlagReason.HOST, FlagReason.BLACKLIST):
            raise InvalidArgument(f"reason={r} must be HOST or BLACKLIST")
        u = self._until(until)
        now = self._check_now(now)
        if u <= now:
            raise InvalidArgument("until must be later than now")
        self._run_timers(now)
        self._flag(kind, key, r, u, now)

    def unflag(self, kind: int, key: int, now: int) -> bool:
        """End a live flag now; False if the key was not flagged."""
        kind, key = self._kind_key(kind, key)
        now = self._check_now(now)
        self._run_timers(now)
        obj: Any = self._accounts[key] if kind == 0 else self._patients[key]
        if not now < obj.flag_until:
            return False
        obj.flag_until = now
        self._flag_log.append((now, kind, key, 0, now))
        self._party_event(EventKind.UNFLAGGED, now, kind, key, -1)
        return True

    def block(self, kind: int, key: int, until: int, now: int) -> None:
        """Refuse the key's requests (BLOCKED) until ``until`` (never shortens a block)."""
        kind, key = self._kind_key(kind, key)
        u = self._until(until)
        now = self._check_now(now)
        if u <= now:
            raise InvalidArgument("until must be later than now")
        self._run_timers(now)
        obj: Any = self._accounts[key] if kind == 0 else self._patients[key]
        obj.blocked_until = max(obj.blocked_until, u)
        self._flag_log.append((now, kind, key, -1, u))
        self._party_event(EventKind.BLOCKED, now, kind, key, -1)

    def unblock(self, kind: int, key: int, now: int) -> bool:
        """Lift a live block; False if there was none."""
        kind, key = self._kind_key(kind, key)
        now = self._check_now(now)
        self._run_timers(now)
        obj: Any = self._accounts[key] if kind == 0 else self._patients[key]
        if not now < obj.blocked_until:
            return False
        obj.blocked_until = 0
        self._party_event(EventKind.UNBLOCKED, now, kind, key, -1)
        return True

    def import_blacklist(self, kinds: Any, keys: Any, untils: Any, now: int) -> None:
        """Flag every row with BLACKLIST, in order (all rows validated first)."""
        cols = []
        for col, name in ((kinds, "kinds"), (keys, "keys"), (untils, "untils")):
            if isinstance(col, (str, bytes)) or not hasattr(col, "__len__"):
                raise InvalidType(f"{name} must be a sequence of ints")
            cols.append(list(col))
        if not len(cols[0]) == len(cols[1]) == len(cols[2]):
            raise InvalidArgument("import_blacklist columns must have equal lengths")
        rows = []
        for kind, key, until in zip(*cols):
            k, key_id = self._kind_key(kind, key)
            rows.append((k, key_id, self._until(until)))
        now = self._check_now(now)
        if any(u <= now for _, _, u in rows):
            raise InvalidArgument("every until must be later than now")
        self._run_timers(now)
        for k, key_id, u in rows:
            self._flag(k, key_id, FlagReason.BLACKLIST, u, now)

    def check_in(self, booking: int, now: int) -> Result:
        """BOOKED -> ARRIVED; the patient becomes known at the hospital.  O(1)."""
        b = self._booking(booking)
        now = self._check_now(now)
        self._run_timers(now)
        b_id = _id(booking, "booking")
        if b.state == BookingState.HELD:
            return self._result_for(Status.REJECTED, Reason.NOT_CONFIRMED, b_id)
        if b.state != BookingState.BOOKED:
            return self._result_for(Status.REJECTED, Reason.NOT_ACTIVE, b_id)
        s = self._sessions[b.session]
        b.state = BookingState.ARRIVED
        b.changed_at = now
        s.slot_states[b.slot_no - 1] = SlotState.ARRIVED
        self._patients[b.patient].live.discard(b_id)
        self._known.add((b.patient, s.hospital))
        return self._result_for(Status.ARRIVED, Reason.NONE, b_id)

    def add_capacity(self, session: int, n: int, channel: int, now: int) -> int:
        """Append ``n`` FREE slots; their quota goes to ``channel`` (public once rolled)."""
        s = self._session(session)
        s_id = _id(session, "session")
        n = _int(n, "n")
        if not 1 <= n <= _MAX_ADD or s.capacity + n > _MAX_CAPACITY:
            raise InvalidArgument(f"n={n}: need 1..{_MAX_ADD} and capacity <= {_MAX_CAPACITY}")
        c = self._check_channel(channel)
        now = self._check_now(now)
        if s.suspended or s.closed or now >= s.end_at:
            raise InvalidState("cannot add capacity to a suspended or closed session")
        self._run_timers(now)
        first = s.capacity
        s.slot_states.extend([SlotState.FREE] * n)
        s.slot_bookings.extend([-1] * n)
        for k in range(first, first + n):
            heapq.heappush(s.free_heap, k)
        q = self._policy.public_channel if s.rolled else c
        s.quota_left[q] += n
        self._event(EventKind.CAPACITY_ADDED, now, s_id, -1, -1, -1, n)
        return s.capacity

    def suspend(self, session: int, now: int) -> int:
        """Stop a session: cancel its live bookings, cancel its open slots; returns the count."""
        s = self._session(session)
        s_id = _id(session, "session")
        now = self._check_now(now)
        self._run_timers(now)
        if s.suspended:
            return 0
        affected = 0
        for k in range(s.capacity):
            b_id = s.slot_bookings[k]
            if b_id < 0:
                continue
            b = self._bookings[b_id]
            if b.state in _LIVE:
                b.state = BookingState.CANCELLED
                b.changed_at = now
                b.end_reason = Reason.SESSION_SUSPENDED
                self._patients[b.patient].live.discard(b_id)
                self._event(EventKind.BOOKING_CANCELLED, now, s_id, b_id, b.patient, b.account,
                            int(Reason.SESSION_SUSPENDED))
                affected += 1
        for k in range(s.capacity):
            if s.slot_states[k] not in (SlotState.ARRIVED, SlotState.NO_SHOW):
                s.slot_states[k] = SlotState.CANCELLED
                s.slot_bookings[k] = -1
        s.free_heap.clear()
        s.quota_left = [0] * len(s.quota_left)
        s.suspended = True
        self._event(EventKind.SESSION_SUSPENDED, now, s_id, -1, -1, -1, affected)
        return affected

    def block_slot(self, session: int, slot_no: int, now: int) -> bool:
        """FREE -> BLOCKED (True), else nothing (False).  Quotas are not touched."""
        return self._flip(session, slot_no, now, SlotState.FREE, SlotState.BLOCKED)

    def unblock_slot(self, session: int, slot_no: int, now: int) -> bool:
        """BLOCKED -> FREE (True), else nothing (False).  Quotas are not touched."""
        return self._flip(session, slot_no, now, SlotState.BLOCKED, SlotState.FREE)

    def _flip(self, session: int, slot_no: int, now: int, old: SlotState, new: SlotState) -> bool:
        s = self._session(session)
        k = _int(slot_no, "slot_no")
        if not 1 <= k <= s.capacity:
            raise InvalidArgument(f"slot_no={k} is outside 1..{s.capacity}")
        now = self._check_now(now)
        self._run_timers(now)
        if s.slot_states[k - 1] != old:
            return False
        s.slot_states[k - 1] = new
        if new == SlotState.FREE:
            heapq.heappush(s.free_heap, k - 1)
        return True

    def mark_known(self, patient: int, hospital: int, now: int) -> None:
        """``(patient, hospital)`` becomes known (a registered, returning patient)."""
        p = _id(patient, "patient")
        self._patient(p)
        h = _int(hospital, "hospital")
        if not 0 <= h <= _MAX_LABEL:
            raise InvalidArgument(f"hospital={h} is outside 0..{_MAX_LABEL}")
        now = self._check_now(now)
        self._run_timers(now)
        self._known.add((p, h))

    # -- self-check ----------------------------------------------------------------

    def _check_invariants(self) -> None:
        """Raise AssertionError if any invariant of docs/semantics.md is broken."""
        pub = self._policy.public_channel
        on_slot: dict[int, tuple[int, int]] = {}
        for s_id, s in enumerate(self._sessions):
            assert len(s.slot_bookings) == s.capacity
            assert len(s.quota_left) == self._policy.n_channels
            assert all(q >= 0 for q in s.quota_left), "negative quota"
            counts = [0] * len(SlotState)
            for k, (st, b_id) in enumerate(zip(s.slot_states, s.slot_bookings)):
                counts[st] += 1
                if st in (SlotState.HELD, SlotState.BOOKED, SlotState.ARRIVED, SlotState.NO_SHOW):
                    assert 0 <= b_id < len(self._bookings), f"slot {s_id}/{k + 1} has no booking"
                    assert b_id not in on_slot, f"booking {b_id} on two slots"
                    on_slot[b_id] = (s_id, k + 1)
                    b = self._bookings[b_id]
                    assert (b.session, b.slot_no) == (s_id, k + 1), "slot/booking disagree"
                    assert _SLOT_OF.get(b.state) == st, "slot state != booking state"
                else:
                    assert b_id == -1, f"slot {s_id}/{k + 1} in state {st} keeps booking {b_id}"
            assert sum(counts) == s.capacity
            free, blocked = counts[SlotState.FREE], counts[SlotState.BLOCKED]
            # Every change moves a FREE/BLOCKED slot and one unit of quota together.
            assert sum(s.quota_left) == free + blocked, "quota does not match open slots"
            if s.suspended:
                assert free == 0 and sum(s.quota_left) == 0
            if s.rolled:  # rolled quota and everything returned later sits in public
                assert all(q == 0 for c, q in enumerate(s.quota_left) if c != pub)
        for b_id, b in enumerate(self._bookings):
            if b.state in _SLOT_OF:
                assert on_slot.get(b_id) == (b.session, b.slot_no), f"booking {b_id} lost its slot"
        for p_id, p in enumerate(self._patients):
            want = {b for b in p.bookings if self._bookings[b].state in _LIVE}
            assert p.live == want, f"patient {p_id} live set {p.live} != {want}"
            created = [self._bookings[b].created_at for b in p.bookings]
            assert created == sorted(created), "bookings out of creation order"
            assert len(p.strikes) <= len(self._ban_ms)
            assert len(p.cancels) <= max(self._policy.cancel_strikes, 0)
        for due, seq, kind, ident in self._timers:
            assert 0 <= seq < self._seq and 1 <= kind <= 6
        self._check_fair_invariants()

    def _check_fair_invariants(self) -> None:
        pol = self._policy
        drains = [ident for _, _, kind, ident in self._timers if kind == TIMER_DRAIN]
        closes = {(due, ident) for due, _, kind, ident in self._timers
                  if kind == TIMER_COHORT_CLOSE}
        slow_timers = {ident for _, _, kind, ident in self._timers if kind == TIMER_SLOW_SERVE}
        placed: dict[int, int] = {}
        for s_id, s in enumerate(self._sessions):
            assert len(set(drains)) == len(drains), "two DRAIN timers for one session"
            assert s.drain_pending == (s_id in drains), f"session {s_id} drain flag is off"
            rest = s.queue[s.head:]
            if pol.outflow_gap_ms == 0:
                assert not rest, "a drain queue outlived a zero-gap drain"
            elif rest:
                assert s.drain_pending, f"session {s_id} has a queue but no DRAIN timer"
            if s.collecting:
                assert s.fair or s.slow
                assert (s.cohort_close, s_id) in closes, "collecting without COHORT_CLOSE"
            else:
                assert not s.fair and not s.slow
            for lst, where, lane in ((s.fair, _IN_COHORT, LANE_FAIR),
                                     (s.slow, _IN_COHORT, LANE_SLOW), (rest, _IN_QUEUE, None)):
                for k in lst:
                    t = self._tickets[k]
                    assert k not in placed, f"ticket {k} queued twice"
                    placed[k] = s_id
                    assert t.session == s_id
                    if lane is not None:
                        assert t.lane == lane and t.draw == -1
                    if t.state == TicketState.QUEUED:
                        assert t.where == where, f"ticket {k} is not where it says"
            assert s.last_cancel_account < len(self._accounts)
        for p_id, p in enumerate(self._patients):
            want = {k for k, t in enumerate(self._tickets)
                    if t.patient == p_id and t.state == TicketState.QUEUED}
            assert p.queued == want, f"patient {p_id} queued set {p.queued} != {want}"
            sessions = [self._tickets[k].session for k in p.queued]
            assert len(sessions) == len(set(sessions)), "two queued tickets in one session"
        for k, t in enumerate(self._tickets):
            if t.state == TicketState.QUEUED:
                assert t.served_at == -1 and t.booking == -1
                if t.where == _IN_SLOW:
                    assert k in slow_timers and k not in placed and t.lane == LANE_SLOW
                else:
                    assert k in placed, f"queued ticket {k} is nowhere"
            elif t.state == TicketState.SERVED:
                b = self._bookings[t.booking]
                assert (b.session, b.patient, b.account) == (t.session, t.patient, t.account)
                assert b.created_at == t.served_at >= t.submitted_at
            elif t.state == TicketState.FAILED:
                assert t.reason != Reason.NONE and t.booking == -1
                assert t.served_at >= t.submitted_at
            else:
                assert t.state == TicketState.CANCELLED and t.booking == -1
            assert (t.draw == -1) == (t.cohort_size == 0)
            assert -1 <= t.draw < max(t.cohort_size, 1)
        for a_id, acc in enumerate(self._accounts):
            assert len(acc.early) <= max(pol.early_count, 0)
            assert len(acc.cancels) <= max(pol.cancel_flag_count, 0)
            created = [self._bookings[b].created_at for b in acc.bookings]
            assert created == sorted(created)
            assert acc.flag_reason in (0, *FlagReason)
        for p in self._patients:
            assert p.flag_reason in (0, *FlagReason)
