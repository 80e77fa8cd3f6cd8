"""Engine: the public facade over one backend (compiled core or reference).

The facade interns string ids to dense ints, validates and converts Python
input (types, aware datetimes, quota mappings), and hands every command to the
backend, which decides.  Results come back from the backend unchanged, so the
per-call path costs one Python frame, a few dict look-ups and one call.

Every command validates all of its input *before* it touches any state,
including the intern tables: a call that raises leaves the engine exactly as
it was.  The engine is single-writer and not thread-safe: serialize calls
(or use slotengine.threadsafe).

``Engine.open(directory)`` makes it durable (docs/durability.md): the core
journals each command's inputs; what the facade itself remembers (names,
session metadata, flag notes) rides in the same record as a *note*, so a
record is one atomic step of both.  A host call that takes several records
(a booking that registers a new patient) is safe to cut after any of them.
"""
from __future__ import annotations

import gc
import pickle
from dataclasses import dataclass
from datetime import timedelta, timezone
from types import MappingProxyType
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from . import reference
from ._state import state_hash as _hash_dump
from .credit import Credit
from .errors import (
    DuplicateId,
    InvalidArgument,
    InvalidType,
    JournalError,
    SnapshotError,
    TimeWentBackwards,
    UnknownAccount,
    UnknownBooking,
    UnknownChannel,
    UnknownPatient,
    UnknownRequest,
    UnknownSession,
    UnknownTicket,
)
from .outcomes import (
    BookingState,
    EventKind,
    FlagReason,
    Reason,
    RequestState,
    Status,
    Tier,
    TicketState,
)
from .policy import Policy
from .times import DAY, MAX_MS, MINUTE, from_ms, to_ms

__all__ = ["Engine", "Event", "BookingInfo", "SessionInfo", "SlotCounts", "BatchResult",
           "TicketInfo", "TicketPosition", "RiskInfo", "FlagRecord", "WaitlistInfo"]
_KINDS = {"account": 0, "patient": 1}
_EVENT_KINDS = {int(k): k for k in EventKind}
_REASONS = {int(r): r for r in Reason}
# the same as lists indexed by code (None for no member), for Core.drain_events_list
_EVENT_KIND_LIST = [_EVENT_KINDS.get(i) for i in range(max(_EVENT_KINDS) + 1)]
_REASON_LIST = [_REASONS.get(i) for i in range(max(_REASONS) + 1)]
_MOVED = "moved"  # the priority of requests made for bookings of a suspended session
_HOST_REASONS = {"host": FlagReason.HOST, "blacklist": FlagReason.BLACKLIST}

_BACKENDS = ("core", "reference")

# Notes: the facade's part of a journal record (docs/durability.md).
_NOTE_NAMES = 0x4E     # b"N" + table letter + names joined by NUL (names are printable)
_NOTE_SESSION = 0x53   # b"S" + pickle of add_session's facade fields
_NOTE_FLAG = 0x46      # b"F" + pickle of (at, kind, key, host note)
_TABLE_LETTERS = {"account": b"a", "patient": b"p", "hospital": b"h"}
_FACADE_FORMAT = 2  # 2: name tables as NUL-joined strings


def _nothing() -> None:
    pass


def _backend_class(name: str) -> type:
    """The backend's Core class; the compiled one is imported only when asked for."""
    if name == "reference":
        return reference.Core
    from . import _core

    return _core.Core
_TIERS = {t.name.lower(): int(t) for t in Tier}
_MAX_ID_LEN = 256
_MAX_MS = MAX_MS
_MAX_FEE = 10**12


class SlotCounts(NamedTuple):
    """A session's slots by state."""

    free: int
    held: int
    booked: int
    arrived: int
    no_show: int
    cancelled: int
    blocked: int
    returning: int  # freed, hidden from open booking until its re-release


class BatchResult(NamedTuple):
    """Outcome arrays of ``book_many``: row i is what ``book`` would have returned."""

    status: np.ndarray  # int8, Status codes
    reason: np.ndarray  # int16, Reason codes
    slot: np.ndarray  # int32, slot number, 0 when none
    booking: np.ndarray  # int64, booking id, -1 when none
    ticket: np.ndarray  # int64, ticket id when QUEUED, else -1
    retry_after: np.ndarray  # int64, ms to wait when THROTTLED, else 0


class Event(NamedTuple):
    """Something the host may need to tell a patient about.

    A NamedTuple, not a dataclass: a rush produces millions of these and a
    tuple is built several times faster (``events_array()`` skips them all).
    """

    kind: EventKind
    at: int
    session: str | None
    booking: int | None
    patient: str | None
    account: str | None
    detail: int
    slot: int | None  # the booking's slot number (or the re-released slot)
    reason: Reason  # why (a skip, a failed ticket, a suspension); NONE otherwise


@dataclass(frozen=True, slots=True)
class TicketInfo:
    """A queued request: where it came from, its lottery draw and how it ended."""

    id: int
    session: str
    patient: str
    account: str
    channel: str
    hold: bool
    lane: str  # "fair" or "slow"
    submitted_at: int
    state: TicketState
    draw: int | None  # 0-based rank in its cohort's lottery
    cohort_size: int
    served_at: int | None
    booking: int | None
    reason: Reason


@dataclass(frozen=True, slots=True)
class TicketPosition:
    """Where a ticket stands: ``ahead`` only ever goes down."""

    state: TicketState
    ahead: int | None  # None while its cohort is still collecting or once it left the queue
    draw: int | None
    cohort_size: int
    estimate_ms: int | None  # engine-time estimate until it is served


@dataclass(frozen=True, slots=True)
class RiskInfo:
    """An account's or patient's standing: flag (slow lane) and block."""

    flagged_until: int
    flag_reason: FlagReason | None
    flag_source: str | None  # "host" or "rule"
    flagged_since: int
    blocked_until: int


@dataclass(frozen=True, slots=True)
class FlagRecord:
    """One line of the audit log of flags, unflags and blocks."""

    at: int
    kind: str  # "account" or "patient"
    key: str
    action: str  # "flag", "unflag" or "block"
    reason: FlagReason | None
    until: int
    note: str | None


@dataclass(frozen=True, slots=True)
class BookingInfo:
    id: int
    session: str
    slot: int
    window: tuple[int, int]
    patient: str
    account: str
    channel: str
    quota: str
    state: BookingState
    created_at: int
    changed_at: int
    hold_until: int
    end_reason: Reason
    request: int | None  # the waitlist request it filled, if any
    held_balance: int = 0  # fen of its fee held on the prepaid balance (Policy.require_cover)
    held_credit: int = 0  # ... and on the credit line
    charged: int | None = None  # fen charged at check-in or by credit.settle, None until then


@dataclass(frozen=True, slots=True)
class WaitlistInfo:
    """A waitlist request (候补): where it waits, and how it ended."""

    id: int
    account: str
    patient: str
    channel: str
    priority: str  # a Policy.waitlist_classes name, or "moved" (off a suspended session)
    state: RequestState
    sessions: tuple[str, ...]  # candidates, in the order given
    created_at: int
    deadline: int
    changed_at: int
    booking: int | None  # once FILLED
    session: str | None  # the candidate it was filled in
    skip_reason: Reason  # why a fill last passed it over (NONE if never)
    held: int = 0  # fen held for it while OPEN (its largest candidate fee, with require_cover)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    hospital: str
    department: str
    doctor: str
    tier: str
    starts_at: int
    ends_at: int
    slot_minutes: int
    capacity: int
    fee: int
    release: Mapping[str, int]
    quota_left: Mapping[str, int]
    cancel_cutoff_at: int
    rollover_at: int
    rolled: bool
    suspended: bool
    closed: bool


@dataclass(frozen=True, slots=True)
class _Meta:
    """What the facade remembers of a session (the backend holds the rest)."""

    name: str
    hospital: str
    department: str
    doctor: str
    tier: str
    starts_at: int
    ends_at: int
    slot_minutes: int
    fee: int
    release: Mapping[str, int]
    cancel_cutoff_at: int
    rollover_at: int


class _Names:
    """A string id <-> dense int table.  O(1) both ways."""

    __slots__ = ("ids", "names", "kind")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.ids: dict[str, int] = {}
        self.names: list[str] = []

    def check(self, name: object) -> str:
        if type(name) is not str and not isinstance(name, str):
            raise InvalidType(f"{self.kind} id must be a str, not {type(name).__name__}")
        if not name.strip():
            raise InvalidArgument(f"{self.kind} id must be a non-empty string")
        if len(name) > _MAX_ID_LEN:
            raise InvalidArgument(f"{self.kind} id longer than {_MAX_ID_LEN} characters")
        if not name.isprintable():
            raise InvalidArgument(f"{self.kind} id {name!r} contains control characters")
        return str(name)

    def intern(self, name: str) -> int:
        """Id of an already-checked name, creating it if new."""
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.names)
            self.names.append(name)
        return i

    def extend(self, names: list[str]) -> None:
        """Intern already-checked names that are all new and distinct (one bulk step)."""
        start = len(self.names)
        self.names.extend(names)
        self.ids.update(zip(names, range(start, start + len(names))))


class Engine:
    """Slot allocation engine for one platform: sessions, bookings, rules.

    Example::

        >>> import slotengine as se
        >>> e = se.Engine(seed=7)
        >>> e.add_session("S1", hospital="H1", department="Cardiology", doctor="Dr Li",
        ...               starts_at=1_800_000_000_000, capacity=2, fee=6000,
        ...               release={"app": 0})
        >>> r = e.book("A1", "P1", "S1", now=1_700_000_000_000)
        >>> r.status, r.slot
        (<Status.BOOKED: 1>, 1)

    ``backend="reference"`` runs the plain-Python model of the same semantics
    (the test oracle and benchmark baseline) behind the same API.
    """

    def __init__(self, policy: Policy | None = None, seed: int = 0, *, backend: str = "core") -> None:
        if policy is None:
            policy = Policy()
        if not isinstance(policy, Policy):
            raise InvalidType(f"policy must be a slotengine.Policy, not {type(policy).__name__}")
        if type(seed) is not int:
            raise InvalidType(f"seed must be an int, not {type(seed).__name__}")
        if not 0 <= seed < 2**64:
            raise InvalidArgument("seed must be in 0 .. 2**64-1")
        if type(backend) is not str:
            raise InvalidType(f"backend must be a str, not {type(backend).__name__}")
        if backend not in _BACKENDS:
            raise InvalidArgument(f"backend must be one of {sorted(_BACKENDS)}, not {backend!r}")
        self.policy = policy
        self.seed = seed
        self.backend = backend
        self._core_policy = policy.compile()
        self._core = _backend_class(backend)(self._core_policy, seed)
        self._notes: dict[tuple[int, int, int], str] = {}  # host notes on flags, by (at, kind, key)
        self._tz = timezone(timedelta(minutes=policy.utc_offset_minutes))
        self._channels = {name: i for i, name in enumerate(policy.channels)}
        self._public = self._channels[policy.public_channel]
        self._accounts = _Names("account")
        self._patients = _Names("patient")
        self._sessions = _Names("session")
        self._hospitals = _Names("hospital")
        self._departments: dict[tuple[int, str], int] = {}
        self._doctors: dict[tuple[int, str], int] = {}  # (hospital, doctor) -> label
        self._classes = {name: i + 1 for i, name in enumerate(policy.waitlist_classes)}
        self._meta: list[_Meta] = []
        # The hot path reads the intern dicts directly (one attribute load each).
        self._session_ids = self._sessions.ids
        self._account_ids = self._accounts.ids
        self._patient_ids = self._patients.ids
        #: Prepaid balances and credit lines (先看病后付费): see slotengine.credit.
        self.credit = Credit(self)
        self._journal: Any = None  # slotengine.journal.Journal once Engine.open made it durable
        self._index_names: Any = _nothing  # the compiled core indexes bulk-interned names now
        if hasattr(self._core, "book_named"):
            # The compiled core looks the ids up itself (account and patient
            # names in its own index of the names lists) and calls back into the
            # checked slow path for anything else: no Python frame per booking.
            self._core.bind_names(self._account_ids, self._patient_ids, self._session_ids,
                                  self._channels, self._book_new_ids, self._cancel_checked,
                                  self._accounts.names, self._patients.names,
                                  self._sessions.names)
            self._index_names = self._core.index_names
            self.book = self._core.book_named  # type: ignore[method-assign]
            self.cancel = self._core.cancel_named  # type: ignore[method-assign]

    # -- clock ---------------------------------------------------------------

    @property
    def now(self) -> int:
        """The engine clock: the latest ``now`` any command carried (ms)."""
        return self._core.now

    def _time(self, value: object, name: str = "now") -> int:
        ms = to_ms(value, name)
        if ms < self._core.now:
            raise TimeWentBackwards(f"{name}={ms} is earlier than the engine clock {self._core.now}")
        return ms

    def _time_or_now(self, value: object) -> int:
        return self._core.now if value is None else self._time(value)

    # -- sessions ------------------------------------------------------------

    def add_session(
        self,
        session: str,
        *,
        hospital: str,
        department: str,
        doctor: str,
        tier: str = "general",
        starts_at: object,
        slot_minutes: int = 10,
        capacity: int,
        fee: int,
        quotas: Mapping[str, int] | None = None,
        release: Mapping[str, object] | None = None,
        now: object = None,
    ) -> None:
        """Add one clinic half-day with ``capacity`` numbered slots.

        ``quotas`` splits capacity among channels (default: all to the public
        channel) and must sum to ``capacity``.  ``release`` gives a channel's
        release time (default: ``Policy.release_lead_days`` before the
        session's local day, at ``Policy.release_minute_of_day``).  Slot k's
        suggested arrival window starts ``(k-1) * slot_minutes`` after
        ``starts_at``.  Money is integer fen.
        """
        name = self._sessions.check(session)
        if name in self._sessions.ids:
            raise DuplicateId(f"session {name!r} already exists")
        hosp = self._hospitals.check(hospital)
        dept = _Names("department").check(department)
        doc = _Names("doctor").check(doctor)
        if type(tier) is not str:
            raise InvalidType(f"tier must be a str, not {type(tier).__name__}")
        if tier not in _TIERS:
            raise InvalidArgument(f"tier must be one of {sorted(_TIERS)}, not {tier!r}")
        start = to_ms(starts_at, "starts_at")
        slot_minutes = _int(slot_minutes, "slot_minutes", 1, 24 * 60)
        capacity = _int(capacity, "capacity", 1, 65535)
        fee = _int(fee, "fee", 0, _MAX_FEE)
        when = self._time_or_now(now)
        pol = self.policy
        if quotas is None:
            quotas = {pol.public_channel: capacity}
        q = self._per_channel(quotas, "quotas")
        for ch, v in q.items():
            q[ch] = _int(v, f"quotas[{ch!r}]", 0, 65535)
        if sum(q.values()) != capacity:
            raise InvalidArgument(f"quotas sum to {sum(q.values())}, not capacity {capacity}")
        off = pol.utc_offset_minutes * MINUTE
        day = (start + off) // DAY
        day_start = day * DAY - off  # local midnight of the session's day, in UTC ms
        rel = {ch: day_start - pol.release_lead_days(ch) * DAY + pol.release_minute_of_day * MINUTE
               for ch in pol.channels}
        for ch, t in self._per_channel(release or {}, "release").items():
            rel[ch] = to_ms(t, f"release[{ch!r}]")
        rel = {ch: max(0, t) for ch, t in rel.items()}
        end = start + pol.session_minutes * MINUTE
        if end > MAX_MS:
            raise InvalidArgument("starts_at is too late")
        rollover = max(0, start - pol.rollover_minutes * MINUTE)
        cutoff = max(0, day_start - pol.cancel_cutoff_minutes * MINUTE)
        # All checked: the core runs the command, then the facade remembers it.
        h = self._hospitals.ids.get(hosp, len(self._hospitals.names))
        d = self._departments.get((h, dept), len(self._departments))
        dr = self._doctors.get((h, doc), len(self._doctors))
        chans = pol.channels
        meta = (name, hosp, dept, doc, tier, start, end, slot_minutes, fee, rel, cutoff,
                rollover)
        self._note(bytes([_NOTE_SESSION]) + pickle.dumps(meta, 4))
        try:
            self._core.add_session(
                h, d, _TIERS[tier], day, start, end, rollover, cutoff, slot_minutes * MINUTE,
                capacity, fee, [q.get(ch, 0) for ch in chans], [rel[ch] for ch in chans], when,
                dr,
            )
        except BaseException:
            self._note(None)
            raise
        self._add_session_meta(meta)

    def _add_session_meta(self, meta: tuple) -> None:
        """The facade's part of add_session (also replayed from a journal note)."""
        name, hosp, dept, doc, tier, start, end, slot_minutes, fee, rel, cutoff, rollover = meta
        h = self._hospitals.intern(hosp)
        self._departments.setdefault((h, dept), len(self._departments))
        self._doctors.setdefault((h, doc), len(self._doctors))
        self._sessions.intern(name)
        self._meta.append(_Meta(name, hosp, dept, doc, tier, start, end, slot_minutes, fee,
                                MappingProxyType(dict(rel)), cutoff, rollover))

    def _per_channel(self, mapping: object, what: str) -> dict[str, Any]:
        if not isinstance(mapping, Mapping):
            raise InvalidType(f"{what} must be a mapping of channel -> value")
        for ch in mapping:
            if ch not in self._channels:
                raise UnknownChannel(f"{what} names unknown channel {ch!r}")
        return dict(mapping)

    def _session(self, session: object) -> int:
        try:
            return self._sessions.ids[session]  # type: ignore[index]
        except (KeyError, TypeError):
            self._sessions.check(session)
            raise UnknownSession(f"unknown session {session!r}") from None

    def _channel(self, channel: object) -> int:
        if channel is None:
            return self._public
        try:
            return self._channels[channel]  # type: ignore[index]
        except (KeyError, TypeError):
            if not isinstance(channel, str):
                raise InvalidType(f"channel must be a str, not {type(channel).__name__}") from None
            raise UnknownChannel(f"unknown channel {channel!r}") from None

    def _known(self, table: _Names, name: object, err: type) -> int:
        try:
            return table.ids[name]  # type: ignore[index]
        except (KeyError, TypeError):
            table.check(name)
            raise err(f"unknown {table.kind} {name!r}") from None

    def _booking_id(self, booking: object) -> int:
        return _int_id(booking, "booking", self._core.n_bookings, UnknownBooking)

    # -- booking -------------------------------------------------------------

    def book(self, account: str, patient: str, session: str, channel: str | None = None,
             *, now: object, hold: bool = False) -> Any:
        """Book (or, with ``hold=True``, hold) the lowest free slot of ``session``.

        Returns a Result: ``status`` BOOKED or HELD with ``slot``, ``window``
        and ``booking``; or REJECTED with a ``reason``.  New account and
        patient ids are registered on first use.  O(live bookings of the
        patient + bookings in the largest limit window).
        """
        try:
            s = self._session_ids[session]
            c = self._public if channel is None else self._channels[channel]
            a = self._account_ids[account]
            p = self._patient_ids[patient]
        except (KeyError, TypeError):
            return self._book_new_ids(account, patient, session, channel, now, hold)
        if type(now) is not int or not 0 <= now <= _MAX_MS:
            now = to_ms(now)
        if hold is not False and hold is not True:
            raise InvalidType(f"hold must be a bool, not {type(hold).__name__}")
        return self._core.book(a, p, s, c, now, hold)

    def _book_new_ids(self, account: object, patient: object, session: object,
                      channel: object, now: object, hold: object) -> Any:
        # The slow path: check everything, then register new ids, then book.
        s = self._session(session)
        c = self._channel(channel)
        acc = self._accounts.check(account)
        pat = self._patients.check(patient)
        t = self._time(now)
        if hold is not False and hold is not True:
            raise InvalidType(f"hold must be a bool, not {type(hold).__name__}")
        self._reserve(acc, pat)
        a = self._register(self._accounts, acc)
        p = self._register(self._patients, pat)
        return self._core.book(a, p, s, c, t, hold)

    def _register(self, table: _Names, name: str) -> int:
        """The id of an account or patient, interning it (and giving the backend room) if new."""
        i = table.ids.get(name)
        if i is None:
            self._add_names(table, [name])
            i = len(table.names) - 1
        return i

    def _add_names(self, table: _Names, names: list[str]) -> None:
        """Intern new account or patient names: the backend grows first, in one journal record."""
        self._note(b"N" + _TABLE_LETTERS[table.kind] + "\0".join(names).encode())
        try:
            if table is self._patients:
                self._core.ensure_patients(len(table.names) + len(names))
            else:
                self._core.ensure_accounts(len(table.names) + len(names))
        except BaseException:
            self._note(None)
            raise
        table.extend(names)

    def _reserve(self, *names: str, extra: int = 0) -> None:
        """Make room in the journal for a host call of several records (new names, then
        the command) before the first, so a full disk fails the call before any change."""
        if self._journal is not None:
            self._core.journal_reserve(512 + extra + 4 * sum(len(x) + 16 for x in names))

    def _note(self, payload: bytes | None) -> None:
        """Attach the facade's part of the next journal record (no-op unless durable)."""
        if self._journal is not None:
            self._core.journal_note(payload)

    def _apply_note(self, payload: bytes) -> None:
        """Replay the facade's part of a journal record (Engine.open)."""
        kind = payload[0]
        if kind == _NOTE_NAMES:
            letter = payload[1:2]
            table = (self._accounts if letter == b"a" else
                     self._patients if letter == b"p" else self._hospitals)
            for name in payload[2:].decode().split("\0"):
                table.intern(name)
        elif kind == _NOTE_SESSION:
            self._add_session_meta(pickle.loads(payload[1:]))
        elif kind == _NOTE_FLAG:
            at, k, key, note = pickle.loads(payload[1:])
            self._notes[(at, k, key)] = note
        else:
            raise JournalError(f"journal note of unknown kind {kind}")

    def confirm(self, booking: int, *, account: str, now: object) -> Any:
        """Turn a held booking into a booked one (payment done).  O(1)."""
        b = self._booking_id(booking)
        a = self._known(self._accounts, account, UnknownAccount)
        return self._core.confirm(b, a, self._time(now))

    def cancel(self, booking: int, *, account: str, now: object) -> Any:
        """Cancel a booking and free its slot, before the cut-off.

        The freed slot goes to the session's waitlist in the same call (event
        WAITLIST_FILLED); if no waiting request may take it, it is hidden
        from open booking for ``Policy.rerelease_seconds`` (RETURNING).
        O(1) plus the waitlist requests passed over.
        """
        return self._cancel_checked(booking, account, now)

    def _cancel_checked(self, booking: object, account: object, now: object) -> Any:
        # On the compiled backend Engine.cancel is the core's cancel_named,
        # which comes back here for anything but an int id, a known account
        # and an int time.
        b = self._booking_id(booking)
        a = self._known(self._accounts, account, UnknownAccount)
        return self._core.cancel(b, a, self._time(now))

    def check_in(self, booking: int, *, now: object) -> Any:
        """Record the patient's arrival; the patient becomes known to the hospital.

        With ``Policy.settle_at == "check_in"`` the fee the booking holds is
        charged now (balance first, the rest billed to the credit line).  O(1).
        """
        b = self._booking_id(booking)
        return self._core.check_in(b, self._time(now))

    def book_many(self, accounts: Any, patients: Any, sessions: Any, channels: Any,
                  now: Any, *, hold: bool = False) -> BatchResult:
        """Book a whole arrival stream: row i is exactly ``book`` of row i, in order.

        Takes arrays of interned ids (see ``intern_accounts``, ``intern_patients``,
        ``session_ids``, ``channel_ids``) and ``now`` as one time or a
        non-decreasing int64 array of ms.  Everything is validated before the
        first row is booked.
        """
        acc = _ids_array(accounts, "accounts")
        n = len(acc)
        pat = _ids_array(patients, "patients", n)
        ses = _ids_array(sessions, "sessions", n)
        chan = _ids_array(channels, "channels", n)
        if isinstance(now, np.ndarray):
            if now.dtype.kind not in "iu":
                raise InvalidType("now must be an integer array of ms")
            nows = np.ascontiguousarray(now, dtype=np.int64)
            if nows.ndim != 1 or len(nows) != n:
                raise InvalidArgument("now must be one time or a 1-d array as long as the others")
            if n and (nows.min() < 0 or nows.max() > MAX_MS):
                raise InvalidArgument(f"now values must lie in 0..{MAX_MS}")
        else:
            nows = np.full(n, to_ms(now), dtype=np.int64)
        if hold is not False and hold is not True:
            raise InvalidType(f"hold must be a bool, not {type(hold).__name__}")
        return BatchResult(*self._core.book_many(acc, pat, ses, chan, nows, hold))

    def intern_accounts(self, names: Iterable[str]) -> np.ndarray:
        """Dense int ids for account names, registering new ones (for ``book_many``)."""
        return self._intern_many(self._accounts, names)

    def intern_patients(self, names: Iterable[str]) -> np.ndarray:
        """Dense int ids for patient names, registering new ones (for ``book_many``)."""
        return self._intern_many(self._patients, names)

    def _intern_many(self, table: _Names, names: Iterable[str]) -> np.ndarray:
        checked = _iter_names(names, table.kind)
        if not _all_plain_ids(checked):  # some name is odd: check one by one, for the message
            checked = [table.check(x) for x in checked]
        ids = table.ids
        unique = dict.fromkeys(checked)
        new = list(unique) if ids.keys().isdisjoint(unique) else [x for x in unique if x not in ids]
        if new:
            self._add_names(table, new)
            self._index_names()  # at once, not in the first booking after a bulk intern
        return np.fromiter(map(ids.__getitem__, checked), dtype=np.int32, count=len(checked))

    def sessions(self) -> list[str]:
        """Every session id, in the order the sessions were added (their dense ids)."""
        return list(self._sessions.names)

    def session_ids(self, names: Iterable[str]) -> np.ndarray:
        """Dense int ids of existing sessions."""
        return np.array([self._session(x) for x in _iter_names(names, "session")], dtype=np.int32)

    def channel_ids(self, names: Iterable[str]) -> np.ndarray:
        """Dense int ids of channels."""
        return np.array([self._channel(x) for x in _iter_names(names, "channel")], dtype=np.int32)

    # -- host commands -------------------------------------------------------

    def add_capacity(self, session: str, n: int, *, channel: str | None = None,
                     now: object = None) -> int:
        """加号: append ``n`` free slots to ``channel``'s quota; returns the new capacity."""
        s = self._session(session)
        c = self._channel(channel)
        n = _int(n, "n", 1, 10_000)
        return self._core.add_capacity(s, n, c, self._time_or_now(now))

    def suspend(self, session: str, *, now: object = None) -> int:
        """停诊: stop a session; returns how many live bookings left it.

        What happens to each booked patient is ``Policy.on_suspend``: moved to
        the nearest session of the same doctor (else department) with room
        (event BOOKING_MOVED), put on the waitlist of such sessions ahead of
        everyone (BOOKING_WAITLISTED), or cancelled (BOOKING_CANCELLED).  No
        patient is dropped without an event.
        """
        s = self._session(session)
        return self._core.suspend(s, self._time_or_now(now))

    def block_slot(self, session: str, slot: int, *, now: object = None) -> bool:
        """Withhold a free slot from booking; False if the slot was not free."""
        s = self._session(session)
        k = _int(slot, "slot", 1, 65535)
        return self._core.block_slot(s, k, self._time_or_now(now))

    def unblock_slot(self, session: str, slot: int, *, now: object = None) -> bool:
        """Return a blocked slot to booking; False if it was not blocked."""
        s = self._session(session)
        k = _int(slot, "slot", 1, 65535)
        return self._core.unblock_slot(s, k, self._time_or_now(now))

    def register_patient(self, patient: str, *, follow_up_at: Sequence[str] = (),
                         now: object = None) -> None:
        """Register a patient, known (follow-up, 复诊) at the given hospitals."""
        pat = self._patients.check(patient)
        if isinstance(follow_up_at, str) or not isinstance(follow_up_at, (list, tuple, set, frozenset)):
            raise InvalidType("follow_up_at must be a sequence of hospital ids")
        hospitals = [self._hospitals.check(h) for h in follow_up_at]
        if isinstance(follow_up_at, (set, frozenset)):
            hospitals.sort()  # set order varies per process: intern in a fixed order
        t = self._time_or_now(now)
        self._reserve(pat, *hospitals)
        p = self._register(self._patients, pat)
        for h in hospitals:
            k = self._hospitals.ids.get(h)
            if k is None:
                # a hospital with no session yet: its name rides with mark_known
                self._note(b"Nh" + h.encode())
                try:
                    self._core.mark_known(p, len(self._hospitals.names), t)
                except BaseException:
                    self._note(None)
                    raise
                self._hospitals.intern(h)
            else:
                self._core.mark_known(p, k, t)

    def advance(self, now: object, *, drain: bool = True) -> list[Event]:
        """Run everything time-driven up to ``now``; return the events since the last call.

        Hold expiry, quota roll-over and no-show marking also run at the start
        of every command, so outcomes never depend on how often this is
        called; ``advance`` is how the host collects the events.  With
        ``drain=False`` the events stay pending (for ``events_array()`` after a
        rush with millions of them) and the result is ``[]``.
        """
        if drain is not False and drain is not True:
            raise InvalidType(f"drain must be a bool, not {type(drain).__name__}")
        t = self._time(now)
        self._reserve()  # advance, then the drain of events(): two records
        self._core.advance(t)
        return self.events() if drain else []

    def events(self) -> list[Event]:
        """Drain the events produced since the last call (without moving the clock)."""
        # In C (compiled core), else column by column from the arrays: a rush
        # drains millions of events, and per-column list work is several times
        # cheaper than per-event Python.
        # The collector is paused while they are built: otherwise it walks the
        # whole heap again and again as the new tuples pile up (2x slower).
        paused = gc.isenabled()
        gc.disable()
        try:
            drain_list = getattr(self._core, "drain_events_list", None)
            if drain_list is not None:
                # The compiled core builds the tuples itself, in one pass (no
                # column lists), prefetching the names ahead.
                evs = drain_list(Event, _EVENT_KIND_LIST, _REASON_LIST,
                                       self._sessions.names, self._patients.names,
                                       self._accounts.names)
                if evs is not None:
                    return evs  # type: ignore[no-any-return]
            cols = self._core.drain_events_array()
            if not len(cols["kind"]):
                return []
            return list(map(_new_event, zip(
                [_EVENT_KINDS[k] for k in cols["kind"].tolist()],
                cols["at"].tolist(),
                _names_or_none(cols["session"], self._sessions.names),
                [b if b >= 0 else None for b in cols["booking"].tolist()],
                _names_or_none(cols["patient"], self._patients.names),
                _names_or_none(cols["account"], self._accounts.names),
                cols["detail"].tolist(),
                [k if k > 0 else None for k in cols["slot"].tolist()],
                [_REASONS[r] for r in cols["reason"].tolist()],
            )))
        finally:
            if paused:
                gc.enable()

    def events_array(self) -> dict[str, np.ndarray]:
        """Drain the events as numpy arrays of dense ids (for rushes with millions of events).

        Keys: ``kind, at, session, booking, patient, account, detail, slot,
        reason``; -1 means none (slot: 0).
        """
        return self._core.drain_events_array()

    # -- fair release, slow lane, flags ---------------------------------------

    def _party(self, account: object, patient: object) -> tuple[int, int, str]:
        """(kind, dense id, name) of exactly one of account= / patient=, which must be known."""
        if (account is None) == (patient is None):
            raise InvalidArgument("name exactly one of account= or patient=")
        if account is not None:
            return 0, self._known(self._accounts, account, UnknownAccount), str(account)
        return 1, self._known(self._patients, patient, UnknownPatient), str(patient)

    def _new_party(self, account: object, patient: object) -> tuple[int, _Names, str]:
        """(kind, table, checked name) of exactly one of account= / patient=; may be new."""
        if (account is None) == (patient is None):
            raise InvalidArgument("name exactly one of account= or patient=")
        if account is not None:
            return 0, self._accounts, self._accounts.check(account)
        return 1, self._patients, self._patients.check(patient)

    def flag(self, *, account: str | None = None, patient: str | None = None,
             until: object, reason: str = "host", note: str | None = None,
             now: object = None) -> None:
        """Put an account or a patient in the slow lane until ``until`` (auditable).

        ``reason`` is ``"host"`` or ``"blacklist"``; policy rules flag on their
        own.  A flag never shortens an existing one.  Ids the engine has not
        seen yet are registered (the platform may flag before any booking).
        """
        kind, table, name = self._new_party(account, patient)
        code = self._host_reason(reason)
        if note is not None and type(note) is not str:
            raise InvalidType("note must be a str")
        t = self._time_or_now(now)
        u = to_ms(until, "until")
        if u <= t:
            raise InvalidArgument("until must be later than now")
        self._reserve(name, note or "")
        key = self._register(table, name)
        if note is not None:
            self._note(bytes([_NOTE_FLAG]) + pickle.dumps((t, kind, key, note), 4))
        try:
            self._core.flag(kind, key, int(code), u, t)
        except BaseException:
            self._note(None)
            raise
        if note is not None:
            self._notes[(t, kind, key)] = note

    def _host_reason(self, reason: object) -> FlagReason:
        if type(reason) is not str:
            raise InvalidType(f"reason must be 'host' or 'blacklist', not {type(reason).__name__}")
        if reason not in _HOST_REASONS:
            raise InvalidArgument(f"reason must be 'host' or 'blacklist', not {reason!r}")
        return _HOST_REASONS[reason]

    def unflag(self, *, account: str | None = None, patient: str | None = None,
               now: object = None) -> bool:
        """Take an account or patient out of the slow lane; False if it was not flagged."""
        kind, key, _ = self._party(account, patient)
        done = self._core.unflag(kind, key, self._time_or_now(now))
        return bool(done)

    def block(self, *, account: str | None = None, patient: str | None = None,
              until: object, now: object = None) -> None:
        """Refuse every request of an account or patient (reason BLOCKED) until ``until``."""
        kind, table, name = self._new_party(account, patient)
        t = self._time_or_now(now)
        u = to_ms(until, "until")
        if u <= t:
            raise InvalidArgument("until must be later than now")
        self._reserve(name)
        key = self._register(table, name)
        self._core.block(kind, key, u, t)

    def unblock(self, *, account: str | None = None, patient: str | None = None,
                now: object = None) -> bool:
        """Lift a block; False if there was none."""
        kind, key, _ = self._party(account, patient)
        done = self._core.unblock(kind, key, self._time_or_now(now))
        return bool(done)

    def import_blacklist(self, rows: Iterable[tuple[str, str, object]], *,
                         now: object = None) -> int:
        """Flag every ``(kind, id, until)`` row of a shared blacklist (kind "account"/"patient").

        Unknown ids are registered: a blacklist names identities the platform
        may not have seen yet.  Returns the number of rows.
        """
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
            raise InvalidType("rows must be an iterable of (kind, id, until)")
        t = self._time_or_now(now)
        checked = []
        for row in rows:
            if not isinstance(row, (tuple, list)) or len(row) != 3:
                raise InvalidArgument(f"blacklist row {row!r} is not (kind, id, until)")
            kind, name, until = row
            if kind not in _KINDS:
                raise InvalidArgument(f"blacklist kind must be 'account' or 'patient', not {kind!r}")
            table = self._accounts if kind == "account" else self._patients
            u = to_ms(until, "until")
            if u <= t:
                raise InvalidArgument("blacklist until must be later than now")
            checked.append((_KINDS[kind], table, table.check(name), u))
        self._reserve(*(name for _, _, name, _ in checked), extra=32 * len(checked))
        kinds, keys, untils = [], [], []
        for k, table, name, u in checked:
            kinds.append(k)
            keys.append(self._register(table, name))
            untils.append(u)
        self._core.import_blacklist(kinds, keys, untils, t)
        return len(checked)

    def risk(self, *, account: str | None = None, patient: str | None = None) -> RiskInfo:
        """An account's or patient's flag and block, as the engine sees them now."""
        kind, key, _ = self._party(account, patient)
        if kind == 0:
            until, reason, since, blocked = self._core.account_info(key)[:4]
        else:
            until, reason, since, blocked = self._core.patient_flags(key)
        fr = FlagReason(reason) if reason > 0 else None
        return RiskInfo(until, fr, fr.source if fr else None, since, blocked)

    def flag_log(self) -> list[FlagRecord]:
        """Every flag, unflag and block, in order: the audit trail."""
        out = []
        for at, kind, key, reason, until in self._core.flag_log():
            table = self._accounts if kind == 0 else self._patients
            action = "flag" if reason > 0 else ("unflag" if reason == 0 else "block")
            out.append(FlagRecord(at, "account" if kind == 0 else "patient", table.names[key],
                                  action, FlagReason(reason) if reason > 0 else None, until,
                                  self._notes.get((at, kind, key)) if reason > 0 else None))
        return out

    def _ticket_id(self, ticket: object) -> int:
        return _int_id(ticket, "ticket", self._core.n_tickets, UnknownTicket)

    def cancel_ticket(self, ticket: int, *, account: str, now: object) -> Any:
        """Withdraw a queued request; tickets behind it move forward."""
        k = self._ticket_id(ticket)
        a = self._known(self._accounts, account, UnknownAccount)
        return self._core.cancel_ticket(k, a, self._time(now))

    def ticket(self, ticket: int) -> TicketInfo:
        """One queued request's record.  O(1)."""
        k = self._ticket_id(ticket)
        (s, p, a, ch, hold, lane, submitted, state, draw, size, served, booking,
         reason) = self._core.ticket_info(k)
        return TicketInfo(k, self._sessions.names[s], self._patients.names[p],
                          self._accounts.names[a], self.policy.channels[ch], bool(hold),
                          "slow" if lane else "fair", submitted, TicketState(state),
                          draw if draw >= 0 else None, size,
                          served if served >= 0 else None,
                          booking if booking >= 0 else None, Reason(reason))

    def position(self, ticket: int) -> TicketPosition:
        """How many queued requests are ahead of a ticket, and an estimate of the wait.

        The estimate is ``ahead`` times the outflow gap; for a slow-lane ticket
        that was not drawn in a cohort it also covers the slow-lane delay, so
        it is an upper bound there.
        """
        k = self._ticket_id(ticket)
        state, ahead, draw, size = self._core.position(k)
        estimate = None
        if state == TicketState.QUEUED and ahead >= 0:
            estimate = ahead * self._core_policy.outflow_gap_ms
            info = self._core.ticket_info(k)
            if info[5] and draw < 0:  # a slow-lane ticket served after its delay
                due = info[6] + self._core_policy.slow_delay_ms - self._core.now
                estimate = max(estimate, due)
        return TicketPosition(TicketState(state), ahead if ahead >= 0 else None,
                              draw if draw >= 0 else None, size, estimate)

    # -- waitlist (候补) ------------------------------------------------------

    def join_waitlist(self, account: str, patient: str, sessions: Sequence[str], *,
                      deadline: object, channel: str | None = None,
                      priority: str | None = None, now: object) -> Any:
        """Wait for a slot in any one of ``sessions`` (at most ``Policy.waitlist_candidates``).

        Only a full session can be waited for: if a candidate still has a
        free slot for ``channel`` the result is REJECTED with SLOTS_LEFT (book
        it instead).  Otherwise the result is WAITLISTED with ``request`` set.
        The first slot freed in any candidate goes to the first eligible
        request by ``priority`` (a ``Policy.waitlist_classes`` name; default
        by channel, ``Policy.waitlist_class``), then arrival; the request is
        then FILLED (event WAITLIST_FILLED, with the booking and its slot) and
        leaves every other queue.  At ``deadline`` an unfilled request
        EXPIRES (event WAITLIST_EXPIRED).  New account and patient ids are
        registered on first use.
        """
        acc = self._accounts.check(account)
        pat = self._patients.check(patient)
        if not isinstance(sessions, (list, tuple)):
            # a set would make the candidates' order depend on string hashing
            raise InvalidType(f"sessions must be a list or tuple of session ids, "
                              f"not {type(sessions).__name__}")
        ses = [self._session(x) for x in sessions]
        most = self.policy.waitlist_candidates
        if not 1 <= len(ses) <= most:
            raise InvalidArgument(f"a waitlist request names 1..{most} sessions, not {len(ses)}")
        if len(set(ses)) != len(ses):
            raise InvalidArgument("a waitlist request names each session once")
        c = self._channel(channel)
        if priority is None:
            priority = self.policy.waitlist_class(self.policy.channels[c])
        if type(priority) is not str:
            raise InvalidType(f"priority must be a str, not {type(priority).__name__}")
        klass = self._classes.get(priority)
        if klass is None:
            raise InvalidArgument(f"priority must be one of {list(self._classes)}, not {priority!r}")
        until = to_ms(deadline, "deadline")
        t = self._time(now)
        if until <= t:
            raise InvalidArgument("deadline must be later than now")
        self._reserve(acc, pat, extra=8 * len(ses))
        a = self._register(self._accounts, acc)
        p = self._register(self._patients, pat)
        return self._core.join_waitlist(a, p, ses, c, klass, until, t)

    def _request_id(self, request: object) -> int:
        return _int_id(request, "request", self._core.n_requests, UnknownRequest,
                       "waitlist request")

    def cancel_waitlist(self, request: int, *, account: str, now: object) -> Any:
        """Withdraw an open waitlist request (status CANCELLED); requests behind it move up."""
        r = self._request_id(request)
        a = self._known(self._accounts, account, UnknownAccount)
        return self._core.cancel_waitlist(r, a, self._time(now))

    def waitlist(self, request: int) -> WaitlistInfo:
        """One waitlist request's record.  O(candidates)."""
        r = self._request_id(request)
        (a, p, ch, klass, state, cands, created, deadline, changed, booking, filled,
         skip) = self._core.waitlist_info(r)
        names = self._sessions.names
        return WaitlistInfo(r, self._accounts.names[a], self._patients.names[p],
                            self.policy.channels[ch],
                            self.policy.waitlist_classes[klass - 1] if klass else _MOVED,
                            RequestState(state), tuple(names[x] for x in cands), created,
                            deadline, changed, booking if booking >= 0 else None,
                            names[filled] if filled >= 0 else None, Reason(skip),
                            sum(self._core.request_cover(r)))

    def session_waitlist(self, session: str) -> list[int]:
        """The open requests waiting for ``session``, in the order they would be filled."""
        return list(self._core.session_waitlist(self._session(session)))

    # -- introspection -------------------------------------------------------

    def session_counts(self, session: str) -> SlotCounts:
        """Slots of a session by state.  O(1)."""
        return SlotCounts(*self._core.session_counts(self._session(session)))

    def session(self, session: str) -> SessionInfo:
        """Everything about one session, including quota left per channel."""
        s = self._session(session)
        m = self._meta[s]
        rolled, suspended, closed, capacity = self._core.session_flags(s)
        left = dict(zip(self.policy.channels, self._core.session_quota(s)))
        return SessionInfo(m.name, m.hospital, m.department, m.doctor, m.tier, m.starts_at,
                           m.ends_at, m.slot_minutes, capacity, m.fee, m.release, left,
                           m.cancel_cutoff_at, m.rollover_at, bool(rolled), bool(suspended),
                           bool(closed))

    def booking(self, booking: int) -> BookingInfo:
        """One booking's record.  O(1)."""
        b = self._booking_id(booking)
        (s, slot, p, a, ch, q, state, created, changed, hold_until,
         end_reason) = self._core.booking_info(b)
        m = self._meta[s]
        start = m.starts_at + (slot - 1) * m.slot_minutes * MINUTE
        chans = self.policy.channels
        r = self._core.booking_request(b)
        hb, hc, charged = self._core.booking_cover(b)
        return BookingInfo(b, m.name, slot, (start, start + m.slot_minutes * MINUTE),
                           self._patients.names[p], self._accounts.names[a], chans[ch],
                           chans[q], BookingState(state), created, changed, hold_until,
                           Reason(end_reason), r if r >= 0 else None, hb, hc,
                           charged if charged >= 0 else None)

    def live_bookings(self, patient: str) -> list[BookingInfo]:
        """A patient's held and booked bookings, oldest first."""
        p = self._known(self._patients, patient, UnknownPatient)
        return [self.booking(b) for b in self._core.patient_live(p)]

    def patient_banned_until(self, patient: str) -> int:
        """When the patient's booking ban ends (ms); 0 if never banned."""
        p = self._known(self._patients, patient, UnknownPatient)
        return self._core.patient_info(p)[0]

    def explain(self, what: object = None, *, ticket: int | None = None,
                request: int | None = None) -> str:
        """Say, in words, why an outcome happened: a booking id, a Result, ``ticket=`` or ``request=``.

        For a ticket: its lane and why, its lottery draw, and how it was
        served.  For a waitlist request: its priority, where it stands in
        each candidate's queue, why fills passed it over, and how it ended.
        """
        if (what is not None) + (ticket is not None) + (request is not None) > 1:
            raise InvalidArgument("give one of: a booking or Result, ticket=, request=")
        if ticket is not None:
            return self._explain_ticket(self._ticket_id(ticket))
        if request is not None:
            return self._explain_request(self._request_id(request))
        if isinstance(what, (int, np.integer)) and not isinstance(what, bool):
            return self._explain_booking(self._booking_id(what))
        if hasattr(what, "status") and hasattr(what, "reason"):
            return self._explain_result(what)
        raise InvalidType(f"explain takes a booking id, a Result or ticket=, not {type(what).__name__}")

    def _explain_ticket(self, k: int) -> str:
        t = self.ticket(k)
        lines = [
            f"ticket {k}: patient {t.patient!r} via account {t.account!r}, session {t.session!r}, "
            f"channel {t.channel!r}",
            f"  submitted {self._fmt(t.submitted_at)} in the {t.lane} lane",
        ]
        if t.lane == "slow":
            for label, risk in (("account", self.risk(account=t.account)),
                                ("patient", self.risk(patient=t.patient))):
                if risk.flag_reason is not None:
                    lines.append(f"  {label} flagged by {risk.flag_source} "
                                 f"({risk.flag_reason.name}) since {self._fmt(risk.flagged_since)} "
                                 f"until {self._fmt(risk.flagged_until)}")
        if t.draw is not None:
            lines.append(f"  lottery draw {t.draw + 1} of {t.cohort_size} in its release cohort "
                         "(seeded; arrival time inside the window does not matter)")
        else:
            lines.append("  not in a release cohort: served in arrival order"
                         + (" after the slow-lane delay" if t.lane == "slow" else ""))
        if t.state == TicketState.QUEUED:
            pos = self.position(k)
            lines.append("  waiting for its cohort's draw" if pos.ahead is None
                         else f"  queued, {pos.ahead} ahead")
        elif t.state == TicketState.SERVED:
            lines.append(f"  served {self._fmt(t.served_at or 0)}: booking {t.booking}")
        elif t.state == TicketState.FAILED:
            lines.append(f"  served {self._fmt(t.served_at or 0)} but refused: "
                         f"{t.reason.name} - {t.reason.message}")
        else:
            lines.append(f"  withdrawn by the account ({t.state.name})")
        return "\n".join(lines)

    def _explain_request(self, r: int) -> str:
        w = self.waitlist(r)
        head = ("moved here when its session was suspended, ahead of every class"
                if w.priority == _MOVED else f"priority {w.priority!r}")
        lines = [
            f"waitlist request {r}: patient {w.patient!r} via account {w.account!r}, "
            f"channel {w.channel!r}, {head}",
            f"  waits for any one of {', '.join(repr(x) for x in w.sessions)}",
            f"  joined {self._fmt(w.created_at)}, deadline {self._fmt(w.deadline)}",
        ]
        if w.state == RequestState.OPEN:
            for name in w.sessions:
                queue = self.session_waitlist(name)
                lines.append(f"  {name!r}: {queue.index(r)} ahead of it" if r in queue
                             else f"  {name!r}: not waiting there")
        if w.skip_reason != Reason.NONE:
            lines.append(f"  last passed over: {w.skip_reason.name} - {w.skip_reason.message}"
                         + (" (it keeps its place)" if w.state == RequestState.OPEN else ""))
        if w.state == RequestState.FILLED:
            lines.append(f"  filled {self._fmt(w.changed_at)} in {w.session!r}: booking {w.booking}")
        elif w.state == RequestState.EXPIRED:
            lines.append(f"  expired unfilled at its deadline {self._fmt(w.changed_at)}")
        elif w.state == RequestState.CANCELLED:
            lines.append(f"  withdrawn by the account {self._fmt(w.changed_at)}")
        return "\n".join(lines)

    def _fmt(self, ms: int) -> str:
        return from_ms(ms, self._tz).strftime("%Y-%m-%d %H:%M:%S%z")

    def _explain_booking(self, b: int) -> str:
        i = self.booking(b)
        m = self._meta[self._sessions.ids[i.session]]
        lines = [
            f"booking {b}: patient {i.patient!r} booked by account {i.account!r}",
            f"  session {m.name!r}: {m.hospital} / {m.department}, {m.doctor}, {m.tier} tier, "
            f"fee {m.fee} fen",
            f"  slot {i.slot}, arrive {self._fmt(i.window[0])} - {self._fmt(i.window[1])}",
            f"  requested via channel {i.channel!r}, drew from the {i.quota!r} quota",
            f"  created {self._fmt(i.created_at)}"
            + (f" as a hold until {self._fmt(i.hold_until)}" if i.hold_until else " as booked"),
            f"  state {i.state.name} since {self._fmt(i.changed_at)}",
        ]
        if i.request is not None:
            w = self.waitlist(i.request)
            lines.append(f"  filled from waitlist request {i.request} ({w.priority}, joined "
                         f"{self._fmt(w.created_at)}) when a slot was freed")
        if i.held_balance or i.held_credit:
            lines.append(f"  holds {i.held_balance + i.held_credit} fen of its fee: "
                         f"{i.held_balance} on the prepaid balance, {i.held_credit} on credit")
        if i.charged is not None:
            lines.append(f"  charged {i.charged} fen")
        if i.end_reason != Reason.NONE:
            lines.append(f"  ended because {i.end_reason.message}")
        return "\n".join(lines)

    def _explain_result(self, r: Any) -> str:
        status, reason = Status(r.status), Reason(r.reason)
        if reason == Reason.NONE:
            head = f"{status.name}"
            if getattr(r, "ticket", None) is not None:
                return head + "\n" + self._explain_ticket(self._ticket_id(r.ticket))
            if getattr(r, "request", None) is not None:
                return head + "\n" + self._explain_request(self._request_id(r.request))
            if r.booking is not None:
                return head + "\n" + self._explain_booking(r.booking)
            return head
        text = f"{status.name} at the {reason.stage} stage: {reason.name} - {reason.message}"
        pol = self.policy
        if reason == Reason.PATIENT_LIMIT:
            rows = ", ".join(f"{n} per {d} day(s)" for n, d in pol.patient_limits)
            text += f" (limits: {rows})"
        elif reason == Reason.ACCOUNT_PATIENT_LIMIT:
            text += f" (at most {pol.account_patients} patients per {pol.account_window_days} days)"
        elif reason == Reason.PATIENT_BANNED:
            text += f" (bans after strikes: {pol.ban_days} days)"
        elif reason == Reason.THROTTLED:
            text += (f" (slow lane: {pol.slow_rate_per_minute} per minute, burst {pol.slow_burst}; "
                     f"retry after {getattr(r, 'retry_after', 0)} ms)")
        elif reason == Reason.WAITLIST_PATIENT_CAP:
            text += f" (at most {pol.waitlist_per_patient} open requests per patient)"
        elif reason == Reason.WAITLIST_FULL:
            text += f" (at most {pol.waitlist_per_session} open requests per session)"
        elif reason == Reason.HOLD_EXPIRED:
            text += f" (holds last {pol.hold_minutes} minutes)"
        elif reason == Reason.NO_COVER:
            text += " (top up the prepaid balance or open a credit line; see engine.credit.check)"
        elif reason == Reason.CREDIT_SUSPENDED:
            text += " (repaying the overdue bills reinstates the line)"
        return text

    # -- state ---------------------------------------------------------------

    def dump(self) -> dict:
        """The backend's canonical state (plain Python), plus the intern tables."""
        d = self._core.dump()
        d["names"] = {
            "accounts": list(self._accounts.names),
            "patients": list(self._patients.names),
            "sessions": list(self._sessions.names),
            "hospitals": list(self._hospitals.names),
            "departments": sorted((h, name, i) for (h, name), i in self._departments.items()),
            "doctors": sorted((h, name, i) for (h, name), i in self._doctors.items()),
        }
        return d

    @property
    def commands(self) -> int:
        """How many backend commands have run (each money movement records its number).

        Every command that takes ``now`` counts one, a rejected one too
        (``book_many`` one per row); a host call that runs several
        (``register_patient`` with several hospitals) counts each.
        """
        return self._core.ncmd

    def state_hash(self) -> str:
        """A hash of the whole state: same commands and seed, same hash, on either backend."""
        return _hash_dump(self.dump())

    def _check_invariants(self) -> None:
        """Raise AssertionError if the backend's state is inconsistent."""
        self._core._check_invariants()
        assert len(self._meta) == self._core.n_sessions

    def memory_usage(self) -> dict[str, int]:
        """Bytes held by the backend's structures (compiled core only)."""
        return dict(self._core.memory_usage())

    def reserve(self, requests: int) -> None:
        """Make room, before a release, for a rush of ``requests`` more requests.

        The compiled core takes the memory for as many tickets and events (and
        bookings, up to the slots there are) from the kernel now, so that the
        rush does not stop for it page by page: a fresh engine's first rush of a
        million requests otherwise spends about a fifth of its time in page
        faults.  Call it once the release's size is known (say, at 08:00 for
        the 08:30 release); an engine that has run a rush of that size has the
        room already.  Changes no state (nothing is journaled, ``state_hash``
        is unchanged); the reference backend only checks the argument.  Costs
        about 100 bytes per request, kept until the engine is dropped; at most
        100,000,000 requests (InvalidArgument beyond: the memory is written at
        once, so an absurd count would exhaust the machine, not fail).
        """
        self._core.reserve(requests)

    # -- durability (docs/durability.md) ---------------------------------------

    @classmethod
    def open(cls, directory: Any, policy: Policy | None = None, seed: int | None = None, *,
             durability: str = "process", segment_bytes: int = 64 << 20, group_ms: int = 10,
             group_records: int = 1000, repair: bool = False) -> "Engine":
        """A durable engine in ``directory``: the embedded default for real use.

        A new directory records ``policy`` and ``seed`` (default ``Policy()``
        and 0); an existing one must be reopened with the same ones (or
        ``None``: the stored ones).  Recovery loads the newest valid snapshot
        and replays the journal after it; a torn last record is dropped with
        a ``JournalWarning``, a corrupt one in the middle raises
        ``CorruptJournal`` naming file and offset (``repair=True`` truncates
        there instead).  ``durability`` is ``"process"`` (survives a killed
        process; no system call per command), ``"grouped"`` (also power loss,
        but for the last ``group_ms`` / ``group_records``), ``"fsync"``
        (nothing acknowledged is lost) or ``"off"`` (a snapshot at ``close``
        only).  One process owns a directory at a time.  Use as a context
        manager, or call ``close()``.
        """
        from .journal import Journal

        journal = Journal(directory, durability=durability, segment_bytes=segment_bytes,
                          group_ms=group_ms, group_records=group_records, repair=repair)
        try:
            policy, seed = journal.settle_manifest(policy, seed)
            engine = cls(policy, seed)

            def load(core_bytes: bytes, facade_bytes: bytes) -> None:
                # a snapshot the core or the facade refuses: the journal tries the older
                # one, on a fresh engine (a refused facade may have loaded part of itself)
                nonlocal engine
                try:
                    engine._core.restore(core_bytes)
                    engine._restore_facade(facade_bytes)
                except BaseException:
                    engine = cls(policy, seed)
                    raise

            journal.latest_snapshot(load)
            next_seq = journal.replay(engine._core, engine._apply_note)
            journal.attach(engine._core, next_seq)
        except BaseException:
            journal.close()
            raise
        engine._journal = journal
        return engine

    @property
    def durability(self) -> str | None:
        """The journal's durability mode, or None for an in-memory engine."""
        return None if self._journal is None else self._journal.durability

    @property
    def journal_seq(self) -> int:
        """The sequence number of the last journal record (0: none; in-memory: 0)."""
        if self._journal is None:
            return 0
        return int(self._journal.last_seq(self._core))

    def snapshot(self) -> Any:
        """Write a snapshot of the whole state now; returns its path.

        Recovery then replays only the journal after it, and journal segments
        older than the previous snapshot are deleted.  O(state): a pause.
        """
        j = self._require_journal()
        return j.write_snapshot(j.last_seq(self._core), self._core.snapshot(),
                                self._facade_bytes())

    def close(self, *, snapshot: bool = True) -> None:
        """Snapshot (unless ``snapshot=False``), flush and release the directory.

        Afterwards every command raises ``JournalError``.  Idempotent.
        """
        if snapshot is not True and snapshot is not False:
            raise InvalidType(f"snapshot must be a bool, not {type(snapshot).__name__}")
        j = self._journal
        if j is None or j.closed:
            return
        try:
            if snapshot or j.durability == "off":
                self.snapshot()
        finally:
            j.close()
            self._core.journal_fail(f"the engine in {j.directory} is closed")

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_journal(self) -> Any:
        if self._journal is None:
            raise JournalError("this engine is in memory: use Engine.open(directory)")
        if self._journal.closed:
            raise JournalError(f"the engine in {self._journal.directory} is closed")
        return self._journal

    def _facade_bytes(self) -> bytes:
        """What the facade remembers, for a snapshot (the core's arrays hold the rest)."""
        # names as one NUL-joined string per table (names are printable): millions of
        # patients load in one split rather than a pickle object each
        state = {
            "format": _FACADE_FORMAT,
            "accounts": "\0".join(self._accounts.names),
            "patients": "\0".join(self._patients.names),
            "hospitals": "\0".join(self._hospitals.names),
            "departments": list(self._departments.items()),
            "doctors": list(self._doctors.items()),
            "meta": [(m.name, m.hospital, m.department, m.doctor, m.tier, m.starts_at,
                      m.ends_at, m.slot_minutes, m.fee, dict(m.release), m.cancel_cutoff_at,
                      m.rollover_at) for m in self._meta],
            "notes": list(self._notes.items()),
        }
        return pickle.dumps(state, 4)

    def _restore_facade(self, data: bytes) -> None:
        """Load ``_facade_bytes`` into this fresh engine, in place (the core shares the dicts)."""
        try:
            state = pickle.loads(data)
            fmt = state.get("format")
        except Exception as exc:  # any unpickling failure of bytes whose CRC checked
            raise SnapshotError(f"snapshot facade does not load: {exc!r}") from None
        if fmt != _FACADE_FORMAT:
            raise SnapshotError(f"snapshot facade format {fmt} is not {_FACADE_FORMAT}")
        for table, key in ((self._accounts, "accounts"), (self._patients, "patients"),
                           (self._hospitals, "hospitals")):
            if type(state.get(key)) is not str:
                raise SnapshotError(f"snapshot facade table {key} is not a str")
            names = state[key].split("\0") if state[key] else []
            table.names.extend(names)  # in place: the core shares the list and the dict
            table.ids.update(zip(names, range(len(names))))
        self._departments.update(state["departments"])
        self._doctors.update(state["doctors"])
        for meta in state["meta"]:
            # sessions are interned with their metadata, in order
            name, hosp, dept, doc, tier, start, end, slot_minutes, fee, rel, cutoff, rollover = meta
            self._sessions.intern(name)
            self._meta.append(_Meta(name, hosp, dept, doc, tier, start, end, slot_minutes, fee,
                                    MappingProxyType(dict(rel)), cutoff, rollover))
        self._notes.update(state["notes"])
        if len(self._meta) != self._core.n_sessions or len(self._patients.names) != \
                self._core.n_patients or len(self._accounts.names) != self._core.n_accounts:
            raise SnapshotError("snapshot facade tables do not match its core state")


def _new_event(fields: tuple) -> Event:
    return tuple.__new__(Event, fields)  # type: ignore[return-value]


def _names_or_none(ids: np.ndarray, names: list[str]) -> list[str | None]:
    return [names[i] if i >= 0 else None for i in ids.tolist()]


def _int_id(value: object, kind: str, n: int, err: type, label: str | None = None) -> int:
    """A dense id the backend issued (``0 <= id < n``): an int, else InvalidType; else ``err``."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidType(f"{kind} must be an int id, not {type(value).__name__}")
        value = int(value)  # type: ignore[arg-type]
    if not 0 <= value < n:  # type: ignore[operator]
        raise err(f"unknown {label or kind} {value}")
    return value  # type: ignore[return-value]


def _int(value: object, name: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InvalidType(f"{name} must be an int, not {type(value).__name__}")
        value = int(value)  # type: ignore[arg-type]
    if not lo <= value <= hi:  # type: ignore[operator]
        raise InvalidArgument(f"{name}={value} is outside {lo}..{hi}")
    return value  # type: ignore[return-value]


def _all_plain_ids(names: list) -> bool:
    """Whether every item is a str that ``_Names.check`` passes unchanged, tested in bulk
    (C-speed passes over the list instead of one Python call per name)."""
    if not names:
        return True
    return (set(map(type, names)) == {str} and all(map(str.strip, names))
            and max(map(len, names)) <= _MAX_ID_LEN and "".join(names).isprintable())


def _iter_names(names: object, kind: str) -> list:
    """The items of an iterable of ids; one str (or bytes) is refused, not split into characters."""
    if isinstance(names, (str, bytes)):
        raise InvalidType(f"{kind} names must be an iterable of str, not one {type(names).__name__}")
    try:
        return list(names)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidType(f"{kind} names must be an iterable of str, not {type(names).__name__}") from None


def _ids_array(x: object, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int32)  # np.asarray([]) is float64: an empty batch is fine
    if arr.dtype.kind not in "iu":
        raise InvalidType(f"{name} must be an integer array of interned ids")
    if arr.ndim != 1:
        raise InvalidArgument(f"{name} must be 1-d")
    if n is not None and len(arr) != n:
        raise InvalidArgument(f"{name} has length {len(arr)}, expected {n}")
    if len(arr) and (arr.min() < 0 or arr.max() >= 2**31):
        raise InvalidArgument(f"{name} holds ids outside 0..2**31-1")
    return np.ascontiguousarray(arr, dtype=np.int32)
