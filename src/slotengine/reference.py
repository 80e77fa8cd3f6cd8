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
                                             # NO_SHOW slot, else -1 (a no-show released
                                             # by the grace rule leaves its slot)
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
         'last_cancel': (int, int),       # (at, account) of the last cancel, or (0, -1)
         # -- issue 4 --
         'doctor': int,                   # label given to add_session, -1 none
         'waitlist': [int],               # session_waitlist(s): OPEN request ids listing
                                          # s, class 0 first, then FIFO in each class
         'recheck_at': int,               # due of the live WL_RECHECK, -1 none
         'scan_k': int},                  # next slot index (0-based) NOSHOW_SCAN looks at;
                                          # stays 0 when noshow_grace_ms == 0
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
                7 WL_EXPIRE (id = request), 8 RERELEASE (id = returns record),
                9 WL_RECHECK (id = session), 10 NOSHOW_SCAN (id = session),
                11 BILL_NOTICE (id = bill), 12 BILL_DUE (id = bill),
      'events': [(kind, at, session, booking, patient, account, detail, slot,
                  reason), ...]           # not drained yet
      'requests': [waitlist_info(r) for r in range(n_requests)],
      'returns':  [(session, slot_index), ...],  # RERELEASE records in id order;
                                          # slot_index 0-based (slot number - 1); kept
                                          # after the timer has run
      # -- issue 5 --
      'ncmd': int,                        # commands run (see "Command counter")
      'wallets': [(patient, *wallet(p)), ...],   # ascending patient, only wallets that
                                          # are not all zero (10-tuples)
      'covers': [(booking, hold_balance, hold_credit, settled), ...],
                                          # ascending booking, only covers that are not
                                          # (0, 0, -1)
      'request_covers': [(request, hold_balance, hold_credit), ...],
                                          # ascending request, only holds not (0, 0)
      'bills': [bill_info(k) for k in range(n_bills)],
      'movements': [(seq, ncmd, at, patient, source, target, amount, kind, booking,
                     bill), ...],         # the whole ledger, seq = index
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
  logged;
* ``waitlist_info(r)`` = ``(account, patient, channel, klass, state,
  candidates, created_at, deadline, changed_at, booking, filled_session,
  skip_reason)``: ``klass`` 0 for a request made by a suspension, else
  1..wl_classes; ``state`` a RequestState; ``candidates`` a **tuple** of
  session ids in the order given; ``changed_at == created_at`` until the
  request is filled, expired or cancelled; ``booking`` and ``filled_session``
  -1 unless FILLED; ``skip_reason`` the Reason of the last skip, 0 if never
  skipped, and kept once the request is filled;
* ``wallet(p)`` = ``(balance, bal_held, kind, state, limit, used, held, streak,
  n_overdue)``: ``kind`` a LineKind (0 while no line was ever opened), ``state``
  a LineState; all 0 for a patient who never had money or a line;
* ``bill_info(k)`` = ``(patient, booking, amount, paid, created_at, due_at,
  state, paid_at)``: ``state`` a BillState, ``paid_at`` -1 until PAID;
* a movement ``(seq, ncmd, at, patient, source, target, amount, kind, booking,
  bill)``: ``source``/``target`` LedgerAccounts, ``kind`` a MoveKind, ``amount``
  > 0; TOP_UP and REFUND have booking and bill -1, PAY_BALANCE the booking (bill
  -1), PAY_CREDIT the booking and the bill it made, REPAY the bill (booking -1).

Events ``(kind, at, session, booking, patient, account, detail, slot,
reason)``, -1 for none; ``slot`` is the booking's slot number whenever
``booking != -1`` (the slot of SLOT_RERELEASED, else 0); ``reason`` is 0
except BOOKING_CANCELLED by suspension (101), TICKET_FAILED (the ticket's
reason), WAITLIST_SKIPPED (the skip reason), NO_SHOW by the grace rule (607):

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
* WAITLIST_FILLED: session, booking (new), the request's patient and account,
  detail = request.  WAITLIST_SKIPPED: session, booking -1, patient, account,
  detail = request.  WAITLIST_EXPIRED: session -1, booking -1, patient,
  account, detail = request.  BOOKING_MOVED: the target session, the new
  booking, patient, account, detail = the old booking.  BOOKING_WAITLISTED:
  the suspended session, the old booking, patient, account, detail = the new
  request.  SLOT_RERELEASED: session, booking -1, patient -1, account -1,
  detail -1, slot.  NO_SHOW by the grace rule: as NO_SHOW, detail -1.
* BILLED, BILL_DUE_SOON, BILL_OVERDUE, BILL_PAID: the bill's booking, that
  booking's session, slot and account, the bill's patient, detail = the bill.
  CREDIT_SUSPENDED (detail = the bill that fell due), CREDIT_REINSTATED (detail
  -1), LIMIT_CHANGED (detail = the new limit): session, booking and account -1,
  only the patient set.

``drain_events_array()`` returns ``{'kind', 'at', 'session', 'booking',
'patient', 'account', 'detail', 'slot', 'reason'}`` -> numpy arrays (same rows
as ``drain_events()``; int64, but ``slot`` int32 and ``reason`` int16) and
clears the buffer.

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

Issue-4 readings (waitlist backfill and suspension moves):

* Validation of ``join_waitlist``: first the ids in argument order (account,
  patient, each session of ``sessions`` -- a non-str sequence, else
  InvalidType -- then channel), then ``sessions``' length and repeats, then
  ``klass`` (type, then ``1..wl_classes``), then ``deadline`` (type, time
  domain), then ``now``, then ``deadline > now`` (InvalidArgument).
  ``cancel_waitlist``: request (UnknownRequest), account, now.  ``add_session``
  checks ``doctor``'s type with the other types and its range after the
  release times, all before ``now``.  The constructor refuses (PolicyError)
  ``wl_classes`` outside 0..8 (0: only suspensions make requests),
  ``wl_candidates`` outside 1..8, ``wl_per_patient`` or ``wl_session_cap``
  outside 0..2**31-1 (0: every host join is refused by the cap), re-release
  times not ``0 <= min <= max <= MAX_MS``, ``noshow_grace_ms`` outside
  0..MAX_MS and ``suspend_action`` outside 0..2.
* Results: a rejected join has ``session`` = the candidate concerned, None
  for BLOCKED, PATIENT_BANNED and WAITLIST_PATIENT_CAP; ``request`` None.
  WAITLISTED: ``request`` set, session, slot, booking, window None.  Every ``cancel_waitlist`` result (CANCELLED,
  NOT_OWNER, NOT_ACTIVE) has ``request`` set and session/slot/booking None.
  WAITLISTED is not ``ok``.
* A new request has ``changed_at = created_at = now``; a class-0 request made
  by a suspension has ``channel`` and ``account`` of the booking and the
  suspension's ``now``.
* *Freeing a slot*: the slot becomes FREE (quota credited) where it did
  before; the pass, the patient's recheck and the re-release come after the
  command's own bookkeeping: cancel -> cancellation record (strike), last
  cancel, the account's cancel ring (flag), then pass; HOLD_EXPIRE -> event
  HOLD_EXPIRED, then pass; grace no-show -> NO_SHOW event, strike, FREE, then
  pass.
* SESSION_END rechecks, after its whole loop, the patients of the bookings it
  ended (no-shows and expired holds) in slot order; it passes nothing and
  makes nothing RETURNING (the session is closed).
* "Recheck the patient" runs after ``check_in`` only when it succeeds, after
  every ``mark_known``, and after ``unflag``/``unblock`` only when they return
  True (kind 0: recheck the account).  It walks the patient's (account's)
  requests in id order, takes a request if it is OPEN when reached, and then
  passes all its candidates in order, even if the request is filled on the
  way; a session listed by two requests is passed twice.
* ``pass``: "stop as soon as s has no FREE slot" is checked before each OPEN
  request; a fill keeps the request's last ``skip_reason``.  "No WL_RECHECK(s)
  pending with due <= T" reads the live one: ``recheck_at[s] != -1 and
  recheck_at[s] <= T``; stale WL_RECHECK timers do not count.
* ``add_capacity``: slots, quota, CAPACITY_ADDED, the NOSHOW_SCAN re-push,
  then the pass.  ``unblock_slot``'s pass runs only when it freed a slot.
  ``ROLLOVER`` of a suspended session does nothing, pass included.
* ``add_capacity`` re-pushes NOSHOW_SCAN at ``max(due, now)``, so no timer
  runs before the clock of the command that pushed it and bookings are
  created in time order.  Windows ("created_at > now - window") are still
  counted by a full scan of the bookings: the plain reading, not relying on
  that order.
* RERELEASE: the returns record keeps the 0-based slot index; a RETURNING slot
  left in a closed session is still made FREE (and SLOT_RERELEASED emitted) by
  its timer; the pass then does nothing.
* Suspension: the targets and candidates are searched when the booking is
  reached in slot order (earlier moves of the same suspension have taken their
  slots).  "Same doctor first, then same department": the department group
  leaves out sessions already in the doctor group.  A move takes the lowest
  FREE slot of the target with the move quota and checks nothing else (no ban,
  limit or first-visit check).  The return value and SESSION_SUSPENDED's
  detail count every booking that left (cancelled, moved or waitlisted).

Issue-5 readings (credit and prepaid balances):

* ``ncmd``: ``_begin`` counts a command once it has passed validation, just before its
  timers run; ``book_many`` counts each row before that row's timers.  A movement
  records the count *including* its own command (the first command is 1).
  ``advance`` and ``add_session`` are commands; ``ensure_*``, introspection,
  ``rng_next``, ``drain_events*`` are not.
* Validation of the money commands: the id (type, then range), then each further
  argument left to right, its type then its value (``open_line``: kind, then limit),
  then ``now``, then state checks on the state before timers.  Checks against the
  wallet that the contract lists with the amounts (``top_up``'s 10**15, ``refund``'s
  free balance, ``repay``'s ``used``) are value checks (InvalidArgument) made before
  ``now``, on the state before timers.  ``set_limit`` takes ``0..MAX_FEN``.
* ``settle`` returns ``code = status | reason << 8`` (as ``credit.py`` decodes it):
  ``int(ARRIVED)`` on success, ``REJECTED | reason << 8`` on failure; on failure the
  split is the one that was tried (``xb = min(x, usable balance)``, ``xc = x - xb``)
  and bill -1, like ``check_cover`` which also reports its split when it fails.
* ``check_in``'s charge is part of its own bookkeeping: state ARRIVED, slot, live
  set, known, *charge*, then the recheck of the patient (passes come after a
  command's bookkeeping, as for cancels).  BILLED therefore precedes any fill the
  recheck makes.
* The booking path's cover check sits after the quota choice and before the slot is
  taken (``_allocate``), so FULL and QUOTA_EXHAUSTED win over NO_COVER; earlier
  stages' side effects (the early ring, the GCRA, flags) stay as on any rejection.
  A join's credit stage comes after SLOTS_LEFT and WAITLIST_FULL; a rejected join
  has ``session`` None.
* Holds are released at the state change that ends the booking, before the freed
  slot's pass (no fill reads the wallet, so the order is not observable).  The
  suspension's move and waitlist transfers happen at the move / the new request;
  plainly cancelled ones (HELD, action 0, nowhere to go) release.
* Limits move only in their own direction: a *raise* is ``max(limit, min(limit +
  step, ceiling))`` and a *cut* ``max(min(limit, max(limit - step, floor)), used +
  held)``.  A host's limit outside the bounds (``set_limit`` and ``open_line`` take
  any ``0..MAX_FEN``) is therefore never raised by a cut nor lowered by a raise, and
  no move goes below ``used + held``.
* ``check_cover`` on failure reports its split too; ``movements(start)``: ``start``
  an int ``>= 0`` (InvalidArgument), past the end gives ``[]``; ``bill_info`` of an
  unknown bill raises UnknownBill.
* The constructor refuses (PolicyError) ``credit_terms`` that are not two rows of
  ``0 <= floor <= start <= ceiling <= MAX_FEN`` with ``0 <= step <= MAX_FEN``, and
  ``bill_due_ms`` outside ``1..MAX_MS``, ``bill_notice_ms`` outside
  ``0..bill_due_ms - 1``, ``credit_raise_after`` outside ``0..2**31-1``.

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
    UnknownBill,
    UnknownBooking,
    UnknownChannel,
    UnknownPatient,
    UnknownRequest,
    UnknownSession,
    UnknownTicket,
)
from .outcomes import (
    BillState,
    BookingState,
    EventKind,
    FlagReason,
    LedgerAccount,
    LineState,
    MoveKind,
    Reason,
    RequestState,
    SlotState,
    Status,
    TicketState,
)
from .policy import CorePolicy
from .times import MAX_MS

__all__ = ["Core", "Result", "TIMER_HOLD_EXPIRE", "TIMER_ROLLOVER", "TIMER_SESSION_END",
           "TIMER_COHORT_CLOSE", "TIMER_DRAIN", "TIMER_SLOW_SERVE", "TIMER_WL_EXPIRE",
           "TIMER_RERELEASE", "TIMER_WL_RECHECK", "TIMER_NOSHOW_SCAN", "TIMER_BILL_NOTICE",
           "TIMER_BILL_DUE", "MAX_FEN"]

#: Timer kinds as they appear in ``dump()['timers']``.
TIMER_HOLD_EXPIRE = 1
TIMER_ROLLOVER = 2
TIMER_SESSION_END = 3
TIMER_COHORT_CLOSE = 4
TIMER_DRAIN = 5
TIMER_SLOW_SERVE = 6
TIMER_WL_EXPIRE = 7  # id = request
TIMER_RERELEASE = 8  # id = returns record
TIMER_WL_RECHECK = 9  # id = session
TIMER_NOSHOW_SCAN = 10  # id = session
TIMER_BILL_NOTICE = 11  # id = bill
TIMER_BILL_DUE = 12  # id = bill

#: Ticket lanes as they appear in ``ticket_info``.
LANE_FAIR = 0
LANE_SLOW = 1
# Where a QUEUED ticket waits.
_IN_COHORT, _IN_QUEUE, _IN_SLOW = 0, 1, 2

_MASK64 = (1 << 64) - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_LABEL = 2**31 - 1  # hospital and department labels (int32 in the core)
_MAX_ID = 2**31 - 1  # patients, accounts (int32 in the core)
_MAX_RESERVE = 100_000_000  # Core.reserve: requests (the core writes ~100 bytes each at once)
_MAX_CAPACITY = 65535
_MAX_SLOT_MS = 86_400_000
_MAX_FEE = 10**12
_MAX_ADD = 10_000
_MAX_CANDIDATES = 8
MAX_FEN = 10**12  # the largest amount (fen) one money command takes
_MAX_BALANCE = 10**15  # a prepaid balance never passes this
_INF = float("inf")  # a clear time no clock can reach

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
                 "retry_after", "request")

    def __init__(self, status: Status, reason: Reason = Reason.NONE, slot: int | None = None,
                 booking: int | None = None, window: tuple[int, int] | None = None,
                 session: int | None = None, ticket: int | None = None,
                 retry_after: int = 0, request: int | None = None) -> None:
        self.status = status
        self.reason = reason
        self.slot = slot
        self.booking = booking
        self.window = window
        self.session = session
        self.ticket = ticket  # the queued request this result names, if any
        self.retry_after = retry_after  # ms to wait when THROTTLED, else 0
        self.request = request  # the waitlist request this result names, if any

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
        for name in ("session", "slot", "booking", "window", "ticket", "request"):
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
    # waitlist
    doctor: int = -1
    fifos: list[list[int]] = field(default_factory=list)  # per class 0..wl_classes; lazy
    open: int = 0  # OPEN requests listing this session
    recheck_at: int = -1  # due of the live WL_RECHECK, -1 none
    scan_k: int = 0  # next slot index the no-show scan looks at

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
    hold_balance: int = 0  # the cover it holds (fee held on the balance ...
    hold_credit: int = 0  # ... and on the credit line), (0, 0) once released or charged
    settled: int = -1  # the amount charged, -1 until charged

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
    requests: list[int] = field(default_factory=list)  # every waitlist request, in id order
    flag_until: int = 0
    flag_reason: int = 0
    flag_since: int = 0
    blocked_until: int = 0
    # wallet: prepaid balance and credit line (issue 5)
    balance: int = 0
    bal_held: int = 0  # the held part of the balance
    kind: int = 0  # LineKind, 0 while no line was ever opened
    line_state: int = LineState.NONE
    limit: int = 0
    used: int = 0  # billed and unpaid
    held: int = 0  # held on the line, not billed yet
    streak: int = 0  # bills paid on time in a row
    n_overdue: int = 0  # bills now OVERDUE
    bills: list[int] = field(default_factory=list)  # bill ids, oldest first

    def flags(self) -> tuple[int, int, int, int]:
        return (self.flag_until, self.flag_reason, self.flag_since, self.blocked_until)

    def wallet(self) -> tuple[int, ...]:
        return (self.balance, self.bal_held, self.kind, int(self.line_state), self.limit,
                self.used, self.held, self.streak, self.n_overdue)


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
    requests: list[int] = field(default_factory=list)  # every waitlist request, in id order

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


@dataclass
class _Request:
    account: int
    patient: int
    channel: int
    klass: int  # 0 for a booking moved off a suspended session, else 1..wl_classes
    candidates: tuple[int, ...]
    created_at: int
    deadline: int
    changed_at: int
    state: RequestState = RequestState.OPEN
    booking: int = -1
    filled_session: int = -1
    skip_reason: Reason = Reason.NONE
    hold_balance: int = 0  # the cover it holds while OPEN (the join's largest candidate fee,
    hold_credit: int = 0  # or a suspended booking's hold)

    def info(self) -> tuple[Any, ...]:
        return (self.account, self.patient, self.channel, self.klass, int(self.state),
                self.candidates, self.created_at, self.deadline, self.changed_at, self.booking,
                self.filled_session, int(self.skip_reason))


@dataclass
class _Bill:
    patient: int
    booking: int
    amount: int
    created_at: int
    due_at: int
    paid: int = 0
    state: BillState = BillState.OPEN
    paid_at: int = -1

    def info(self) -> tuple[int, ...]:
        return (self.patient, self.booking, self.amount, self.paid, self.created_at, self.due_at,
                int(self.state), self.paid_at)


def _id(value: object, name: str) -> int:
    """An int id (anything with ``__index__`` but bool), else InvalidType.  Any size."""
    if isinstance(value, bool):
        raise InvalidType(f"{name} must be an int, not bool")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidType(f"{name} must be an int, not {type(value).__name__}") from None


def _index(value: object, name: str, n: int, err: type, label: str | None = None) -> int:
    """An id in ``0..n-1``: ``_id`` checks its type, ``err`` names one out of range."""
    i = _id(value, name)
    if not 0 <= i < n:
        raise err(f"unknown {label or name} {i}")
    return i


def _int(value: object, name: str) -> int:
    """An int value: like ``_id``, and it must fit in int64 (else InvalidArgument)."""
    v = _id(value, name)
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise InvalidArgument(f"{name}={v} is out of range")
    return v


def _amount(value: object, name: str, lo: int) -> int:
    """An amount of fen in ``lo..MAX_FEN`` (InvalidType for a non-int, else InvalidArgument)."""
    v = _int(value, name)
    if not lo <= v <= MAX_FEN:
        raise InvalidArgument(f"{name}={v} is outside {lo}..{MAX_FEN} fen")
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
        if not (0 <= policy.wl_classes <= 8 and 1 <= policy.wl_candidates <= _MAX_CANDIDATES
                and 0 <= policy.wl_per_patient <= _MAX_ID
                and 0 <= policy.wl_session_cap <= _MAX_ID):
            raise PolicyError("policy waitlist sizes are out of range")
        if not (0 <= policy.rerelease_min_ms <= policy.rerelease_max_ms <= MAX_MS
                and 0 <= policy.noshow_grace_ms <= MAX_MS and policy.suspend_action in (0, 1, 2)):
            raise PolicyError("policy re-release, no-show grace or suspend action is out of range")
        terms = tuple(tuple(int(v) for v in row) for row in policy.credit_terms)
        if len(terms) != 2 or any(
                len(row) != 4 or not 0 <= row[1] <= row[0] <= row[2] <= MAX_FEN
                or not 0 <= row[3] <= MAX_FEN for row in terms):
            raise PolicyError("policy.credit_terms must be two (start, floor, ceiling, step) rows "
                              "with 0 <= floor <= start <= ceiling <= MAX_FEN, 0 <= step <= MAX_FEN")
        if not (0 <= policy.credit_raise_after <= _MAX_ID and 1 <= policy.bill_due_ms <= MAX_MS
                and 0 <= policy.bill_notice_ms < policy.bill_due_ms):
            raise PolicyError("policy credit_raise_after, bill_due_ms or bill_notice_ms is out of "
                              "range")
        self._terms = terms  # per LineKind - 1: (start, floor, ceiling, step)
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
        self._events: list[tuple[int, ...]] = []
        self._requests: list[_Request] = []
        self._returns: list[tuple[int, int]] = []  # RERELEASE records: (session, slot index)
        self._filled_by: dict[int, int] = {}  # booking -> the request it filled
        self._ncmd = 0  # commands run (each money movement records the number of its command)
        self._bills: list[_Bill] = []
        # the ledger: (seq, ncmd, at, patient, source, target, amount, kind, booking, bill)
        self._movements: list[tuple[int, ...]] = []

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

    @property
    def n_requests(self) -> int:
        return len(self._requests)

    def session_counts(self, session: int) -> tuple[int, ...]:
        """Slots by SlotState order (free, held, booked, arrived, no_show, cancelled, blocked,
        returning).  O(capacity)."""
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

    def waitlist_info(self, request: int) -> tuple[Any, ...]:
        """``(account, patient, channel, klass, state, candidates, created_at, deadline,
        changed_at, booking, filled_session, skip_reason)``."""
        return self._request(request).info()

    def session_waitlist(self, session: int) -> list[int]:
        """The OPEN requests listing a session, in fill order (class, then FIFO).  O(queue)."""
        s = self._session(session)
        return [r for fifo in s.fifos for r in fifo
                if self._requests[r].state == RequestState.OPEN]

    def booking_request(self, booking: int) -> int:
        """The request a booking filled, or -1."""
        self._booking(booking)
        return self._filled_by.get(_id(booking, "booking"), -1)

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

    # -- credit introspection ------------------------------------------------

    @property
    def ncmd(self) -> int:
        """Commands run so far (every command that takes ``now`` and passed validation)."""
        return self._ncmd

    @property
    def n_bills(self) -> int:
        return len(self._bills)

    @property
    def n_movements(self) -> int:
        return len(self._movements)

    def wallet(self, patient: int) -> tuple[int, ...]:
        """``(balance, bal_held, kind, state, limit, used, held, streak, n_overdue)``."""
        return self._patient(patient).wallet()

    def check_cover(self, patient: int, amount: int) -> tuple[int, int, int]:
        """``(reason, from_balance, from_credit)``: could ``amount`` be covered now (reason 0),
        and how (the split is reported even when it fails).  O(1)."""
        p = self._patient(patient)
        x = _amount(amount, "amount", 1)
        reason, xb, xc = self._split(p, x)
        return (int(reason), xb, xc)

    def booking_cover(self, booking: int) -> tuple[int, int, int]:
        """``(hold_balance, hold_credit, settled)`` of a booking (settled -1 until charged)."""
        b = self._booking(booking)
        return (b.hold_balance, b.hold_credit, b.settled)

    def request_cover(self, request: int) -> tuple[int, int]:
        """``(hold_balance, hold_credit)`` of a waitlist request."""
        r = self._request(request)
        return (r.hold_balance, r.hold_credit)

    def bill_info(self, bill: int) -> tuple[int, ...]:
        """``(patient, booking, amount, paid, created_at, due_at, state, paid_at)``."""
        return self._bills[_index(bill, "bill", len(self._bills), UnknownBill)].info()

    def patient_bills(self, patient: int) -> list[int]:
        """The patient's bill ids, ascending."""
        return list(self._patient(patient).bills)

    def movements(self, start: int = 0) -> list[tuple[int, ...]]:
        """The ledger from movement ``start`` on (``start`` >= 0; past the end: [])."""
        k = _int(start, "start")
        if k < 0:
            raise InvalidArgument(f"start={k} must be >= 0")
        return self._movements[k:]

    def ledger_totals(self) -> tuple[int, int, int, int]:
        """The sum of every movement per LedgerAccount (EXTERNAL, HOSPITAL, BALANCE, CREDIT):
        each movement takes its amount from its source and adds it to its target.  O(ledger)."""
        totals = [0, 0, 0, 0]
        for m in self._movements:
            totals[m[4]] -= m[6]
            totals[m[5]] += m[6]
        return (totals[0], totals[1], totals[2], totals[3])

    def dump(self) -> dict:
        """The canonical state (layout in the module docstring)."""
        sessions = []
        for s_id, s in enumerate(self._sessions):
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
                "doctor": s.doctor, "waitlist": self.session_waitlist(s_id),
                "recheck_at": s.recheck_at, "scan_k": s.scan_k,
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
            "requests": [r.info() for r in self._requests],
            "returns": list(self._returns),
            "ncmd": self._ncmd,
            "wallets": [(p_id, *p.wallet()) for p_id, p in enumerate(self._patients)
                        if any(p.wallet())],
            "covers": [(b_id, b.hold_balance, b.hold_credit, b.settled)
                       for b_id, b in enumerate(self._bookings)
                       if (b.hold_balance, b.hold_credit, b.settled) != (0, 0, -1)],
            "request_covers": [(r_id, r.hold_balance, r.hold_credit)
                               for r_id, r in enumerate(self._requests)
                               if (r.hold_balance, r.hold_credit) != (0, 0)],
            "bills": [k.info() for k in self._bills],
            "movements": list(self._movements),
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
            "requests": size(self._requests) + sum(size(r) for r in self._requests),
        }

    def rng_next(self) -> int:
        """Advance the splitmix64 generator and return its next 64-bit output."""
        self._rng = (self._rng + 0x9E3779B97F4A7C15) & _MASK64
        z = self._rng
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def drain_events(self) -> list[tuple[int, ...]]:
        """Events since the last drain: ``(kind, at, session, booking, patient, account, detail,
        slot, reason)``."""
        out, self._events = self._events, []
        return out

    def drain_events_array(self) -> dict[str, np.ndarray]:
        """Events since the last drain as numpy columns (keys as in the tuples): int64, except
        ``slot`` int32 and ``reason`` int16."""
        rows = self.drain_events()
        names = ("kind", "at", "session", "booking", "patient", "account", "detail", "slot",
                 "reason")
        types = (np.int64,) * 7 + (np.int32, np.int16)
        return {name: np.array([r[i] for r in rows], dtype=dtype)
                for i, (name, dtype) in enumerate(zip(names, types))}

    # -- id space --------------------------------------------------------------

    def ensure_patients(self, n: int) -> None:
        """Make room for patient ids ``< n`` (never shrinks)."""
        n = _int(n, "n")
        if not 0 <= n <= _MAX_ID:
            raise InvalidArgument(f"n={n} is outside 0..{_MAX_ID}")
        while len(self._patients) < n:
            self._patients.append(_Patient())

    def reserve(self, requests: int) -> None:
        """Check ``requests`` as the core does; lists need no room made ahead."""
        n = _int(requests, "requests")
        most = min(_MAX_RESERVE, _MAX_ID - len(self._tickets))
        if not 0 <= n <= most:
            raise InvalidArgument(f"requests={n} is outside 0..{most}")

    def ensure_accounts(self, n: int) -> None:
        """Make room for account ids ``< n`` (never shrinks)."""
        n = _int(n, "n")
        if not 0 <= n <= _MAX_ID:
            raise InvalidArgument(f"n={n} is outside 0..{_MAX_ID}")
        while len(self._accounts) < n:
            self._accounts.append(_Account())

    # -- validation helpers (raise, change nothing) ----------------------------

    def _session(self, session: object) -> _Session:
        return self._sessions[_index(session, "session", len(self._sessions), UnknownSession)]

    def _booking(self, booking: object) -> _Booking:
        return self._bookings[_index(booking, "booking", len(self._bookings), UnknownBooking)]

    def _patient(self, patient: object) -> _Patient:
        return self._patients[_index(patient, "patient", len(self._patients), UnknownPatient)]

    def _check_account(self, account: object) -> int:
        return _index(account, "account", len(self._accounts), UnknownAccount)

    def _check_channel(self, channel: object) -> int:
        return _index(channel, "channel", self._policy.n_channels, UnknownChannel)

    def _ticket(self, ticket: object) -> _Ticket:
        return self._tickets[_index(ticket, "ticket", len(self._tickets), UnknownTicket)]

    def _request(self, request: object) -> _Request:
        r = _index(request, "request", len(self._requests), UnknownRequest, "waitlist request")
        return self._requests[r]

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

    def _begin(self, now: int) -> None:
        """A command passed validation: count it (``ncmd``), then run the timers due by now."""
        self._ncmd += 1
        self._run_timers(now)

    def _run_timers(self, now: int) -> None:
        """Handle every timer due by ``now`` in (due, seq) order, then set the clock."""
        while self._timers and self._timers[0][0] <= now:
            due, _seq, kind, ident = heapq.heappop(self._timers)
            if kind == TIMER_HOLD_EXPIRE:
                b = self._bookings[ident]
                if b.state == BookingState.HELD and b.hold_until == due:
                    self._expire(ident, due)
                    self._backfill_freed(ident, due)
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
            elif kind == TIMER_SLOW_SERVE:
                if self._tickets[ident].state == TicketState.QUEUED:
                    self._serve(ident, due)
            elif kind == TIMER_WL_EXPIRE:
                r = self._requests[ident]
                if r.state == RequestState.OPEN:
                    r.state = RequestState.EXPIRED
                    r.changed_at = due
                    self._close_request(r)
                    self._release_request(r)
                    self._event(EventKind.WAITLIST_EXPIRED, due, -1, -1, r.patient, r.account,
                                ident)
            elif kind == TIMER_RERELEASE:
                s_id, k = self._returns[ident]
                s = self._sessions[s_id]
                if s.slot_states[k] == SlotState.RETURNING:
                    s.slot_states[k] = SlotState.FREE
                    heapq.heappush(s.free_heap, k)
                    self._event(EventKind.SLOT_RERELEASED, due, s_id, -1, -1, -1, -1, slot=k + 1)
                    self._pass(s_id, due)
            elif kind == TIMER_WL_RECHECK:
                s = self._sessions[ident]
                if s.recheck_at == due:
                    s.recheck_at = -1
                    self._pass(ident, due)
            elif kind == TIMER_NOSHOW_SCAN:
                self._noshow_scan(ident, due)
            elif kind == TIMER_BILL_NOTICE:
                if self._bills[ident].state != BillState.PAID:
                    self._bill_event(EventKind.BILL_DUE_SOON, due, ident)
            else:  # TIMER_BILL_DUE
                self._bill_due(ident, due)
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
        """Serve ticket ``k`` at ``at``: request, eligibility and allocate stages only,
        and no eligibility once the session is full (the ticket lost the lottery)."""
        t = self._tickets[k]
        s = self._sessions[t.session]
        reason = self._request_stage(s, t.channel, at)
        if reason == Reason.NONE and self._lowest_free(s) < 0:
            reason = Reason.FULL
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
            self._event(EventKind.TICKET_FAILED, at, t.session, -1, t.patient, t.account, k,
                        reason=reason)

    def _expire(self, b_id: int, at: int) -> None:
        b = self._bookings[b_id]
        b.state = BookingState.EXPIRED
        b.changed_at = at
        self._release_booking(b)
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
        self._pass(s_id, at)

    def _session_end(self, s_id: int, at: int) -> None:
        s = self._sessions[s_id]
        if s.suspended:
            return
        s.closed = True
        ended: list[int] = []  # patients whose live set shrank, in slot order
        for k in range(s.capacity):
            b_id = s.slot_bookings[k]
            if b_id < 0:
                continue
            b = self._bookings[b_id]
            if b.state == BookingState.BOOKED:
                b.state = BookingState.NO_SHOW
                b.changed_at = at
                self._release_booking(b)
                s.slot_states[k] = SlotState.NO_SHOW
                self._patients[b.patient].live.discard(b_id)
                self._event(EventKind.NO_SHOW, at, s_id, b_id, b.patient, b.account, -1)
                self._strike(b.patient, at, s_id, b_id)
                ended.append(b.patient)
            elif b.state == BookingState.HELD:
                self._expire(b_id, at)  # the session is closed: the slot is only freed
                ended.append(b.patient)
        for p_id in ended:
            self._recheck_patient(p_id, at)

    def _noshow_scan(self, s_id: int, at: int) -> None:
        """NOSHOW_SCAN: release slot ``scan_k`` if its booking did not arrive, scan on."""
        s = self._sessions[s_id]
        if s.suspended or s.closed:
            return
        k = s.scan_k
        b_id = s.slot_bookings[k]
        if b_id >= 0 and self._bookings[b_id].state == BookingState.BOOKED:
            b = self._bookings[b_id]
            b.state = BookingState.NO_SHOW
            b.changed_at = at
            b.end_reason = Reason.SLOT_RELEASED
            self._release_booking(b)
            self._patients[b.patient].live.discard(b_id)
            self._event(EventKind.NO_SHOW, at, s_id, b_id, b.patient, b.account, -1,
                        reason=Reason.SLOT_RELEASED)
            self._strike(b.patient, at, s_id, b_id)
            self._free_slot(b_id)
            self._backfill_freed(b_id, at)
        s.scan_k += 1
        self._push_scan(s_id)

    def _push_scan(self, s_id: int, not_before: int = 0) -> None:
        """Push NOSHOW_SCAN for slot ``scan_k`` if there is one and its due is before the end.

        ``add_capacity`` passes its ``now`` as ``not_before``: a resumed scan
        never runs before the clock, so bookings are created in time order.
        """
        s = self._sessions[s_id]
        due = s.starts_at + s.scan_k * s.slot_ms + self._policy.noshow_grace_ms
        if s.scan_k < s.capacity and due < s.end_at:
            self._push(max(due, not_before), TIMER_NOSHOW_SCAN, s_id)

    # -- shared steps --------------------------------------------------------------

    def _event(self, kind: EventKind, at: int, session: int, booking: int, patient: int,
               account: int, detail: int, *, reason: int = 0, slot: int = 0) -> None:
        """Append an event; ``slot`` is the booking's slot number whenever there is a booking."""
        if booking != -1:
            slot = self._bookings[booking].slot_no
        self._events.append((int(kind), at, session, booking, patient, account, detail, slot,
                             int(reason)))

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

    # -- credit: covers, holds, charges, bills ---------------------------------------

    def _free_credit(self, p: _Patient) -> int:
        return p.limit - p.used - p.held if p.line_state == LineState.OPEN else 0

    def _split(self, p: _Patient, x: int, hb: int = 0, hc: int = 0) -> tuple[Reason, int, int]:
        """How ``x`` is paid: from the free balance plus ``hb``, the rest from ``hc`` plus the
        free credit.  ``(NONE, xb, xc)``, or the reason it cannot be (the split still given).
        With ``hb = hc = 0`` this is the contract's *cover*; with a booking's hold, *charging*."""
        xb = min(x, p.balance - p.bal_held + hb)
        xc = x - xb
        if xc > hc + self._free_credit(p):
            if p.line_state == LineState.SUSPENDED:
                return Reason.CREDIT_SUSPENDED, xb, xc
            return Reason.NO_COVER, xb, xc
        return Reason.NONE, xb, xc

    def _hold(self, p: _Patient, holder: Any, xb: int, xc: int) -> None:
        """A booking or request (holding nothing) now holds ``(xb, xc)`` of p's wallet."""
        holder.hold_balance, holder.hold_credit = xb, xc
        p.bal_held += xb
        p.held += xc

    def _release_booking(self, b: _Booking) -> None:
        self._release(self._patients[b.patient], b)

    def _release_request(self, r: _Request) -> None:
        self._release(self._patients[r.patient], r)

    def _release(self, p: _Patient, holder: Any) -> None:
        """Give a holder's hold back to the wallet; it holds (0, 0) after."""
        p.bal_held -= holder.hold_balance
        p.held -= holder.hold_credit
        holder.hold_balance = holder.hold_credit = 0

    def _pass_hold(self, src: Any, dst: _Booking, fee: int) -> None:
        """``dst`` (a new booking of the same patient) takes ``min(src total, fee)`` of src's
        hold, balance part first; the rest is released; src holds (0, 0) after."""
        amount = min(src.hold_balance + src.hold_credit, fee)
        nb = min(src.hold_balance, amount)
        nc = amount - nb
        p = self._patients[src.patient]
        p.bal_held -= src.hold_balance - nb
        p.held -= src.hold_credit - nc
        dst.hold_balance, dst.hold_credit = nb, nc
        src.hold_balance = src.hold_credit = 0

    def _charge(self, b_id: int, x: int, t: int) -> tuple[Reason, int, int, int]:
        """Charge booking b ``x`` at t: its hold and the free balance first, then its credit
        hold and the free credit (a bill).  ``(reason, xb, xc, bill)``; nothing changes when
        the reason is not NONE."""
        b = self._bookings[b_id]
        p = self._patients[b.patient]
        reason, xb, xc = self._split(p, x, b.hold_balance, b.hold_credit)
        if reason != Reason.NONE:
            return reason, xb, xc, -1
        self._release(p, b)
        bill = -1
        if xb > 0:
            p.balance -= xb
            self._move(t, b.patient, LedgerAccount.BALANCE, LedgerAccount.HOSPITAL, xb,
                       MoveKind.PAY_BALANCE, b_id, -1)
        if xc > 0:
            p.used += xc
            bill = len(self._bills)
            self._move(t, b.patient, LedgerAccount.CREDIT, LedgerAccount.HOSPITAL, xc,
                       MoveKind.PAY_CREDIT, b_id, bill)
            self._new_bill(b_id, xc, t)
        b.settled = x
        return Reason.NONE, xb, xc, bill

    def _move(self, t: int, patient: int, source: int, target: int, amount: int, kind: int,
              booking: int, bill: int) -> None:
        """Append a movement to the ledger, stamped with this command's number."""
        self._movements.append((len(self._movements), self._ncmd, t, patient, int(source),
                                int(target), amount, int(kind), booking, bill))

    def _new_bill(self, b_id: int, amount: int, t: int) -> None:
        """A bill for the credit part of b's charge: BILLED, then its timers."""
        b = self._bookings[b_id]
        k = len(self._bills)
        due = t + self._policy.bill_due_ms
        self._bills.append(_Bill(b.patient, b_id, amount, t, due))
        self._patients[b.patient].bills.append(k)
        self._bill_event(EventKind.BILLED, t, k)
        if self._policy.bill_notice_ms > 0:
            self._push(due - self._policy.bill_notice_ms, TIMER_BILL_NOTICE, k)
        self._push(due, TIMER_BILL_DUE, k)

    def _bill_event(self, kind: EventKind, at: int, k: int) -> None:
        """A bill event: the bill's booking, its session and slot, patient and account."""
        bill = self._bills[k]
        b = self._bookings[bill.booking]
        self._event(kind, at, b.session, bill.booking, bill.patient, b.account, k)

    def _line_event(self, kind: EventKind, at: int, p_id: int, detail: int) -> None:
        """A line event carries only the patient."""
        self._event(kind, at, -1, -1, p_id, -1, detail)

    def _bill_due(self, k: int, at: int) -> None:
        """BILL_DUE: an OPEN bill becomes OVERDUE, the limit is cut, an OPEN line suspended."""
        bill = self._bills[k]
        if bill.state != BillState.OPEN:
            return
        p = self._patients[bill.patient]
        bill.state = BillState.OVERDUE
        p.n_overdue += 1
        p.streak = 0
        self._bill_event(EventKind.BILL_OVERDUE, at, k)
        _, floor, _, step = self._terms[p.kind - 1]
        self._set_limit(bill.patient, max(min(p.limit, max(p.limit - step, floor)),
                                          p.used + p.held), at)
        if p.line_state == LineState.OPEN:
            p.line_state = LineState.SUSPENDED
            self._line_event(EventKind.CREDIT_SUSPENDED, at, bill.patient, k)

    def _set_limit(self, p_id: int, new: int, at: int) -> None:
        p = self._patients[p_id]
        if new != p.limit:
            p.limit = new
            self._line_event(EventKind.LIMIT_CHANGED, at, p_id, new)

    # -- waitlist: backfill ------------------------------------------------------------

    def _backfill_freed(self, b_id: int, t: int) -> None:
        """After freeing b's slot and the command's own bookkeeping: pass, recheck, re-release.

        In a session that is not open (SESSION_END expiring holds) only the
        patient is rechecked: the slot stays FREE in a closed session.
        """
        b = self._bookings[b_id]
        s = self._sessions[b.session]
        is_open = not s.suspended and not s.closed and t < s.end_at
        if is_open:
            self._pass(b.session, t)
        self._recheck_patient(b.patient, t)
        k = b.slot_no - 1
        pol = self._policy
        if is_open and s.slot_states[k] == SlotState.FREE and pol.rerelease_max_ms > 0:
            s.slot_states[k] = SlotState.RETURNING  # its free_heap entry goes stale
            lo, hi = pol.rerelease_min_ms, pol.rerelease_max_ms
            delay = lo if lo == hi else lo + self.rng_next() % (hi - lo + 1)
            self._returns.append((b.session, k))
            self._push(t + delay, TIMER_RERELEASE, len(self._returns) - 1)

    def _recheck_patient(self, p_id: int, t: int) -> None:
        """Pass every candidate of the patient's OPEN requests (a request is taken if it is
        OPEN when reached; all its candidates are passed, in order, repeats included)."""
        self._recheck(self._patients[p_id].requests, t)

    def _recheck_account(self, a: int, t: int) -> None:
        self._recheck(self._accounts[a].requests, t)

    def _recheck(self, request_ids: list[int], t: int) -> None:
        for r_id in request_ids:
            r = self._requests[r_id]
            if r.state != RequestState.OPEN:
                continue
            for s_id in r.candidates:
                self._pass(s_id, t)

    def _pass(self, s_id: int, t: int) -> None:
        """The backfill of one session: fill eligible OPEN requests by class, then FIFO."""
        s = self._sessions[s_id]
        if s.suspended or s.closed or t >= s.end_at or self._lowest_free(s) < 0:
            return
        skipped = False
        clear = _INF
        for klass, fifo in enumerate(s.fifos):
            kept: list[int] = []
            stopped = False
            for i, r_id in enumerate(fifo):
                r = self._requests[r_id]
                if r.state != RequestState.OPEN:
                    continue  # lazy deletion of closed requests
                if self._lowest_free(s) < 0:
                    kept.extend(fifo[i:])
                    stopped = True
                    break
                reason, when = self._fill_check(r, s_id, t)
                if reason == Reason.NONE:
                    self._fill(r_id, s_id, t)
                    continue
                skipped = True
                clear = min(clear, when)
                if reason != r.skip_reason:
                    r.skip_reason = reason
                    self._event(EventKind.WAITLIST_SKIPPED, t, s_id, -1, r.patient, r.account,
                                r_id, reason=reason)
                kept.append(r_id)
            s.fifos[klass] = kept
            if stopped:
                return
        # A WL_RECHECK when a skipped request's reason could clear, unless the live
        # one (stale ones do not count) comes no later.
        pending = s.recheck_at != -1 and s.recheck_at <= clear
        if skipped and clear != _INF and self._lowest_free(s) >= 0 and not pending:
            s.recheck_at = int(clear)
            self._push(s.recheck_at, TIMER_WL_RECHECK, s_id)

    def _fill_check(self, r: _Request, s_id: int, t: int) -> tuple[Reason, float]:
        """The first failing check of an OPEN request for a session at t, and its clear time
        (the earliest time the clock alone could clear it; _INF: only an event can)."""
        s = self._sessions[s_id]
        acc = self._accounts[r.account]
        p = self._patients[r.patient]
        if s.suspended:
            return Reason.SESSION_SUSPENDED, _INF
        if s.closed or t >= s.end_at:
            return Reason.SESSION_CLOSED, _INF
        blocked = [k.blocked_until for k in (acc, p) if t < k.blocked_until]
        if blocked:
            return Reason.BLOCKED, max(blocked)
        flagged = [k.flag_until for k in (acc, p) if t < k.flag_until]
        if flagged:
            return Reason.FLAGGED, max(flagged)
        reason = self._eligibility(r.account, r.patient, s_id, t)
        if reason == Reason.PATIENT_BANNED:
            return reason, p.banned_until
        if reason == Reason.PATIENT_LIMIT:
            for count, window_ms in self._limits:
                counted = [b for b in self._created_since(p.bookings, t - window_ms)
                           if b.state in _COUNTED]
                if len(counted) >= count:  # the first failing row
                    return reason, min((b.created_at + window_ms for b in counted), default=_INF)
        if reason == Reason.ACCOUNT_PATIENT_LIMIT:
            w = self._policy.account_window_ms
            return reason, min(b.created_at + w for b in self._created_since(acc.bookings, t - w))
        if reason != Reason.NONE:  # DUPLICATE_*, FIRST_VISIT_EXPERT
            return reason, _INF
        if self._quota_choice(s, r.channel, t) < 0:
            later = [x for x in (s.release[r.channel], s.release[self._policy.public_channel])
                     if x > t]
            return Reason.QUOTA_EXHAUSTED, min(later, default=_INF)
        return Reason.NONE, _INF

    def _fill(self, r_id: int, s_id: int, t: int) -> None:
        """Book the lowest FREE slot of s for request r (BOOKED, r's channel) and close r."""
        r = self._requests[r_id]
        s = self._sessions[s_id]
        q = self._quota_choice(s, r.channel, t)
        b_id = self._new_booking(s_id, r.patient, r.account, r.channel, q, False, t)
        # the booking keeps what its fee needs of r's hold (no new cover), the rest goes back
        self._pass_hold(r, self._bookings[b_id], s.fee)
        r.state = RequestState.FILLED
        r.booking = b_id
        r.filled_session = s_id
        r.changed_at = t
        self._close_request(r)
        self._filled_by[b_id] = r_id
        self._event(EventKind.WAITLIST_FILLED, t, s_id, b_id, r.patient, r.account, r_id)
        self._many_patients_signal(r.account, t)

    def _close_request(self, r: _Request) -> None:
        """A request stops being OPEN: its candidates' open counts go down (FIFOs are lazy)."""
        for s_id in r.candidates:
            self._sessions[s_id].open -= 1

    def _new_request(self, a: int, p_id: int, c: int, klass: int, candidates: tuple[int, ...],
                     deadline: int, now: int) -> int:
        """A new OPEN request at the tail of its class in every candidate; WL_EXPIRE pushed."""
        r_id = len(self._requests)
        self._requests.append(_Request(a, p_id, c, klass, candidates, now, deadline, now))
        self._patients[p_id].requests.append(r_id)
        self._accounts[a].requests.append(r_id)
        for s_id in candidates:
            s = self._sessions[s_id]
            s.fifos[klass].append(r_id)
            s.open += 1
        self._push(deadline, TIMER_WL_EXPIRE, r_id)
        return r_id

    def _quota_choice(self, s: _Session, c: int, now: int) -> int:
        """The quota a request of channel c draws from at now, or -1 (QUOTA_EXHAUSTED)."""
        pub = self._policy.public_channel
        if now >= s.release[c] and s.quota_left[c] > 0:
            return c
        if now >= s.release[pub] and s.quota_left[pub] > 0:
            return pub
        return -1

    def _move_quota(self, s: _Session, c: int) -> int:
        """The quota a move off a suspended session draws from (release times ignored), or -1."""
        pub = self._policy.public_channel
        if s.quota_left[c] > 0:
            return c
        if s.quota_left[pub] > 0:
            return pub
        return -1

    def _new_booking(self, s_id: int, p_id: int, a: int, c: int, q: int, hold: bool,
                     now: int) -> int:
        """Take the lowest FREE slot (there must be one) from quota q for a new booking."""
        s = self._sessions[s_id]
        k = self._lowest_free(s)
        assert k >= 0 and s.quota_left[q] > 0
        s.quota_left[q] -= 1
        b_id = len(self._bookings)
        state = BookingState.HELD if hold else BookingState.BOOKED
        hold_until = now + self._policy.hold_ms if hold else 0
        self._bookings.append(_Booking(s_id, k + 1, p_id, a, c, q, state, now, now, hold_until))
        heapq.heappop(s.free_heap)  # k is the top after _lowest_free
        s.slot_states[k] = _SLOT_OF[state]
        s.slot_bookings[k] = b_id
        self._patients[p_id].live.add(b_id)
        self._patients[p_id].bookings.append(b_id)
        self._accounts[a].bookings.append(b_id)
        return b_id

    def _many_patients_signal(self, a: int, now: int) -> None:
        pol = self._policy
        acc = self._accounts[a]
        if pol.patients_flag_count > 0:
            recent = {b.patient for b in self._created_since(acc.bookings,
                                                             now - pol.patients_flag_window_ms)}
            if len(recent) >= pol.patients_flag_count and not now < acc.flag_until:
                self._auto_flag(a, FlagReason.MANY_PATIENTS, now)

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
        """The bookings among ``ids`` with ``created_at > after``, newest id first.

        A full scan, O(len(ids)): the plain reading of the contract.
        """
        return [b for b in (self._bookings[x] for x in reversed(ids)) if b.created_at > after]

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
        self._begin(self._check_now(now))

    def add_session(self, hospital: int, department: int, tier: int, day: int, starts_at: int,
                    end_at: int, rollover_at: int, cancel_cutoff_at: int, slot_ms: int,
                    capacity: int, fee: int, quotas: Sequence[int], release: Sequence[int],
                    now: int, doctor: int = -1) -> int:
        """Add a session with ``capacity`` FREE slots; returns its id.  O(capacity).

        ``doctor`` is an opaque label (-1 none) that suspension moves look for.
        """
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
        doctor = _int(doctor, "doctor")
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
        if not -1 <= doctor <= _MAX_LABEL:
            raise InvalidArgument(f"doctor={doctor} must be -1 or in 0..{_MAX_LABEL}")
        now = self._check_now(now)
        self._begin(now)
        s_id = len(self._sessions)
        self._sessions.append(_Session(
            hospital, department, tier, day, starts_at, end_at, rollover_at, cancel_cutoff_at,
            slot_ms, fee, list(quotas), list(release), list(quotas),
            [SlotState.FREE] * capacity, [-1] * capacity, list(range(capacity)),
            doctor=doctor, fifos=[[] for _ in range(self._policy.wl_classes + 1)],
        ))
        self._push(rollover_at, TIMER_ROLLOVER, s_id)
        self._push(end_at, TIMER_SESSION_END, s_id)
        if self._policy.noshow_grace_ms > 0:
            self._push_scan(s_id)
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
        self._begin(now)
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
        if self._lowest_free(s) < 0:  # RETURNING slots are not FREE
            return Result(Status.REJECTED, Reason.FULL, session=s_id)
        q = self._quota_choice(s, c, now)
        if q < 0:
            return Result(Status.REJECTED, Reason.QUOTA_EXHAUSTED, session=s_id)
        xb = xc = 0
        if pol.cover and s.fee > 0:  # the credit stage: the fee must be covered, and is held
            reason, xb, xc = self._split(self._patients[p_id], s.fee)
            if reason != Reason.NONE:
                return Result(Status.REJECTED, reason, session=s_id)
        b_id = self._new_booking(s_id, p_id, a, c, q, hold, now)
        self._hold(self._patients[p_id], self._bookings[b_id], xb, xc)
        k = self._bookings[b_id].slot_no - 1
        if hold:
            self._push(self._bookings[b_id].hold_until, TIMER_HOLD_EXPIRE, b_id)
        self._many_patients_signal(a, now)
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
            self._begin(times[i])
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
        self._begin(now)
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
        self._begin(now)
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
        self._release_booking(b)
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
        self._backfill_freed(b_id, now)
        return self._result_for(Status.CANCELLED, Reason.NONE, b_id)

    def cancel_ticket(self, ticket: int, account: int, now: int) -> Result:
        """Withdraw a QUEUED ticket of this account.  O(1)."""
        t = self._ticket(ticket)
        k = _id(ticket, "ticket")
        a = self._check_account(account)
        now = self._check_now(now)
        self._begin(now)
        if t.account != a:
            return Result(Status.REJECTED, Reason.NOT_OWNER, session=t.session, ticket=k)
        if t.state != TicketState.QUEUED:
            return Result(Status.REJECTED, Reason.NOT_ACTIVE, session=t.session, ticket=k)
        t.state = TicketState.CANCELLED
        self._patients[t.patient].queued.discard(k)
        return Result(Status.CANCELLED, Reason.NONE, session=t.session, ticket=k)

    # -- waitlist --------------------------------------------------------------------

    def join_waitlist(self, account: int, patient: int, sessions: Any, channel: int,
                      klass: int, deadline: int, now: int) -> Result:
        """Wait for a slot in any one of ``sessions`` until ``deadline`` (WAITLISTED), or say
        at which check the request stopped.  O(candidates x patient's requests)."""
        a = self._check_account(account)
        p_id = _id(patient, "patient")
        self._patient(p_id)
        if isinstance(sessions, (str, bytes)) or not hasattr(sessions, "__len__"):
            raise InvalidType("sessions must be a sequence of session ids")
        cands = []
        for x in sessions:
            self._session(x)
            cands.append(_id(x, "sessions"))
        c = self._check_channel(channel)
        most = self._policy.wl_candidates
        if not 1 <= len(cands) <= most:
            raise InvalidArgument(f"a request names 1..{most} sessions, not {len(cands)}")
        if len(set(cands)) != len(cands):
            raise InvalidArgument("a request names each session once")
        k = _int(klass, "klass")
        if not 1 <= k <= self._policy.wl_classes:
            raise InvalidArgument(f"klass={k} is outside 1..{self._policy.wl_classes}")
        until = self._until(deadline, "deadline")
        now = self._check_now(now)
        if until <= now:
            raise InvalidArgument("deadline must be later than now")
        self._begin(now)
        return self._join(a, p_id, tuple(cands), c, k, until, now)

    def _join(self, a: int, p_id: int, cands: tuple[int, ...], c: int, klass: int,
              deadline: int, now: int) -> Result:
        """The join path: request -> risk -> eligibility -> allocate, first failure wins."""
        pol = self._policy
        pub = pol.public_channel
        p = self._patients[p_id]
        acc = self._accounts[a]

        def reject(reason: Reason, s_id: int | None = None) -> Result:
            return Result(Status.REJECTED, reason, session=s_id)

        # 1. request stage
        for s_id in cands:
            s = self._sessions[s_id]
            if s.suspended:
                return reject(Reason.SESSION_SUSPENDED, s_id)
            if s.closed or now >= s.end_at:
                return reject(Reason.SESSION_CLOSED, s_id)
            if now < s.release[c] and now < s.release[pub]:
                return reject(Reason.NOT_RELEASED, s_id)
        # 2. risk stage (flagged keys may join; fills skip them while flagged)
        if now < acc.blocked_until or now < p.blocked_until:
            return reject(Reason.BLOCKED)
        # 3. eligibility stage
        if now < p.banned_until:
            return reject(Reason.PATIENT_BANNED)
        mine = [self._requests[r] for r in p.requests
                if self._requests[r].state == RequestState.OPEN]
        for s_id in cands:
            if any(self._bookings[b].session == s_id for b in p.live):
                return reject(Reason.DUPLICATE_SESSION, s_id)
            if any(s_id in r.candidates for r in mine):
                return reject(Reason.DUPLICATE_WAITLIST, s_id)
        if len(mine) >= pol.wl_per_patient:
            return reject(Reason.WAITLIST_PATIENT_CAP)
        # 4. allocate stage
        for s_id in cands:
            s = self._sessions[s_id]
            if self._lowest_free(s) >= 0 and self._quota_choice(s, c, now) >= 0:
                return reject(Reason.SLOTS_LEFT, s_id)
        for s_id in cands:
            if self._sessions[s_id].open >= pol.wl_session_cap:
                return reject(Reason.WAITLIST_FULL, s_id)
        # 5. credit stage: the largest candidate fee is covered, and held while it waits
        xb = xc = 0
        fee = max(self._sessions[s_id].fee for s_id in cands)
        if pol.cover and fee > 0:
            reason, xb, xc = self._split(p, fee)
            if reason != Reason.NONE:
                return reject(reason)
        r_id = self._new_request(a, p_id, c, klass, cands, deadline, now)
        self._hold(p, self._requests[r_id], xb, xc)
        # A candidate can have a FREE slot here only if this channel may not draw from it
        # yet: the pass records the skip and schedules the recheck at the release.
        for s_id in cands:
            self._pass(s_id, now)
        return Result(Status.WAITLISTED, Reason.NONE, request=r_id)

    def cancel_waitlist(self, request: int, account: int, now: int) -> Result:
        """Withdraw an OPEN request of this account.  O(candidates)."""
        r = self._request(request)
        r_id = _id(request, "request")
        a = self._check_account(account)
        now = self._check_now(now)
        self._begin(now)
        if r.account != a:
            return Result(Status.REJECTED, Reason.NOT_OWNER, request=r_id)
        if r.state != RequestState.OPEN:
            return Result(Status.REJECTED, Reason.NOT_ACTIVE, request=r_id)
        r.state = RequestState.CANCELLED
        r.changed_at = now
        self._close_request(r)
        self._release_request(r)
        return Result(Status.CANCELLED, Reason.NONE, request=r_id)

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
        self._begin(now)
        self._flag(kind, key, r, u, now)

    def unflag(self, kind: int, key: int, now: int) -> bool:
        """End a live flag now; False if the key was not flagged."""
        kind, key = self._kind_key(kind, key)
        now = self._check_now(now)
        self._begin(now)
        obj: Any = self._accounts[key] if kind == 0 else self._patients[key]
        if not now < obj.flag_until:
            return False
        obj.flag_until = now
        self._flag_log.append((now, kind, key, 0, now))
        self._party_event(EventKind.UNFLAGGED, now, kind, key, -1)
        self._recheck_key(kind, key, now)
        return True

    def block(self, kind: int, key: int, until: int, now: int) -> None:
        """Refuse the key's requests (BLOCKED) until ``until`` (never shortens a block)."""
        kind, key = self._kind_key(kind, key)
        u = self._until(until)
        now = self._check_now(now)
        if u <= now:
            raise InvalidArgument("until must be later than now")
        self._begin(now)
        obj: Any = self._accounts[key] if kind == 0 else self._patients[key]
        obj.blocked_until = max(obj.blocked_until, u)
        self._flag_log.append((now, kind, key, -1, u))
        self._party_event(EventKind.BLOCKED, now, kind, key, -1)

    def unblock(self, kind: int, key: int, now: int) -> bool:
        """Lift a live block; False if there was none."""
        kind, key = self._kind_key(kind, key)
        now = self._check_now(now)
        self._begin(now)
        obj: Any = self._accounts[key] if kind == 0 else self._patients[key]
        if not now < obj.blocked_until:
            return False
        obj.blocked_until = 0
        self._party_event(EventKind.UNBLOCKED, now, kind, key, -1)
        self._recheck_key(kind, key, now)
        return True

    def _recheck_key(self, kind: int, key: int, now: int) -> None:
        if kind == 0:
            self._recheck_account(key, now)
        else:
            self._recheck_patient(key, now)

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
        self._begin(now)
        for k, key_id, u in rows:
            self._flag(k, key_id, FlagReason.BLACKLIST, u, now)

    def check_in(self, booking: int, now: int) -> Result:
        """BOOKED -> ARRIVED; the patient becomes known at the hospital.  O(1)."""
        b = self._booking(booking)
        now = self._check_now(now)
        self._begin(now)
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
        held = b.hold_balance + b.hold_credit
        if self._policy.settle_at_check_in and held > 0:
            reason = self._charge(b_id, held, now)[0]  # what it holds: cannot fail
            assert reason == Reason.NONE
        self._recheck_patient(b.patient, now)
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
        self._begin(now)
        first = s.capacity
        s.slot_states.extend([SlotState.FREE] * n)
        s.slot_bookings.extend([-1] * n)
        for k in range(first, first + n):
            heapq.heappush(s.free_heap, k)
        q = self._policy.public_channel if s.rolled else c
        s.quota_left[q] += n
        self._event(EventKind.CAPACITY_ADDED, now, s_id, -1, -1, -1, n)
        if self._policy.noshow_grace_ms > 0 and s.scan_k == first:
            self._push_scan(s_id, now)  # the scan had run out of slots, not out of time
        self._pass(s_id, now)
        return s.capacity

    def suspend(self, session: int, now: int) -> int:
        """Stop a session: each live booking leaves it (cancelled, moved or waitlisted, per
        ``suspend_action``), its open slots are cancelled; returns how many left."""
        s = self._session(session)
        s_id = _id(session, "session")
        now = self._check_now(now)
        self._begin(now)
        if s.suspended:
            return 0
        action = self._policy.suspend_action
        left: list[int] = []  # patients of the bookings that left, in slot order
        for k in range(s.capacity):
            b_id = s.slot_bookings[k]
            if b_id < 0:
                continue
            b = self._bookings[b_id]
            if b.state not in _LIVE:
                continue
            was_booked = b.state == BookingState.BOOKED
            b.state = BookingState.CANCELLED
            b.changed_at = now
            b.end_reason = Reason.SESSION_SUSPENDED
            self._patients[b.patient].live.discard(b_id)
            left.append(b.patient)
            if was_booked and action != 0 and self._move_or_wait(s_id, b_id, now):
                continue
            self._release_booking(b)
            self._event(EventKind.BOOKING_CANCELLED, now, s_id, b_id, b.patient, b.account,
                        int(Reason.SESSION_SUSPENDED), reason=Reason.SESSION_SUSPENDED)
        for k in range(s.capacity):
            if s.slot_states[k] not in (SlotState.ARRIVED, SlotState.NO_SHOW):
                s.slot_states[k] = SlotState.CANCELLED  # RETURNING ones too
                s.slot_bookings[k] = -1
        s.free_heap.clear()
        s.quota_left = [0] * len(s.quota_left)
        s.suspended = True
        self._event(EventKind.SESSION_SUSPENDED, now, s_id, -1, -1, -1, len(left))
        for p_id in left:
            self._recheck_patient(p_id, now)
        return len(left)

    def _move_or_wait(self, s_id: int, b_id: int, now: int) -> bool:
        """A BOOKED booking of a suspended session: move it (action 1) or make a class-0
        request for it; False if neither is possible (then it is plainly cancelled)."""
        b = self._bookings[b_id]
        if self._policy.suspend_action == 1:
            target = self._move_target(s_id, b, now)
            if target >= 0:
                q = self._move_quota(self._sessions[target], b.channel)
                new = self._new_booking(target, b.patient, b.account, b.channel, q, False, now)
                # no new cover: the new booking keeps what the target's fee needs of the old
                # hold, the rest goes back
                self._pass_hold(b, self._bookings[new], self._sessions[target].fee)
                self._event(EventKind.BOOKING_MOVED, now, target, new, b.patient, b.account,
                            b_id)
                return True
        cands = self._related(s_id, b, now)[:self._policy.wl_candidates]
        if not cands:
            return False
        deadline = max(self._sessions[x].end_at for x in cands)
        r_id = self._new_request(b.account, b.patient, b.channel, 0, tuple(cands), deadline, now)
        r = self._requests[r_id]  # the booking's hold passes whole to the request
        r.hold_balance, r.hold_credit = b.hold_balance, b.hold_credit
        b.hold_balance = b.hold_credit = 0
        self._event(EventKind.BOOKING_WAITLISTED, now, s_id, b_id, b.patient, b.account, r_id)
        return True

    def _related(self, s_id: int, b: _Booking, now: int) -> list[int]:
        """Sessions b's patient could go to instead of s: other, neither suspended nor closed,
        no live booking of the patient; same doctor first, then same department, each by
        ``|starts_at - s.starts_at|`` then id."""
        s = self._sessions[s_id]
        mine = {self._bookings[x].session for x in self._patients[b.patient].live}
        doctor, department = [], []
        for o_id, o in enumerate(self._sessions):
            if (o_id == s_id or o.suspended or o.closed or now >= o.end_at
                    or o_id in mine):
                continue
            if s.doctor >= 0 and o.doctor == s.doctor:
                doctor.append(o_id)
            elif o.department == s.department:
                department.append(o_id)

        def near(o_id: int) -> tuple[int, int]:
            return (abs(self._sessions[o_id].starts_at - s.starts_at), o_id)
        return sorted(doctor, key=near) + sorted(department, key=near)

    def _move_target(self, s_id: int, b: _Booking, now: int) -> int:
        """The nearest related session with a FREE slot and a move quota: same doctor if any
        qualifies, else same department; -1 if none."""
        for o_id in self._related(s_id, b, now):  # same doctor first, each group nearest first
            o = self._sessions[o_id]
            if self._lowest_free(o) >= 0 and self._move_quota(o, b.channel) >= 0:
                return o_id
        return -1

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
        self._begin(now)
        if s.slot_states[k - 1] != old:
            return False
        s.slot_states[k - 1] = new
        if new == SlotState.FREE:
            heapq.heappush(s.free_heap, k - 1)
            self._pass(_id(session, "session"), now)
        return True

    def mark_known(self, patient: int, hospital: int, now: int) -> None:
        """``(patient, hospital)`` becomes known (a registered, returning patient)."""
        p = _id(patient, "patient")
        self._patient(p)
        h = _int(hospital, "hospital")
        if not 0 <= h <= _MAX_LABEL:
            raise InvalidArgument(f"hospital={h} is outside 0..{_MAX_LABEL}")
        now = self._check_now(now)
        self._begin(now)
        self._known.add((p, h))
        self._recheck_patient(p, now)

    # -- money commands (issue 5) ----------------------------------------------------
    #
    # Validation: ids, then amounts, kinds and limits (types before values), then now,
    # then state checks on the state before timers (InvalidState).  Then the command is
    # counted and the timers run.

    def _wallet_of(self, patient: object) -> tuple[int, _Patient]:
        p_id = _id(patient, "patient")
        return p_id, self._patient(p_id)

    def top_up(self, patient: int, amount: int, now: int) -> int:
        """Add ``amount`` (1..MAX_FEN) to the prepaid balance (never past 10**15); returns the
        balance.  Movement TOP_UP (EXTERNAL -> BALANCE).  O(1)."""
        p_id, p = self._wallet_of(patient)
        x = _amount(amount, "amount", 1)
        if p.balance + x > _MAX_BALANCE:
            raise InvalidArgument(f"a balance may not pass {_MAX_BALANCE} fen")
        now = self._check_now(now)
        self._begin(now)
        p.balance += x
        self._move(now, p_id, LedgerAccount.EXTERNAL, LedgerAccount.BALANCE, x, MoveKind.TOP_UP,
                   -1, -1)
        return p.balance

    def refund(self, patient: int, amount: int, now: int) -> tuple[int, int]:
        """Pay ``amount`` (1..MAX_FEN, at most the balance) back out of the free balance;
        returns ``(reason, balance)``: 0, or NO_COVER when the free balance after the
        timers is short (a ticket served by them may have held some), refunding nothing.
        Movement REFUND (BALANCE -> EXTERNAL).  O(1)."""
        p_id, p = self._wallet_of(patient)
        x = _amount(amount, "amount", 1)
        if x > p.balance:
            raise InvalidArgument(f"amount={x} is more than the balance {p.balance}")
        now = self._check_now(now)
        self._begin(now)
        if x > p.balance - p.bal_held:
            return int(Reason.NO_COVER), p.balance
        p.balance -= x
        self._move(now, p_id, LedgerAccount.BALANCE, LedgerAccount.EXTERNAL, x, MoveKind.REFUND,
                   -1, -1)
        return 0, p.balance

    def open_line(self, patient: int, kind: int, limit: int, now: int) -> None:
        """Open (or reopen a CLOSED) credit line of ``kind`` (LineKind) with ``limit`` (-1: the
        kind's start).  InvalidState if a line is OPEN or SUSPENDED.  O(1)."""
        p_id, p = self._wallet_of(patient)
        k = _int(kind, "kind")
        if k not in (1, 2):
            raise InvalidArgument(f"kind={k} must be 1 (outpatient) or 2 (inpatient)")
        lim = _int(limit, "limit")
        if lim != -1 and not 0 <= lim <= MAX_FEN:
            raise InvalidArgument(f"limit={lim} must be -1 or in 0..{MAX_FEN}")
        now = self._check_now(now)
        if p.line_state in (LineState.OPEN, LineState.SUSPENDED):
            raise InvalidState(f"patient {p_id} already has a credit line")
        self._begin(now)
        p.kind = k
        p.limit = self._terms[k - 1][0] if lim == -1 else lim
        p.line_state = LineState.OPEN
        p.streak = 0
        p.n_overdue = 0

    def close_line(self, patient: int, now: int) -> bool:
        """Close an OPEN or SUSPENDED line with nothing used or held on it; False (nothing
        changes) if a ticket served by this command's timers took a hold on it.  O(1)."""
        p_id, p = self._wallet_of(patient)
        now = self._check_now(now)
        if p.line_state not in (LineState.OPEN, LineState.SUSPENDED):
            raise InvalidState(f"patient {p_id} has no open credit line")
        if p.used + p.held > 0:
            raise InvalidState(f"patient {p_id} still uses or holds {p.used + p.held} fen")
        self._begin(now)
        if p.used + p.held > 0:
            return False
        p.line_state = LineState.CLOSED
        return True

    def set_limit(self, patient: int, limit: int, now: int) -> int:
        """Set the limit (0..MAX_FEN), never below used + held; LIMIT_CHANGED if it changes.
        Returns the limit.  InvalidState without an OPEN or SUSPENDED line.  O(1)."""
        p_id, p = self._wallet_of(patient)
        lim = _amount(limit, "limit", 0)
        now = self._check_now(now)
        if p.line_state in (LineState.NONE, LineState.CLOSED):
            raise InvalidState(f"patient {p_id} has no open credit line")
        self._begin(now)
        self._set_limit(p_id, max(lim, p.used + p.held), now)
        return p.limit

    def repay(self, patient: int, amount: int, now: int) -> int:
        """Repay ``amount`` (1..MAX_FEN, at most ``used``) of the unpaid bills, oldest first;
        returns how many were paid in full.  O(patient's bills)."""
        p_id, p = self._wallet_of(patient)
        x = _amount(amount, "amount", 1)
        if x > p.used:
            raise InvalidArgument(f"amount={x} is more than the {p.used} fen owed")
        now = self._check_now(now)
        self._begin(now)
        rest = x
        paid = 0
        for k in p.bills:
            if rest == 0:
                break
            bill = self._bills[k]
            if bill.state == BillState.PAID:
                continue
            pay = min(rest, bill.amount - bill.paid)
            bill.paid += pay
            p.used -= pay
            rest -= pay
            self._move(now, p_id, LedgerAccount.EXTERNAL, LedgerAccount.CREDIT, pay,
                       MoveKind.REPAY, -1, k)  # with the bill (booking -1)
            if bill.paid < bill.amount:
                continue
            on_time = bill.state == BillState.OPEN
            bill.state = BillState.PAID
            bill.paid_at = now
            paid += 1
            self._bill_event(EventKind.BILL_PAID, now, k)
            if on_time:
                p.streak += 1
                after = self._policy.credit_raise_after
                if after > 0 and p.streak >= after:
                    p.streak = 0
                    _, _, ceiling, step = self._terms[p.kind - 1]
                    # (never lowers a host's limit above the ceiling: see the readings)
                    self._set_limit(p_id, max(p.limit, min(p.limit + step, ceiling)), now)
            else:
                p.n_overdue -= 1
                if p.n_overdue == 0 and p.line_state == LineState.SUSPENDED:
                    p.line_state = LineState.OPEN
                    self._line_event(EventKind.CREDIT_REINSTATED, now, p_id, -1)
        return paid

    def settle(self, booking: int, amount: int, now: int) -> tuple[int, int, int, int]:
        """Charge an ARRIVED, unsettled booking ``amount`` (0..MAX_FEN): balance first (its
        hold included), the rest billed to the line.  Returns ``(code, from_balance,
        from_credit, bill)`` with ``code = status | reason << 8``: ARRIVED | NONE, or REJECTED |
        NO_COVER / CREDIT_SUSPENDED (then nothing changes; the split is what would have been
        taken, bill -1).  O(1)."""
        b = self._booking(booking)
        b_id = _id(booking, "booking")
        x = _amount(amount, "amount", 0)
        now = self._check_now(now)
        if b.state != BookingState.ARRIVED:
            raise InvalidState(f"booking {b_id} has not arrived")
        if b.settled >= 0:
            raise InvalidState(f"booking {b_id} is already settled")
        self._begin(now)
        reason, xb, xc, bill = self._charge(b_id, x, now)
        if reason != Reason.NONE:
            return (int(Status.REJECTED) | int(reason) << 8, xb, xc, -1)
        return (int(Status.ARRIVED), xb, xc, bill)

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
            returning = counts[SlotState.RETURNING]
            # Every change moves a FREE/BLOCKED/RETURNING slot and one unit of quota together.
            assert sum(s.quota_left) == free + blocked + returning, \
                "quota does not match open slots"
            if s.suspended:
                assert free == 0 and returning == 0 and sum(s.quota_left) == 0
            if s.rolled:  # rolled quota and everything returned later sits in public
                assert all(q == 0 for c, q in enumerate(s.quota_left) if c != pub)
        for b_id, b in enumerate(self._bookings):
            if b.state == BookingState.NO_SHOW and b.end_reason == Reason.SLOT_RELEASED:
                assert b_id not in on_slot, f"released no-show {b_id} still on its slot"
            elif b.state in _SLOT_OF:
                assert on_slot.get(b_id) == (b.session, b.slot_no), f"booking {b_id} lost its slot"
        for p_id, p in enumerate(self._patients):
            want = {b for b in p.bookings if self._bookings[b].state in _LIVE}
            assert p.live == want, f"patient {p_id} live set {p.live} != {want}"
            assert p.bookings == sorted(p.bookings), "bookings out of id order"
            assert len(p.strikes) <= len(self._ban_ms)
            assert len(p.cancels) <= max(self._policy.cancel_strikes, 0)
        for due, seq, kind, ident in self._timers:
            assert 0 <= seq < self._seq and 1 <= kind <= 12
        self._check_fair_invariants()
        self._check_waitlist_invariants()
        self._check_credit_invariants()

    def _check_credit_invariants(self) -> None:
        """Wallets, holds, bills and the ledger (docs/semantics.md, "The ledger")."""
        pol = self._policy
        n_p = len(self._patients)
        # money conservation: every movement takes from one account what it adds to another
        assert sum(self.ledger_totals()) == 0
        bal_sum, credit_sum = [0] * n_p, [0] * n_p
        hospital = 0
        for i, (seq, ncmd, at, p_id, src, dst, amount, kind, b_id, k) in \
                enumerate(self._movements):
            assert seq == i and 1 <= ncmd <= self._ncmd and at <= self._now and amount > 0
            assert (src, dst) == {
                MoveKind.TOP_UP: (LedgerAccount.EXTERNAL, LedgerAccount.BALANCE),
                MoveKind.PAY_BALANCE: (LedgerAccount.BALANCE, LedgerAccount.HOSPITAL),
                MoveKind.PAY_CREDIT: (LedgerAccount.CREDIT, LedgerAccount.HOSPITAL),
                MoveKind.REPAY: (LedgerAccount.EXTERNAL, LedgerAccount.CREDIT),
                MoveKind.REFUND: (LedgerAccount.BALANCE, LedgerAccount.EXTERNAL)}[MoveKind(kind)]
            for acc, sign in ((src, -1), (dst, 1)):
                if acc == LedgerAccount.BALANCE:
                    bal_sum[p_id] += sign * amount
                elif acc == LedgerAccount.CREDIT:
                    credit_sum[p_id] += sign * amount
                elif acc == LedgerAccount.HOSPITAL:
                    hospital += sign * amount
            if kind in (MoveKind.PAY_BALANCE, MoveKind.PAY_CREDIT):
                assert self._bookings[b_id].patient == p_id and self._bookings[b_id].settled >= 0
            if kind == MoveKind.PAY_CREDIT:
                assert self._bills[k].patient == p_id and self._bills[k].booking == b_id
            elif kind == MoveKind.REPAY:
                assert self._bills[k].patient == p_id and b_id == -1
            else:
                assert k == -1
            if kind in (MoveKind.TOP_UP, MoveKind.REFUND):
                assert b_id == -1
        assert hospital == sum(b.settled for b in self._bookings if b.settled >= 0), \
            "HOSPITAL total != sum of settled"
        # holds: each patient's held amounts are the holds of its live holders
        bal_held, held = [0] * n_p, [0] * n_p
        for b_id, b in enumerate(self._bookings):
            assert b.hold_balance >= 0 and b.hold_credit >= 0 and b.settled >= -1
            live = b.state in _LIVE or (b.state == BookingState.ARRIVED and b.settled < 0)
            if not live:
                assert (b.hold_balance, b.hold_credit) == (0, 0), f"booking {b_id} still holds"
            if b.settled >= 0:
                assert b.state == BookingState.ARRIVED
            bal_held[b.patient] += b.hold_balance
            held[b.patient] += b.hold_credit
        for r_id, r in enumerate(self._requests):
            assert r.hold_balance >= 0 and r.hold_credit >= 0
            if r.state != RequestState.OPEN:
                assert (r.hold_balance, r.hold_credit) == (0, 0), f"request {r_id} still holds"
            bal_held[r.patient] += r.hold_balance
            held[r.patient] += r.hold_credit
        if not pol.cover:
            assert not any(bal_held) and not any(held), "a hold without Policy.cover"
        # bills
        unpaid, overdue = [0] * n_p, [0] * n_p
        due_timers = {ident for _, _, kind, ident in self._timers if kind == TIMER_BILL_DUE}
        for k, bill in enumerate(self._bills):
            assert k in self._patients[bill.patient].bills
            assert 0 <= bill.paid <= bill.amount and bill.amount > 0
            assert bill.due_at == bill.created_at + pol.bill_due_ms
            assert (bill.state == BillState.PAID) == (bill.paid == bill.amount)
            assert (bill.state == BillState.PAID) == (bill.paid_at >= 0)
            if bill.state == BillState.OPEN:
                assert k in due_timers, f"open bill {k} never falls due"
            elif bill.state == BillState.OVERDUE:
                overdue[bill.patient] += 1
            unpaid[bill.patient] += bill.amount - bill.paid
        for p_id, p in enumerate(self._patients):
            assert p.bills == sorted(p.bills)
            assert bal_sum[p_id] == p.balance, f"patient {p_id}: BALANCE movements != balance"
            assert credit_sum[p_id] == -p.used, f"patient {p_id}: CREDIT movements != -used"
            assert unpaid[p_id] == p.used, f"patient {p_id}: used != unpaid bills"
            assert (p.bal_held, p.held) == (bal_held[p_id], held[p_id]), \
                f"patient {p_id}: held {(p.bal_held, p.held)} != holds {(bal_held[p_id], held[p_id])}"
            assert 0 <= p.bal_held <= p.balance <= _MAX_BALANCE
            assert p.used >= 0 and p.held >= 0 and p.streak >= 0
            assert p.used + p.held <= p.limit, f"patient {p_id}: used + held > limit"
            assert p.n_overdue == overdue[p_id]
            assert (p.line_state == LineState.SUSPENDED) == (p.n_overdue > 0)
            if p.kind == 0:
                assert p.line_state == LineState.NONE and p.limit == 0
            else:
                assert p.kind in (1, 2) and p.line_state != LineState.NONE
            if p.line_state == LineState.CLOSED:
                assert p.used == p.held == 0
            if pol.credit_raise_after > 0:
                assert p.streak < pol.credit_raise_after

    def _check_waitlist_invariants(self) -> None:
        pol = self._policy
        nreq = len(self._requests)
        open_count = [0] * len(self._sessions)
        for r_id, r in enumerate(self._requests):
            assert 0 <= r.klass <= pol.wl_classes and r.candidates
            assert len(set(r.candidates)) == len(r.candidates)
            # (changed_at may precede created_at: see the readings on late timers)
            assert r.created_at < r.deadline
            assert r_id in self._patients[r.patient].requests
            assert r_id in self._accounts[r.account].requests
            if r.state == RequestState.OPEN:
                for s_id in r.candidates:
                    open_count[s_id] += 1
                    assert r_id in self._sessions[s_id].fifos[r.klass], \
                        f"open request {r_id} left the queue of session {s_id}"
                assert r.booking == -1 and r.filled_session == -1
                assert (r.deadline, TIMER_WL_EXPIRE, r_id) in {
                    (d, k, i) for d, _, k, i in self._timers}, f"request {r_id} never expires"
            elif r.state == RequestState.FILLED:
                b = self._bookings[r.booking]
                assert self._filled_by.get(r.booking) == r_id, f"request {r_id} filled twice?"
                assert (b.session, b.patient, b.account, b.channel) == \
                    (r.filled_session, r.patient, r.account, r.channel)
                assert r.filled_session in r.candidates and b.created_at == r.changed_at
            else:
                assert r.booking == -1 and r.filled_session == -1
        assert len(set(self._filled_by.values())) == len(self._filled_by), "a request filled twice"
        for b_id, r_id in self._filled_by.items():
            assert 0 <= r_id < nreq and self._requests[r_id].booking == b_id
        rechecks = {(due, ident) for due, _, kind, ident in self._timers
                    if kind == TIMER_WL_RECHECK}
        scans = [ident for _, _, kind, ident in self._timers if kind == TIMER_NOSHOW_SCAN]
        returning = {self._returns[ident] for _, _, kind, ident in self._timers
                     if kind == TIMER_RERELEASE}
        for s_id, s in enumerate(self._sessions):
            assert s.open == open_count[s_id], f"session {s_id}: open {s.open} != {open_count[s_id]}"
            assert len(s.fifos) == pol.wl_classes + 1
            if s.recheck_at != -1:
                assert (s.recheck_at, s_id) in rechecks, f"session {s_id} lost its WL_RECHECK"
            assert scans.count(s_id) <= 1, f"session {s_id} has two NOSHOW_SCAN timers"
            assert 0 <= s.scan_k <= s.capacity
            for k, st in enumerate(s.slot_states):
                if st == SlotState.RETURNING:
                    assert (s_id, k) in returning, f"RETURNING slot {s_id}/{k + 1} has no timer"
        self._check_waitlist_invariant()

    def _check_waitlist_invariant(self) -> None:
        """No open session has a FREE slot while an OPEN request listing it is eligible."""
        now = self._now
        for s_id, s in enumerate(self._sessions):
            if s.suspended or s.closed or now >= s.end_at or self._lowest_free(s) < 0:
                continue
            for r_id in self.session_waitlist(s_id):
                reason, _ = self._fill_check(self._requests[r_id], s_id, now)
                assert reason != Reason.NONE, (f"waitlist invariant: session {s_id} has a FREE "
                                               f"slot and request {r_id} is eligible at {now}")

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
            assert acc.bookings == sorted(acc.bookings)
            assert acc.flag_reason in (0, *FlagReason)
        for p in self._patients:
            assert p.flag_reason in (0, *FlagReason)
