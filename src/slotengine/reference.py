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
         'slot_bookings': [int] * capacity}, # booking id on a HELD/BOOKED/ARRIVED/
      ...],                                  # NO_SHOW slot, else -1
      'bookings': [booking_info(b) for b in range(n_bookings)],
      'patients': [patient_info(p) for p in range(n_patients)],
      'known':  sorted list of (patient, hospital) tuples,
      'timers': sorted list of (due, seq, kind, id) tuples, stale ones included;
                kind: 1 HOLD_EXPIRE (id = booking), 2 ROLLOVER (id = session),
                3 SESSION_END (id = session),
      'events': [(kind, at, session, booking, patient, detail), ...]  # not drained
    }

where ``booking_info(b)`` is the tuple ``(session, slot_no, patient, account,
channel, quota, state, created_at, changed_at, hold_until, end_reason)`` and
``patient_info(p)`` is ``(banned_until, tuple(strikes), tuple(cancels))``.

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
)
from .outcomes import BookingState, EventKind, Reason, SlotState, Status
from .policy import CorePolicy
from .times import MAX_MS

__all__ = ["Core", "Result", "TIMER_HOLD_EXPIRE", "TIMER_ROLLOVER", "TIMER_SESSION_END"]

#: Timer kinds as they appear in ``dump()['timers']``.
TIMER_HOLD_EXPIRE = 1
TIMER_ROLLOVER = 2
TIMER_SESSION_END = 3

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

    __slots__ = ("status", "reason", "slot", "booking", "window", "session", "ticket")

    def __init__(self, status: Status, reason: Reason = Reason.NONE, slot: int | None = None,
                 booking: int | None = None, window: tuple[int, int] | None = None,
                 session: int | None = None) -> None:
        self.status = status
        self.reason = reason
        self.slot = slot
        self.booking = booking
        self.window = window
        self.session = session
        self.ticket = None  # fair release (a later issue) hands out tickets

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
        for name in ("session", "slot", "booking", "window"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
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
        >>> c.add_session(0, 0, 0, 0, 100, 200, 50, 40, 10, 2, 0, [2, 0, 0, 0, 0, 0], [0] * 6, 0)
        0
        >>> c.book(0, 0, 0, 0, 10, False)
        Result(status=BOOKED, session=0, slot=1, booking=0, window=(100, 110))
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
        self._account_bookings: list[list[int]] = []  # per account, oldest first
        self._known: set[tuple[int, int]] = set()
        self._events: list[tuple[int, int, int, int, int, int]] = []

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
        return len(self._account_bookings)

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
            })
        return {
            "now": self._now,
            "rng": self._rng,
            "seq": self._seq,
            "sessions": sessions,
            "bookings": [b.info() for b in self._bookings],
            "patients": [self.patient_info(p) for p in range(len(self._patients))],
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
        }

    def rng_next(self) -> int:
        """Advance the splitmix64 generator and return its next 64-bit output."""
        self._rng = (self._rng + 0x9E3779B97F4A7C15) & _MASK64
        z = self._rng
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def drain_events(self) -> list[tuple[int, int, int, int, int, int]]:
        """Events since the last drain, as ``(kind, at, session, booking, patient, detail)``."""
        out, self._events = self._events, []
        return out

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
        while len(self._account_bookings) < n:
            self._account_bookings.append([])

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
        if not 0 <= a < len(self._account_bookings):
            raise UnknownAccount(f"unknown account {a}")
        return a

    def _check_channel(self, channel: object) -> int:
        c = _id(channel, "channel")
        if not 0 <= c < self._policy.n_channels:
            raise UnknownChannel(f"unknown channel {c}")
        return c

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
            else:
                self._session_end(ident, due)
        self._now = now

    def _expire(self, b_id: int, at: int) -> None:
        b = self._bookings[b_id]
        b.state = BookingState.EXPIRED
        b.changed_at = at
        self._free_slot(b_id)
        self._event(EventKind.HOLD_EXPIRED, at, b.session, b_id, b.patient, -1)

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
            self._event(EventKind.QUOTA_ROLLED, at, s_id, -1, -1, moved)

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
                self._event(EventKind.NO_SHOW, at, s_id, b_id, b.patient, -1)
                self._strike(b.patient, at, s_id, b_id)
            elif b.state == BookingState.HELD:
                self._expire(b_id, at)

    # -- shared steps --------------------------------------------------------------

    def _event(self, kind: EventKind, at: int, session: int, booking: int, patient: int,
               detail: int) -> None:
        self._events.append((int(kind), at, session, booking, patient, detail))

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
        self._event(EventKind.PATIENT_BANNED, t, session, booking, patient, n)

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
        pol = self._policy
        s = self._sessions[s_id]
        p = self._patients[p_id]
        pub = pol.public_channel

        def reject(reason: Reason) -> Result:
            return Result(Status.REJECTED, reason, session=s_id)

        # 1. request stage
        if s.suspended:
            return reject(Reason.SESSION_SUSPENDED)
        if s.closed or now >= s.end_at:
            return reject(Reason.SESSION_CLOSED)
        if now < s.release[c] and now < s.release[pub]:
            return reject(Reason.NOT_RELEASED)
        # 2. eligibility stage
        if now < p.banned_until:
            return reject(Reason.PATIENT_BANNED)
        live = [self._bookings[b] for b in p.live]
        if any(b.session == s_id for b in live):
            return reject(Reason.DUPLICATE_SESSION)
        if pol.one_per_department_day:
            for b in live:
                other = self._sessions[b.session]
                if other.department == s.department and other.day == s.day:
                    return reject(Reason.DUPLICATE_DEPARTMENT_DAY)
        for count, window_ms in self._limits:
            n = sum(1 for b in self._created_since(p.bookings, now - window_ms)
                    if b.state in _COUNTED)
            if n >= count:
                return reject(Reason.PATIENT_LIMIT)
        if pol.account_patients > 0:
            recent = {b.patient for b in self._created_since(self._account_bookings[a],
                                                             now - pol.account_window_ms)}
            if p_id not in recent and len(recent) >= pol.account_patients:
                return reject(Reason.ACCOUNT_PATIENT_LIMIT)
        if pol.bar_first_visit_expert and s.tier == 2 and (p_id, s.hospital) not in self._known:
            return reject(Reason.FIRST_VISIT_EXPERT)
        # 3. allocate stage
        k = self._lowest_free(s)
        if k < 0:
            return reject(Reason.FULL)
        if now >= s.release[c] and s.quota_left[c] > 0:
            q = c
        elif now >= s.release[pub] and s.quota_left[pub] > 0:
            q = pub
        else:
            return reject(Reason.QUOTA_EXHAUSTED)
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
        self._account_bookings[a].append(b_id)
        if hold:
            self._push(hold_until, TIMER_HOLD_EXPIRE, b_id)
        status = Status.HELD if hold else Status.BOOKED
        return Result(status, Reason.NONE, k + 1, b_id, s.window(k + 1), s_id)

    def book_many(self, accounts: Any, patients: Any, sessions: Any, channels: Any, nows: Any,
                  hold: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``book`` row by row after validating every row; returns (status, reason, slot, booking)."""
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
        hold = bool(hold)
        for i in range(n):
            self._run_timers(times[i])
            r = self._book(acc[i], pat[i], ses[i], chan[i], times[i], hold)
            status[i], reason[i], slot[i], booking[i] = r.as_tuple()
        return status, reason, slot, booking

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
        return self._result_for(Status.CANCELLED, Reason.NONE, b_id)

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
        self._event(EventKind.CAPACITY_ADDED, now, s_id, -1, -1, n)
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
                self._event(EventKind.BOOKING_CANCELLED, now, s_id, b_id, b.patient,
                            int(Reason.SESSION_SUSPENDED))
                affected += 1
        for k in range(s.capacity):
            if s.slot_states[k] not in (SlotState.ARRIVED, SlotState.NO_SHOW):
                s.slot_states[k] = SlotState.CANCELLED
                s.slot_bookings[k] = -1
        s.free_heap.clear()
        s.quota_left = [0] * len(s.quota_left)
        s.suspended = True
        self._event(EventKind.SESSION_SUSPENDED, now, s_id, -1, -1, affected)
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
            assert 0 <= seq < self._seq and kind in (1, 2, 3)
