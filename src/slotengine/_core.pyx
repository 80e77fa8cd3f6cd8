# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, embedsignature=True
# distutils: language = c++
"""The compiled backend: the contract of docs/semantics.md on dense int ids.

All state is C: std::vectors of small structs and ints (sessions, slots,
bookings, patients, accounts, timers, events, the known-pair hash set).
Python objects appear only at the edges: argument
conversion, Result objects, and introspection.  The plain-Python twin is
``slotengine.reference.Core``; both must agree on every result, event, dump
and state hash.

Layout (see _defs.pxi for the structs):

* slots: ``_slot_bk`` (int32: the booking id, or SB_FREE / SB_BLOCKED /
  SB_CANCELLED) in one global vector, a session owning ``[slot_off, slot_off
  + capacity)``; an occupied slot's state is its booking's state.  Plus a
  free bitmap per session in ``_bits`` (_ledger.pxi).  About 4.2 bytes per
  slot; a session adds 72 bytes, 12 per channel (quotas, release) and two
  timers.
* bookings: 48-byte records; each links to the patient's previous booking
  (newest-first history for the trailing-window limits), the account's
  previous booking (distinct patients per account) and the next live booking
  of the patient (the live set: HELD and BOOKED).
* patients: 32-byte records (with the first two hospitals the patient is
  known at) plus fixed-stride strike and cancel times; further known
  (patient, hospital) pairs live in an open-addressing hash set (_known.pxi).
* timers: a binary heap of (due, seq, kind, id) structs (_timers.pxi).

Vectors grow by 1/8 (bookings by 1/4) rather than doubling, so allocated
memory stays close to live memory; ``memory_usage()`` reports it.
"""

cimport cython
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memmove, memset
from libcpp.vector cimport vector

from operator import index as _index

import numpy as np

from slotengine._state import state_hash as _state_hash
from slotengine.errors import (
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
from slotengine.outcomes import BookingState, EventKind, Reason, SlotState, Status

include "_defs.pxi"
include "_ledger.pxi"
include "_timers.pxi"
include "_known.pxi"
include "_result.pxi"

__all__ = ["Core", "Result"]


def _check_codes():
    # The C enums above must equal the Python enums; fail loudly at import if not.
    assert (ST_BOOKED, ST_HELD, ST_REJECTED, ST_CANCELLED, ST_ARRIVED) == (
        Status.BOOKED, Status.HELD, Status.REJECTED, Status.CANCELLED, Status.ARRIVED)
    assert (R_SESSION_SUSPENDED, R_SESSION_CLOSED, R_NOT_RELEASED, R_PATIENT_BANNED,
            R_DUPLICATE_SESSION, R_DUPLICATE_DEPARTMENT_DAY, R_PATIENT_LIMIT,
            R_ACCOUNT_PATIENT_LIMIT, R_FIRST_VISIT_EXPERT, R_FULL, R_QUOTA_EXHAUSTED,
            R_NOT_OWNER, R_NOT_ACTIVE, R_CANCEL_CUTOFF, R_HOLD_EXPIRED, R_NOT_HELD,
            R_NOT_CONFIRMED) == (
        Reason.SESSION_SUSPENDED, Reason.SESSION_CLOSED, Reason.NOT_RELEASED,
        Reason.PATIENT_BANNED, Reason.DUPLICATE_SESSION, Reason.DUPLICATE_DEPARTMENT_DAY,
        Reason.PATIENT_LIMIT, Reason.ACCOUNT_PATIENT_LIMIT, Reason.FIRST_VISIT_EXPERT,
        Reason.FULL, Reason.QUOTA_EXHAUSTED, Reason.NOT_OWNER, Reason.NOT_ACTIVE,
        Reason.CANCEL_CUTOFF, Reason.HOLD_EXPIRED, Reason.NOT_HELD, Reason.NOT_CONFIRMED)
    assert [int(x) for x in BookingState] == [B_HELD, B_BOOKED, B_ARRIVED, B_NO_SHOW,
                                              B_CANCELLED, B_EXPIRED]
    assert [int(x) for x in SlotState] == list(range(N_SLOT_STATES))
    assert [int(x) for x in EventKind][:7] == [E_HOLD_EXPIRED, E_QUOTA_ROLLED, E_NO_SHOW,
                                           E_PATIENT_BANNED, E_SESSION_SUSPENDED,
                                           E_BOOKING_CANCELLED, E_CAPACITY_ADDED]

_check_codes()


cdef inline int _code(int status, int reason) noexcept nogil:
    """Pack a status and a reason into one int (status | reason << 8)."""
    return status | (reason << 8)


@cython.final
@cython.auto_pickle(False)
cdef class Core:
    """Compiled engine state and command path (one writer; not thread-safe).

    >>> from slotengine.policy import Policy                          # doctest: +SKIP
    >>> c = Core(Policy().compile(), 7)                               # doctest: +SKIP
    >>> c.ensure_patients(1); c.ensure_accounts(1)                    # doctest: +SKIP
    >>> c.add_session(0, 0, 0, 0, 100, 200, 50, 40, 10, 2, 0, [2, 0, 0, 0, 0, 0], [0] * 6, 0)
    0
    >>> c.book(0, 0, 0, 0, 10, False)                                 # doctest: +SKIP
    Result(status=BOOKED, session=0, slot=1, booking=0, window=(100, 110))
    """

    # -- policy (read once from CorePolicy) --
    cdef int32_t _n_ch
    cdef int32_t _pub
    cdef int64_t _hold_ms
    cdef vector[int64_t] _lim_count
    cdef vector[int64_t] _lim_window
    cdef int64_t _lim_max_window
    cdef bint _one_dd
    cdef int32_t _acct_patients
    cdef int64_t _acct_window
    cdef bint _bar_expert
    cdef vector[int64_t] _ban_ms
    cdef int32_t _n_ban
    cdef int64_t _strike_window
    cdef int32_t _cancel_strikes
    cdef int64_t _cancel_window
    # -- clock, generator, timer counter --
    cdef int64_t _now
    cdef uint64_t _rng
    cdef int64_t _seq
    cdef int64_t _n_free              # FREE slots over all sessions (book_many reserves by it)
    # -- state --
    cdef vector[Session] _sessions
    cdef vector[uint16_t] _q_init     # per session x channel, as given (<= capacity)
    cdef vector[uint16_t] _q_left     # per session x channel (sum <= capacity)
    cdef vector[int64_t] _release     # per session x channel
    cdef vector[int32_t] _slot_bk     # booking id, or SB_FREE / SB_BLOCKED / SB_CANCELLED
    cdef vector[uint64_t] _bits
    cdef vector[Booking] _bookings
    cdef vector[Patient] _patients
    cdef vector[int64_t] _strikes     # stride _n_ban, oldest first
    cdef vector[int64_t] _cancels     # stride _cancel_strikes, oldest first
    cdef vector[int32_t] _acct_hist   # per account: newest booking, -1 when none
    cdef vector[int32_t] _scratch     # distinct patients of one account (book)
    cdef vector[Timer] _timers
    cdef vector[Event] _events
    cdef vector[uint64_t] _known      # hash set of patient << 32 | hospital (_known.pxi)
    cdef int64_t _n_known
    cdef int _known_shift             # 64 - log2(table size)

    def __init__(self, policy, seed):
        cdef int64_t count, window
        if isinstance(seed, bool) or not hasattr(type(seed), "__index__"):
            raise InvalidType(f"seed must be an int, not {type(seed).__name__}")
        seed = _index(seed)
        if not 0 <= seed < 2**64:
            raise InvalidArgument(f"seed={seed} is outside 0..2**64-1")
        try:
            n_ch = _index(policy.n_channels)
            pub = _index(policy.public_channel)
            hold_ms = _index(policy.hold_ms)
            limits = [(_index(n), _index(w)) for n, w in policy.patient_limits]
            one_dd = bool(policy.one_per_department_day)
            acct_patients = _index(policy.account_patients)
            acct_window = _index(policy.account_window_ms)
            bar_expert = bool(policy.bar_first_visit_expert)
            ban_ms = [_index(x) for x in policy.ban_ms]
            strike_window = _index(policy.strike_window_ms)
            cancel_strikes = _index(policy.cancel_strikes)
            cancel_window = _index(policy.cancel_window_ms)
        except (AttributeError, TypeError, ValueError) as exc:
            raise PolicyError(f"policy is not a valid CorePolicy: {exc}") from None
        if not 1 <= n_ch <= 32 or not 0 <= pub < n_ch:
            raise PolicyError("policy channels are inconsistent")
        if not ban_ms:
            raise PolicyError("policy.ban_ms must not be empty")
        for v in [hold_ms, acct_window, strike_window, cancel_window] + ban_ms:
            if not 0 <= v <= MAX_MS:
                raise PolicyError(f"policy time {v} is outside 0..{MAX_MS} ms")
        for n, w in limits:
            if not 0 <= n <= MAX_ID or not 0 <= w <= MAX_MS:
                raise PolicyError(f"policy.patient_limits row {(n, w)} is out of range")
        if hold_ms > MAX_HOLD_MS:
            raise PolicyError(f"policy.hold_ms={hold_ms} is above {MAX_HOLD_MS}")
        if len(ban_ms) > 65535:
            raise PolicyError("policy.ban_ms has more than 65535 entries")
        if not 0 <= acct_patients <= 1_000_000 or not 0 <= cancel_strikes <= 65535:
            raise PolicyError("policy counts are out of range")
        self._n_ch = n_ch
        self._pub = pub
        self._hold_ms = hold_ms
        self._lim_count.clear()
        self._lim_window.clear()
        self._lim_max_window = 0
        for n, w in limits:
            count = n
            window = w
            self._lim_count.push_back(count)
            self._lim_window.push_back(window)
            self._lim_max_window = max(self._lim_max_window, window)
        self._one_dd = one_dd
        self._acct_patients = acct_patients
        self._acct_window = acct_window
        self._bar_expert = bar_expert
        self._ban_ms.clear()
        for v in ban_ms:
            self._ban_ms.push_back(v)
        self._n_ban = len(ban_ms)
        self._strike_window = strike_window
        self._cancel_strikes = cancel_strikes
        self._cancel_window = cancel_window
        self._now = 0
        self._rng = seed
        self._seq = 0
        self._n_free = 0
        self._sessions.clear()
        self._q_init.clear()
        self._q_left.clear()
        self._release.clear()
        self._slot_bk.clear()
        self._bits.clear()
        self._bookings.clear()
        self._patients.clear()
        self._strikes.clear()
        self._cancels.clear()
        self._acct_hist.clear()
        self._scratch.clear()
        self._timers.clear()
        self._events.clear()
        self._known.clear()
        self._n_known = 0
        self._known_shift = 64

    # ------------------------------------------------------------------------
    # validation helpers: raise the contract's typed error, change nothing

    cdef int32_t _session_id(self, object x) except -1:
        cdef int64_t v = _id(x, "session")
        if v < 0 or v >= <int64_t>self._sessions.size():
            raise UnknownSession(f"unknown session {v}")
        return <int32_t>v

    cdef int32_t _booking_id(self, object x) except -1:
        cdef int64_t v = _id(x, "booking")
        if v < 0 or v >= <int64_t>self._bookings.size():
            raise UnknownBooking(f"unknown booking {v}")
        return <int32_t>v

    cdef int32_t _patient_id(self, object x) except -1:
        cdef int64_t v = _id(x, "patient")
        if v < 0 or v >= <int64_t>self._patients.size():
            raise UnknownPatient(f"unknown patient {v}")
        return <int32_t>v

    cdef int32_t _account_id(self, object x) except -1:
        cdef int64_t v = _id(x, "account")
        if v < 0 or v >= <int64_t>self._acct_hist.size():
            raise UnknownAccount(f"unknown account {v}")
        return <int32_t>v

    cdef int32_t _channel_id(self, object x) except -1:
        cdef int64_t v = _id(x, "channel")
        if v < 0 or v >= self._n_ch:
            raise UnknownChannel(f"unknown channel {v}")
        return <int32_t>v

    cdef int64_t _check_now(self, object x) except -1:
        cdef int64_t v = _int(x, "now")
        if v < self._now:
            raise TimeWentBackwards(f"now={v} is earlier than the engine clock {self._now}")
        if v > MAX_MS:
            raise InvalidArgument(f"now={v} is after {MAX_MS} ms")
        return v

    cdef int32_t _slot_index(self, int32_t s, object x) except -1:
        cdef int64_t v = _int(x, "slot_no")
        cdef int32_t cap = self._sessions[s].capacity
        if v < 1 or v > cap:
            raise InvalidArgument(f"slot_no={v} is outside 1..{cap}")
        return <int32_t>(v - 1)

    # ------------------------------------------------------------------------
    # shared steps (C only)

    cdef inline bint _is_known(self, const Patient* pt, int32_t p, int32_t h) noexcept nogil:
        """Whether (p, h) is known.  O(1), usually without leaving the patient record."""
        if pt.known0 == h or pt.known1 == h:
            return True
        return pt.known_more and known_has(self._known, self._known_shift, known_key(p, h))

    cdef void _mark_known(self, int32_t p, int32_t h) noexcept nogil:
        """(p, h) becomes known: inline in the patient if there is room, else in the set."""
        cdef Patient* pt = &self._patients[p]
        if pt.known0 == h or pt.known1 == h:
            return
        if pt.known0 < 0:
            pt.known0 = h
        elif pt.known1 < 0:
            pt.known1 = h
        else:
            pt.known_more = 1
            self._known_add(known_key(p, h))

    cdef void _known_add(self, uint64_t key) noexcept nogil:
        """Add a key to the set; the table doubles when it would pass half full.  O(1) amortised."""
        cdef vector[uint64_t] old
        cdef size_t i
        if <size_t>(self._n_known + 1) * 2 > self._known.size():
            old.swap(self._known)
            self._known.assign(old.size() * 2 if old.size() else 64, 0)
            self._known_shift = 64
            i = self._known.size()
            while i > 1:
                i >>= 1
                self._known_shift -= 1
            for i in range(old.size()):
                if old[i]:
                    known_put(self._known, self._known_shift, old[i] - 1)
        if known_put(self._known, self._known_shift, key):
            self._n_known += 1

    cdef inline int64_t _hold_until(self, const Booking* b) noexcept nogil:
        return b.created_at + self._hold_ms if b.flags & F_HOLD else 0

    cdef inline void _event(self, int32_t kind, int64_t at, int32_t session, int32_t booking,
                            int32_t patient, int64_t detail) noexcept nogil:
        cdef Event e
        e.kind = kind
        e.at = at
        e.session = session
        e.booking = booking
        e.patient = patient
        e.detail = detail
        se_grow(self._events, 1, 2)
        self._events.push_back(e)

    cdef inline void _push_timer(self, int64_t due, int32_t kind, int32_t ident) noexcept nogil:
        cdef Timer t
        t.due = due
        t.seq = self._seq
        t.kind = kind
        t.id = ident
        self._seq += 1
        se_grow(self._timers, 1, 4)
        heap_push(self._timers, t)

    cdef inline uint64_t* _bm(self, const Session* s) noexcept nogil:
        return self._bits.data() + s.bm_off

    cdef inline void _slot_put(self, Session* s, int32_t i, int32_t v) noexcept nogil:
        """Set slot i to v (a booking id or an SB_ code), keeping the free bitmap.  O(1)."""
        cdef int32_t* cell = self._slot_bk.data() + s.slot_off + i
        cdef int32_t n_words = bm_words(s.capacity)
        if cell[0] == SB_FREE:
            bm_clear(self._bm(s), n_words, i)
            self._n_free -= 1
        if v == SB_FREE:
            bm_set(self._bm(s), n_words, i)
            self._n_free += 1
        cell[0] = v

    cdef inline uint8_t _slot_state(self, const Session* s, int32_t i) noexcept nogil:
        """SlotState of slot i.  O(1)."""
        cdef int32_t v = self._slot_bk[s.slot_off + i]
        if v >= 0:
            return self._bookings[v].state   # HELD..NO_SHOW equal their SlotState
        if v == SB_FREE:
            return S_FREE
        if v == SB_BLOCKED:
            return S_BLOCKED
        return S_CANCELLED

    cdef void _live_remove(self, int32_t p, int32_t b) noexcept nogil:
        """Unlink b from the patient's live list.  O(live bookings of the patient)."""
        cdef int32_t* cur = &self._patients[p].live
        while cur[0] >= 0 and cur[0] != b:
            cur = &self._bookings[cur[0]].live_next
        if cur[0] == b:
            cur[0] = self._bookings[b].live_next
        self._bookings[b].live_next = -1

    cdef void _free_slot(self, int32_t b) noexcept nogil:
        """The booking's slot becomes FREE; its quota comes back (to public once rolled)."""
        cdef Booking* bk = &self._bookings[b]
        cdef Session* s = &self._sessions[bk.session]
        cdef int32_t q = bk.quota
        self._slot_put(s, bk.slot, SB_FREE)
        self._live_remove(bk.patient, b)
        if q != self._pub and s.flags & SF_ROLLED:
            q = self._pub
        self._q_left[<int64_t>bk.session * self._n_ch + q] += 1

    cdef void _expire(self, int32_t b, int64_t at) noexcept nogil:
        cdef Booking* bk = &self._bookings[b]
        bk.state = B_EXPIRED
        bk.changed_at = at
        self._free_slot(b)
        self._event(E_HOLD_EXPIRED, at, bk.session, b, bk.patient, -1)

    cdef void _strike(self, int32_t p, int64_t t, int32_t session, int32_t b) noexcept nogil:
        """Record a strike at t and ban by the count of strikes in the window.  O(len(ban_ms))."""
        cdef Patient* pt = &self._patients[p]
        cdef int32_t cap = self._n_ban, k, n = 0
        cdef int64_t* times = self._strikes.data() + <int64_t>p * cap
        cdef int64_t until
        if pt.n_strikes == cap:
            memmove(times, times + 1, (cap - 1) * sizeof(int64_t))
            times[cap - 1] = t
        else:
            times[pt.n_strikes] = t
            pt.n_strikes += 1
        for k in range(pt.n_strikes):
            if times[k] > t - self._strike_window:
                n += 1
        k = (n if n < cap else cap) - 1
        if k < 0:  # only with strike_window_ms == 0; index -1 means the last, as in Python
            k = cap - 1
        until = t + self._ban_ms[k]
        if until > pt.banned_until:
            pt.banned_until = until
        self._event(E_PATIENT_BANNED, t, session, b, p, n)

    cdef void _record_cancel(self, int32_t p, int64_t t, int32_t session,
                             int32_t b) noexcept nogil:
        """Record a cancellation of a BOOKED booking; enough of them make a strike."""
        cdef int32_t cap = self._cancel_strikes, k, n = 0
        cdef Patient* pt
        cdef int64_t* times
        if cap <= 0:
            return
        pt = &self._patients[p]
        times = self._cancels.data() + <int64_t>p * cap
        if pt.n_cancels == cap:
            memmove(times, times + 1, (cap - 1) * sizeof(int64_t))
            times[cap - 1] = t
        else:
            times[pt.n_cancels] = t
            pt.n_cancels += 1
        for k in range(pt.n_cancels):
            if times[k] > t - self._cancel_window:
                n += 1
        if n >= cap:
            pt.n_cancels = 0
            self._strike(p, t, session, b)

    # ------------------------------------------------------------------------
    # timers

    cdef void _advance(self, int64_t now) noexcept nogil:
        """Run every timer due by now in (due, seq) order, then set the clock.

        O(1) when nothing is due (one comparison with the heap's top).
        """
        cdef Timer t
        cdef Booking* bk
        while self._timers.size() != 0 and self._timers[0].due <= now:
            t = heap_pop(self._timers)
            if t.kind == T_HOLD_EXPIRE:
                bk = &self._bookings[t.id]
                if bk.state == B_HELD and self._hold_until(bk) == t.due:
                    self._expire(t.id, t.due)
            elif t.kind == T_ROLLOVER:
                self._rollover(t.id, t.due)
            else:
                self._session_end(t.id, t.due)
        self._now = now

    cdef void _rollover(self, int32_t sid, int64_t at) noexcept nogil:
        cdef Session* s = &self._sessions[sid]
        cdef uint16_t* q = self._q_left.data() + <int64_t>sid * self._n_ch
        cdef int64_t moved = 0
        cdef int32_t c
        if s.flags & SF_SUSPENDED:
            return
        for c in range(self._n_ch):
            if c != self._pub:
                moved += q[c]
                q[c] = 0
        q[self._pub] += <uint16_t>moved
        s.flags |= SF_ROLLED
        if moved > 0:
            self._event(E_QUOTA_ROLLED, at, sid, -1, -1, moved)

    cdef void _session_end(self, int32_t sid, int64_t at) noexcept nogil:
        """Close the session: BOOKED -> NO_SHOW (+ strike), HELD -> EXPIRED.  O(capacity)."""
        cdef Session* s = &self._sessions[sid]
        cdef int32_t i, b
        cdef Booking* bk
        if s.flags & SF_SUSPENDED:
            return
        s.flags |= SF_CLOSED
        for i in range(s.capacity):
            b = self._slot_bk[s.slot_off + i]
            if b < 0:
                continue
            bk = &self._bookings[b]
            if bk.state == B_BOOKED:
                bk.state = B_NO_SHOW     # the slot follows: it is NO_SHOW now
                bk.changed_at = at
                self._live_remove(bk.patient, b)
                self._event(E_NO_SHOW, at, sid, b, bk.patient, -1)
                self._strike(bk.patient, at, sid, b)
            elif bk.state == B_HELD:
                self._expire(b, at)

    # ------------------------------------------------------------------------
    # booking: the hot path

    cdef int _book(self, int32_t a, int32_t p, int32_t sid, int32_t c, int64_t now, bint hold,
                   int32_t* slot_out, int32_t* booking_out) noexcept nogil:
        """Run timers, then the checks of docs/semantics.md in order; book or reject.

        Returns status | reason << 8.  Cost: O(1) for the request stage and
        allocation (bitmap), O(live bookings) for the duplicate checks,
        O(bookings in the largest window) for the patient limits and
        O(account bookings in its window x distinct patients) for the account rule.
        """
        cdef Session* s
        cdef Patient* pt
        cdef Booking* bk
        cdef Booking nb
        cdef const Session* other
        cdef int64_t base, rel_c, rel_p, cutoff
        cdef int32_t b, q, idx, bid, k, nd, n_lim
        cdef bint dd = False, found
        cdef int64_t cnt[8]
        cdef int64_t* cnts
        cdef vector[int64_t] big_cnt

        self._advance(now)
        s = &self._sessions[sid]
        # 1. request stage
        if s.flags & SF_SUSPENDED:
            return _code(ST_REJECTED, R_SESSION_SUSPENDED)
        if s.flags & SF_CLOSED or now >= s.end_at:
            return _code(ST_REJECTED, R_SESSION_CLOSED)
        base = <int64_t>sid * self._n_ch
        rel_c = self._release[base + c]
        rel_p = self._release[base + self._pub]
        if now < rel_c and now < rel_p:
            return _code(ST_REJECTED, R_NOT_RELEASED)
        # 2. eligibility stage
        pt = &self._patients[p]
        if now < pt.banned_until:
            return _code(ST_REJECTED, R_PATIENT_BANNED)
        # One walk of the live list decides both duplicate rules; the session
        # rule wins, so a department-day hit is only reported after the walk.
        b = pt.live
        while b >= 0:
            bk = &self._bookings[b]
            if bk.session == sid:
                return _code(ST_REJECTED, R_DUPLICATE_SESSION)
            if self._one_dd and not dd:
                other = &self._sessions[bk.session]
                if other.department == s.department and other.day == s.day:
                    dd = True
            b = bk.live_next
        if dd:
            return _code(ST_REJECTED, R_DUPLICATE_DEPARTMENT_DAY)
        n_lim = <int32_t>self._lim_count.size()
        if n_lim:
            # One newest-first walk of the patient's history counts every row.
            if n_lim <= 8:
                cnts = cnt
            else:
                big_cnt.resize(n_lim)
                cnts = big_cnt.data()
            for k in range(n_lim):
                cnts[k] = 0
            cutoff = now - self._lim_max_window
            b = pt.hist
            while b >= 0:
                bk = &self._bookings[b]
                if bk.created_at <= cutoff:
                    break
                if bk.state <= B_NO_SHOW:   # HELD, BOOKED, ARRIVED, NO_SHOW
                    for k in range(n_lim):
                        if bk.created_at > now - self._lim_window[k]:
                            cnts[k] += 1
                b = bk.p_prev
            for k in range(n_lim):
                if cnts[k] >= self._lim_count[k]:
                    return _code(ST_REJECTED, R_PATIENT_LIMIT)
        if self._acct_patients > 0:
            # Distinct patients of the account's bookings in the window; stop
            # early once the patient itself is among them.
            cutoff = now - self._acct_window
            found = False
            nd = 0
            b = self._acct_hist[a]
            while b >= 0:
                bk = &self._bookings[b]
                if bk.created_at <= cutoff:
                    break
                if bk.patient == p:
                    found = True
                    break
                if nd < self._acct_patients:
                    for k in range(nd):
                        if self._scratch[k] == bk.patient:
                            break
                    else:
                        if <size_t>nd >= self._scratch.size():
                            self._scratch.push_back(bk.patient)
                        else:
                            self._scratch[nd] = bk.patient
                        nd += 1
                b = bk.a_prev
            if not found and nd >= self._acct_patients:
                return _code(ST_REJECTED, R_ACCOUNT_PATIENT_LIMIT)
        if self._bar_expert and s.tier == 2:
            if not self._is_known(pt, p, s.hospital):
                return _code(ST_REJECTED, R_FIRST_VISIT_EXPERT)
        # 3. allocate stage
        idx = bm_lowest(self._bm(s), bm_words(s.capacity))
        if idx < 0:
            return _code(ST_REJECTED, R_FULL)
        if now >= rel_c and self._q_left[base + c] > 0:
            q = c
        elif now >= rel_p and self._q_left[base + self._pub] > 0:
            q = self._pub
        else:
            return _code(ST_REJECTED, R_QUOTA_EXHAUSTED)
        self._q_left[base + q] -= 1
        bid = <int32_t>self._bookings.size()
        nb.created_at = now
        nb.changed_at = now
        nb.session = sid
        nb.patient = p
        nb.account = a
        nb.p_prev = pt.hist
        nb.a_prev = self._acct_hist[a]
        nb.live_next = pt.live
        nb.slot = <uint16_t>idx
        nb.state = B_HELD if hold else B_BOOKED
        nb.channel = <uint8_t>c
        nb.quota = <uint8_t>q
        nb.flags = F_HOLD if hold else 0
        # Grow by a quarter, not double: bookings are the largest array.
        se_grow(self._bookings, 1, 4)
        self._bookings.push_back(nb)
        pt.hist = bid
        pt.live = bid
        self._acct_hist[a] = bid
        self._slot_put(s, idx, bid)
        if hold:
            self._push_timer(now + self._hold_ms, T_HOLD_EXPIRE, bid)
        slot_out[0] = idx
        booking_out[0] = bid
        return _code(ST_HELD if hold else ST_BOOKED, R_NONE)

    cdef inline void _prefetch_row(self, int32_t a, int32_t p, int32_t sid) noexcept nogil:
        cdef const Session* s = &self._sessions[sid]
        se_prefetch(&self._patients[p])
        se_prefetch(&self._acct_hist[a])
        se_prefetch(s)

    def book(self, account, patient, session, channel, now, hold):
        """Book (or hold, if ``hold``) the lowest FREE slot of ``session``, or say why not.

        Runs due timers first.  O(1) besides the rule walks described in
        docs/semantics.md (live bookings, bookings inside the limit windows).
        """
        cdef int32_t a = self._account_id(account)
        cdef int32_t p = self._patient_id(patient)
        cdef int32_t sid = self._session_id(session)
        cdef int32_t c = self._channel_id(channel)
        cdef int64_t t = self._check_now(now)
        cdef bint h = _truth(hold)
        cdef int32_t slot0 = -1
        cdef int32_t bid = -1
        cdef int code = self._book(a, p, sid, c, t, h, &slot0, &bid)
        return _result(code, sid, slot0, bid, &self._sessions[sid])

    def book_many(self, accounts, patients, sessions, channels, nows, hold):
        """``book`` for each row, in order, after validating every row.

        Columns are int arrays (or sequences) of equal length; ``nows`` must be
        non-decreasing and start at or after ``now``.  Returns numpy arrays
        (status int8, reason int16, slot int32 with 0 for none, booking int64
        with -1 for none).  The loop runs in C with no Python objects.
        """
        cdef object A = _int_column(accounts, "accounts")
        cdef object P = _int_column(patients, "patients")
        cdef object S = _int_column(sessions, "sessions")
        cdef object C = _int_column(channels, "channels")
        cdef object T = _int_column(nows, "nows")
        cdef Py_ssize_t n = A.shape[0], i
        if P.shape[0] != n or S.shape[0] != n or C.shape[0] != n or T.shape[0] != n:
            raise InvalidArgument("book_many columns must have equal lengths")
        cdef bint h = _truth(hold)
        cdef const int64_t[::1] va = A
        cdef const int64_t[::1] vp = P
        cdef const int64_t[::1] vs = S
        cdef const int64_t[::1] vc = C
        cdef const int64_t[::1] vt = T
        cdef int64_t lim, prev
        cdef int32_t sid
        lim = self._acct_hist.size()
        for i in range(n):
            if va[i] < 0 or va[i] >= lim:
                raise UnknownAccount(f"unknown account {va[i]} (row {i})")
        lim = self._patients.size()
        for i in range(n):
            if vp[i] < 0 or vp[i] >= lim:
                raise UnknownPatient(f"unknown patient {vp[i]} (row {i})")
        lim = self._sessions.size()
        for i in range(n):
            if vs[i] < 0 or vs[i] >= lim:
                raise UnknownSession(f"unknown session {vs[i]} (row {i})")
        for i in range(n):
            if vc[i] < 0 or vc[i] >= self._n_ch:
                raise UnknownChannel(f"unknown channel {vc[i]} (row {i})")
        prev = self._now
        for i in range(n):
            if vt[i] < prev:
                raise TimeWentBackwards(f"nows[{i}]={vt[i]} is earlier than {prev}")
            if vt[i] > MAX_MS:
                raise InvalidArgument(f"nows[{i}]={vt[i]} is after {MAX_MS} ms")
            prev = vt[i]
        out_status = np.empty(n, dtype=np.int8)
        out_reason = np.empty(n, dtype=np.int16)
        out_slot = np.empty(n, dtype=np.int32)
        out_booking = np.empty(n, dtype=np.int64)
        cdef int8_t[::1] os = out_status
        cdef int16_t[::1] orr = out_reason
        cdef int32_t[::1] osl = out_slot
        cdef int64_t[::1] ob = out_booking
        cdef int32_t slot0, bid
        cdef int code
        # Reserve once for the most rows that can succeed (expired holds may
        # free more slots mid-batch; push_back then grows as usual).
        cdef int64_t room = min(self._n_free, <int64_t>n)
        cdef Py_ssize_t ahead
        if self._bookings.size() + room > self._bookings.capacity():
            self._bookings.reserve(self._bookings.size() + room)
        if h and self._timers.size() + room > self._timers.capacity():
            self._timers.reserve(self._timers.size() + room)
        for i in range(n):
            # Rows hit patients, accounts and sessions at random: prefetch a
            # few rows ahead so their cache misses overlap (about 2x faster).
            ahead = i + 16
            if ahead < n:
                self._prefetch_row(<int32_t>va[ahead], <int32_t>vp[ahead], <int32_t>vs[ahead])
            ahead = i + 4
            if ahead < n and self._acct_hist[va[ahead]] >= 0:
                se_prefetch(&self._bookings[self._acct_hist[va[ahead]]])
            slot0 = -1
            bid = -1
            code = self._book(<int32_t>va[i], <int32_t>vp[i], <int32_t>vs[i], <int32_t>vc[i],
                              vt[i], h, &slot0, &bid)
            os[i] = <int8_t>(code & 0xFF)
            orr[i] = <int16_t>(code >> 8)
            osl[i] = slot0 + 1
            ob[i] = bid
        return out_status, out_reason, out_slot, out_booking

    # ------------------------------------------------------------------------
    # lifecycle of an existing booking

    cdef Result _result_for(self, int code, int32_t b):
        cdef const Booking* bk = &self._bookings[b]
        return _result(code, bk.session, bk.slot, b, &self._sessions[bk.session])

    def confirm(self, booking, account, now):
        """HELD -> BOOKED by the owning account.  O(1)."""
        cdef int32_t b = self._booking_id(booking)
        cdef int32_t a = self._account_id(account)
        cdef int64_t t = self._check_now(now)
        cdef Booking* bk
        cdef int code
        self._advance(t)
        bk = &self._bookings[b]
        if bk.account != a:
            code = _code(ST_REJECTED, R_NOT_OWNER)
        elif bk.state == B_EXPIRED:
            code = _code(ST_REJECTED, R_HOLD_EXPIRED)
        elif bk.state != B_HELD:
            code = _code(ST_REJECTED, R_NOT_HELD)
        else:
            bk.state = B_BOOKED     # the slot follows
            bk.changed_at = t
            code = _code(ST_BOOKED, R_NONE)
        return self._result_for(code, b)

    def cancel(self, booking, account, now):
        """Cancel a live booking before the cut-off and free its slot.  O(live bookings)."""
        cdef int32_t b = self._booking_id(booking)
        cdef int32_t a = self._account_id(account)
        cdef int64_t t = self._check_now(now)
        cdef Booking* bk
        cdef bint was_booked
        cdef int code
        self._advance(t)
        bk = &self._bookings[b]
        if bk.account != a:
            code = _code(ST_REJECTED, R_NOT_OWNER)
        elif bk.state != B_HELD and bk.state != B_BOOKED:
            code = _code(ST_REJECTED, R_NOT_ACTIVE)
        elif bk.state == B_BOOKED and t >= self._sessions[bk.session].cancel_cutoff_at:
            code = _code(ST_REJECTED, R_CANCEL_CUTOFF)
        else:
            was_booked = bk.state == B_BOOKED
            bk.state = B_CANCELLED
            bk.changed_at = t
            bk.flags &= ~F_SUSPENDED
            self._free_slot(b)
            if was_booked:
                self._record_cancel(bk.patient, t, bk.session, b)
            code = _code(ST_CANCELLED, R_NONE)
        return self._result_for(code, b)

    def check_in(self, booking, now):
        """BOOKED -> ARRIVED; the patient becomes known at the hospital.  O(live bookings)."""
        cdef int32_t b = self._booking_id(booking)
        cdef int64_t t = self._check_now(now)
        cdef Booking* bk
        cdef Session* s
        cdef int code
        self._advance(t)
        bk = &self._bookings[b]
        if bk.state == B_HELD:
            code = _code(ST_REJECTED, R_NOT_CONFIRMED)
        elif bk.state != B_BOOKED:
            code = _code(ST_REJECTED, R_NOT_ACTIVE)
        else:
            s = &self._sessions[bk.session]
            bk.state = B_ARRIVED    # the slot follows
            bk.changed_at = t
            self._live_remove(bk.patient, b)
            self._mark_known(bk.patient, s.hospital)
            code = _code(ST_ARRIVED, R_NONE)
        return self._result_for(code, b)

    # ------------------------------------------------------------------------
    # sessions

    cdef int _new_slots(self, Session* s, int32_t capacity) except -1:
        """Give s a fresh region of capacity slots (all FREE) and its bitmap, at the end."""
        cdef int64_t off = self._slot_bk.size(), bm = self._bits.size()
        cdef int64_t nbits = bm_size(bm_words(capacity))
        if bm + nbits > MAX_BITS:
            raise MemoryError("slotengine: the free-slot bitmap is full")
        se_grow(self._slot_bk, capacity, 8)
        self._slot_bk.resize(off + capacity, SB_FREE)
        se_grow(self._bits, nbits, 8)
        self._bits.resize(bm + nbits, 0)
        s.slot_off = off
        s.bm_off = <uint32_t>bm
        s.capacity = <uint16_t>capacity
        return 0

    cdef void _rebuild_bitmap(self, Session* s) noexcept nogil:
        """Rewrite a session's bitmap region from its slots.  O(capacity)."""
        cdef uint64_t* w = self._bm(s)
        cdef int32_t i, n_words = bm_words(s.capacity)
        memset(w, 0, bm_size(n_words) * sizeof(uint64_t))
        for i in range(s.capacity):
            if self._slot_bk[s.slot_off + i] == SB_FREE:
                bm_set(w, n_words, i)

    def add_session(self, hospital, department, tier, day, starts_at, end_at, rollover_at,
                    cancel_cutoff_at, slot_ms, capacity, fee, quotas, release, now):
        """Add a session of ``capacity`` FREE slots; returns its id.  O(capacity + n_channels).

        Pushes a ROLLOVER timer at ``rollover_at`` and a SESSION_END timer at ``end_at``.
        """
        cdef int64_t h = _int(hospital, "hospital")
        cdef int64_t d = _int(department, "department")
        cdef int64_t tier_ = _int(tier, "tier")
        cdef int64_t day_ = _int(day, "day")
        cdef int64_t start = _int(starts_at, "starts_at")
        cdef int64_t end = _int(end_at, "end_at")
        cdef int64_t roll = _int(rollover_at, "rollover_at")
        cdef int64_t cutoff = _int(cancel_cutoff_at, "cancel_cutoff_at")
        cdef int64_t sms = _int(slot_ms, "slot_ms")
        cdef int64_t cap = _int(capacity, "capacity")
        cdef int64_t fee_ = _int(fee, "fee")
        qs = self._int_list(quotas, "quotas")
        rel = self._int_list(release, "release")
        if not (0 <= h <= MAX_LABEL and 0 <= d <= MAX_LABEL):
            raise InvalidArgument(f"hospital and department ids must be in 0..{MAX_LABEL}")
        if not 0 <= tier_ <= 2:
            raise InvalidArgument(f"tier={tier_} is outside 0..2")
        if not -MAX_DAY <= day_ <= MAX_DAY:
            raise InvalidArgument(f"day={day_} is outside -{MAX_DAY}..{MAX_DAY}")
        for name, v in (("starts_at", start), ("end_at", end), ("rollover_at", roll),
                        ("cancel_cutoff_at", cutoff)):
            if not 0 <= v <= MAX_MS:
                raise InvalidArgument(f"{name}={v} is outside 0..{MAX_MS} milliseconds")
        if not start < end:
            raise InvalidArgument("starts_at must be before end_at")
        if not 1 <= sms <= MAX_SLOT_MS:
            raise InvalidArgument(f"slot_ms={sms} is outside 1..{MAX_SLOT_MS}")
        if not 1 <= cap <= MAX_CAPACITY:
            raise InvalidArgument(f"capacity={cap} is outside 1..{MAX_CAPACITY}")
        if not 0 <= fee_ <= MAX_FEE:
            raise InvalidArgument(f"fee={fee_} is outside 0..{MAX_FEE}")
        if any(q < 0 for q in qs) or sum(qs) != cap:
            raise InvalidArgument("quotas must be >= 0 and sum to capacity")
        for v in rel:
            if not 0 <= v <= MAX_MS:
                raise InvalidArgument(f"release time {v} is outside 0..{MAX_MS} milliseconds")
        if self._sessions.size() >= <size_t>MAX_ID:
            raise InvalidArgument("too many sessions")
        cdef int64_t t = self._check_now(now)
        self._advance(t)

        cdef int32_t sid = <int32_t>self._sessions.size()
        cdef Session ss
        cdef int32_t c
        memset(&ss, 0, sizeof(Session))
        ss.starts_at = start
        ss.end_at = end
        ss.rollover_at = roll
        ss.cancel_cutoff_at = cutoff
        ss.fee = fee_
        ss.slot_ms = <int32_t>sms
        ss.day = <int32_t>day_
        ss.hospital = <int32_t>h
        ss.department = <int32_t>d
        ss.tier = <uint8_t>tier_
        self._new_slots(&ss, <int32_t>cap)
        self._rebuild_bitmap(&ss)
        self._n_free += cap
        se_grow(self._sessions, 1, 8)
        self._sessions.push_back(ss)
        se_grow(self._q_init, self._n_ch, 8)
        se_grow(self._q_left, self._n_ch, 8)
        se_grow(self._release, self._n_ch, 8)
        for c in range(self._n_ch):
            self._q_init.push_back(<uint16_t>qs[c])
            self._q_left.push_back(<uint16_t>qs[c])
            self._release.push_back(rel[c])
        self._push_timer(roll, T_ROLLOVER, sid)
        self._push_timer(end, T_SESSION_END, sid)
        return sid

    cdef list _int_list(self, object xs, str name):
        if isinstance(xs, (str, bytes)) or not hasattr(xs, "__len__"):
            raise InvalidType(f"{name} must be a sequence of ints")
        out = [_int(v, name) for v in xs]
        if len(out) != self._n_ch:
            raise InvalidArgument(f"{name} has {len(out)} entries, expected {self._n_ch}")
        return out

    def add_capacity(self, session, n, channel, now):
        """Append ``n`` FREE slots; their quota goes to ``channel`` (public once rolled).

        Returns the new capacity.  O(capacity): the session's slots move to
        the end of the slot array unless they are already last (the old
        region is left unused).
        """
        cdef int32_t sid = self._session_id(session)
        cdef int64_t k = _int(n, "n")
        cdef Session* s = &self._sessions[sid]
        if not 1 <= k <= MAX_ADD or s.capacity + k > MAX_CAPACITY:
            raise InvalidArgument(f"n={k}: need 1..{MAX_ADD} and capacity <= {MAX_CAPACITY}")
        cdef int32_t c = self._channel_id(channel)
        cdef int64_t t = self._check_now(now)
        # Same as the state after timers: only SESSION_END at end_at sets closed.
        if s.flags & (SF_SUSPENDED | SF_CLOSED) or t >= s.end_at:
            raise InvalidState("cannot add capacity to a suspended or closed session")
        cdef int32_t old_cap = s.capacity
        cdef int32_t new_cap = old_cap + <int32_t>k
        cdef int64_t old_off = s.slot_off, i
        cdef int64_t nbits = bm_size(bm_words(new_cap))
        if old_off + old_cap == <int64_t>self._slot_bk.size() \
                and s.bm_off + bm_size(bm_words(old_cap)) == <int64_t>self._bits.size():
            # Last in both arrays (the usual case right after add_session): grow in place.
            if s.bm_off + nbits > MAX_BITS:
                raise MemoryError("slotengine: the free-slot bitmap is full")
            self._advance(t)
            s = &self._sessions[sid]
            se_grow(self._slot_bk, k, 8)
            self._slot_bk.resize(old_off + new_cap, SB_FREE)
            se_grow(self._bits, nbits, 8)
            self._bits.resize(s.bm_off + nbits, 0)
            s.capacity = <uint16_t>new_cap
        else:
            self._advance(t)
            s = &self._sessions[sid]
            self._new_slots(s, new_cap)
            for i in range(old_cap):
                self._slot_bk[s.slot_off + i] = self._slot_bk[old_off + i]
                self._slot_bk[old_off + i] = SB_CANCELLED
        self._rebuild_bitmap(s)
        self._n_free += k
        self._q_left[<int64_t>sid * self._n_ch + (self._pub if s.flags & SF_ROLLED else c)] += \
            <uint16_t>k
        self._event(E_CAPACITY_ADDED, t, sid, -1, -1, k)
        return new_cap

    def suspend(self, session, now):
        """Stop a session: cancel its live bookings and open slots; returns the count.

        O(capacity).  A second suspend returns 0 and changes nothing (timers aside).
        """
        cdef int32_t sid = self._session_id(session)
        cdef int64_t t = self._check_now(now)
        cdef Session* s
        cdef int32_t i, b, c, affected = 0
        cdef Booking* bk
        self._advance(t)
        s = &self._sessions[sid]
        if s.flags & SF_SUSPENDED:
            return 0
        for i in range(s.capacity):
            b = self._slot_bk[s.slot_off + i]
            if b >= 0:
                bk = &self._bookings[b]
                if bk.state == B_HELD or bk.state == B_BOOKED:
                    bk.state = B_CANCELLED
                    bk.changed_at = t
                    bk.flags |= F_SUSPENDED
                    self._live_remove(bk.patient, b)
                    self._event(E_BOOKING_CANCELLED, t, sid, b, bk.patient, R_SESSION_SUSPENDED)
                    affected += 1
                    self._slot_put(s, i, SB_CANCELLED)
            else:
                self._slot_put(s, i, SB_CANCELLED)
        for c in range(self._n_ch):
            self._q_left[<int64_t>sid * self._n_ch + c] = 0
        s.flags |= SF_SUSPENDED
        self._event(E_SESSION_SUSPENDED, t, sid, -1, -1, affected)
        return affected

    def block_slot(self, session, slot_no, now):
        """FREE -> BLOCKED (True), else nothing (False).  Quotas are untouched.  O(1)."""
        return self._flip(session, slot_no, now, SB_FREE, SB_BLOCKED)

    def unblock_slot(self, session, slot_no, now):
        """BLOCKED -> FREE (True), else nothing (False).  Quotas are untouched.  O(1)."""
        return self._flip(session, slot_no, now, SB_BLOCKED, SB_FREE)

    cdef object _flip(self, object session, object slot_no, object now, int32_t old,
                      int32_t new):
        cdef int32_t sid = self._session_id(session)
        cdef int32_t i = self._slot_index(sid, slot_no)
        cdef int64_t t = self._check_now(now)
        cdef Session* s
        self._advance(t)
        s = &self._sessions[sid]
        if self._slot_bk[s.slot_off + i] != old:
            return False
        self._slot_put(s, i, new)
        return True

    # ------------------------------------------------------------------------
    # patients, accounts, clock

    def ensure_patients(self, n):
        """Make room for patient ids ``< n`` (never shrinks).  O(new patients)."""
        cdef int64_t k = _int(n, "n")
        cdef Patient blank
        if k < 0 or k > MAX_ID:
            raise InvalidArgument(f"n={k} is outside 0..{MAX_ID}")
        if k <= <int64_t>self._patients.size():
            return
        blank.banned_until = 0
        blank.hist = -1
        blank.live = -1
        blank.known0 = -1
        blank.known1 = -1
        blank.n_strikes = 0
        blank.n_cancels = 0
        blank.known_more = 0
        self._patients.resize(k, blank)
        self._strikes.resize(k * self._n_ban, 0)
        self._cancels.resize(k * self._cancel_strikes, 0)

    def ensure_accounts(self, n):
        """Make room for account ids ``< n`` (never shrinks).  O(new accounts)."""
        cdef int64_t k = _int(n, "n")
        if k < 0 or k > MAX_ID:
            raise InvalidArgument(f"n={k} is outside 0..{MAX_ID}")
        if k > <int64_t>self._acct_hist.size():
            self._acct_hist.resize(k, -1)

    def mark_known(self, patient, hospital, now):
        """``(patient, hospital)`` becomes known (a registered, returning patient).  O(1)."""
        cdef int32_t p = self._patient_id(patient)
        cdef int64_t h = _int(hospital, "hospital")
        if h < 0 or h > MAX_LABEL:
            raise InvalidArgument(f"hospital={h} is outside 0..{MAX_LABEL}")
        cdef int64_t t = self._check_now(now)
        self._advance(t)
        self._mark_known(p, <int32_t>h)

    def advance(self, now):
        """Run the timers due by ``now`` and move the clock.  O(k log n) for k due timers."""
        self._advance(self._check_now(now))

    def drain_events(self):
        """Events since the last drain, as ``(kind, at, session, booking, patient, detail)``."""
        out = [(e.kind, e.at, e.session, e.booking, e.patient, e.detail) for e in self._events]
        self._events.clear()
        return out

    def rng_next(self):
        """Advance the splitmix64 generator and return its next 64-bit output."""
        cdef uint64_t z
        self._rng += 0x9E3779B97F4A7C15ULL
        z = self._rng
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
        return z ^ (z >> 31)

    # ------------------------------------------------------------------------
    # introspection (no state change, no timers)

    @property
    def now(self):
        """The engine clock (ms)."""
        return self._now

    @property
    def n_sessions(self):
        return self._sessions.size()

    @property
    def n_bookings(self):
        return self._bookings.size()

    @property
    def n_patients(self):
        return self._patients.size()

    @property
    def n_accounts(self):
        return self._acct_hist.size()

    def session_counts(self, session):
        """Slots by SlotState order (free, held, booked, arrived, no_show, cancelled, blocked).

        O(capacity); counts are not stored (they would cost 14 bytes a session).
        """
        cdef const Session* s = &self._sessions[self._session_id(session)]
        cdef int64_t counts[7]
        cdef int32_t i
        for i in range(N_SLOT_STATES):
            counts[i] = 0
        for i in range(s.capacity):
            counts[self._slot_state(s, i)] += 1
        return tuple([counts[i] for i in range(N_SLOT_STATES)])

    def session_quota(self, session):
        """``quota_left`` per channel."""
        cdef int64_t base = <int64_t>self._session_id(session) * self._n_ch
        return [self._q_left[base + c] for c in range(self._n_ch)]

    def session_flags(self, session):
        """``(rolled, suspended, closed, capacity)``."""
        cdef const Session* s = &self._sessions[self._session_id(session)]
        return (bool(s.flags & SF_ROLLED), bool(s.flags & SF_SUSPENDED),
                bool(s.flags & SF_CLOSED), s.capacity)

    def patient_live(self, patient):
        """The patient's live (HELD/BOOKED) booking ids, ascending."""
        cdef int32_t b = self._patients[self._patient_id(patient)].live
        out = []
        while b >= 0:
            out.append(b)
            b = self._bookings[b].live_next
        out.sort()
        return out

    cdef tuple _booking_tuple(self, int32_t b):
        cdef const Booking* bk = &self._bookings[b]
        return (bk.session, bk.slot + 1, bk.patient, bk.account, bk.channel, bk.quota,
                bk.state, bk.created_at, bk.changed_at, self._hold_until(bk),
                R_SESSION_SUSPENDED if bk.flags & F_SUSPENDED else R_NONE)

    cdef tuple _patient_tuple(self, int32_t p):
        cdef const Patient* pt = &self._patients[p]
        cdef const int64_t* st = self._strikes.data() + <int64_t>p * self._n_ban
        cdef const int64_t* cn = self._cancels.data() + <int64_t>p * self._cancel_strikes
        return (pt.banned_until, tuple([st[k] for k in range(pt.n_strikes)]),
                tuple([cn[k] for k in range(pt.n_cancels)]))

    def booking_info(self, booking):
        """``(session, slot_no, patient, account, channel, quota, state, created_at,
        changed_at, hold_until, end_reason)``."""
        return self._booking_tuple(self._booking_id(booking))

    def patient_info(self, patient):
        """``(banned_until, strikes, cancels)``, times oldest first."""
        return self._patient_tuple(self._patient_id(patient))

    def dump(self):
        """The canonical plain-Python state (layout in reference.py's docstring).  O(state)."""
        cdef int32_t sid, b, p, c
        cdef int64_t base, i
        cdef const Session* s
        sessions = []
        for sid in range(<int32_t>self._sessions.size()):
            s = &self._sessions[sid]
            base = <int64_t>sid * self._n_ch
            sessions.append({
                "hospital": s.hospital, "department": s.department, "tier": s.tier,
                "day": s.day, "starts_at": s.starts_at, "end_at": s.end_at,
                "rollover_at": s.rollover_at, "cancel_cutoff_at": s.cancel_cutoff_at,
                "slot_ms": s.slot_ms, "capacity": s.capacity, "fee": s.fee,
                "quotas": [self._q_init[base + c] for c in range(self._n_ch)],
                "quota_left": [self._q_left[base + c] for c in range(self._n_ch)],
                "release": [self._release[base + c] for c in range(self._n_ch)],
                "rolled": bool(s.flags & SF_ROLLED), "suspended": bool(s.flags & SF_SUSPENDED),
                "closed": bool(s.flags & SF_CLOSED),
                "slot_states": [self._slot_state(s, i) for i in range(s.capacity)],
                "slot_bookings": [max(self._slot_bk[s.slot_off + i], -1)
                                  for i in range(s.capacity)],
            })
        return {
            "now": self._now,
            "rng": self._rng,
            "seq": self._seq,
            "sessions": sessions,
            "bookings": [self._booking_tuple(b) for b in range(<int32_t>self._bookings.size())],
            "patients": [self._patient_tuple(p) for p in range(<int32_t>self._patients.size())],
            "known": self._known_pairs(),
            "timers": sorted([(t.due, t.seq, t.kind, t.id) for t in self._timers]),
            "events": [(e.kind, e.at, e.session, e.booking, e.patient, e.detail)
                       for e in self._events],
        }

    cdef list _known_pairs(self):
        cdef const Patient* pt
        cdef int32_t p
        out = [(<int64_t>((k - 1) >> 32), <int64_t>((k - 1) & 0xFFFFFFFF))
               for k in self._known if k]
        for p in range(<int32_t>self._patients.size()):
            pt = &self._patients[p]
            if pt.known0 >= 0:
                out.append((p, pt.known0))
            if pt.known1 >= 0:
                out.append((p, pt.known1))
        out.sort()
        return out

    def state_hash(self):
        """``slotengine._state.state_hash(dump())``: equal states hash equal across backends."""
        return _state_hash(self.dump())

    def memory_usage(self):
        """Bytes allocated per structure (capacity x element size of every array).

        ``slots`` covers the slot arrays and free bitmaps (dead regions left by
        add_capacity included); ``known`` estimates the hash set's buckets and nodes.
        """
        out = {
            "sessions": self._sessions.capacity() * sizeof(Session)
            + self._q_init.capacity() * sizeof(uint16_t)
            + self._q_left.capacity() * sizeof(uint16_t)
            + self._release.capacity() * sizeof(int64_t),
            "slots": self._slot_bk.capacity() * sizeof(int32_t)
            + self._bits.capacity() * sizeof(uint64_t),
            "bookings": self._bookings.capacity() * sizeof(Booking),
            "patients": self._patients.capacity() * sizeof(Patient)
            + self._strikes.capacity() * sizeof(int64_t)
            + self._cancels.capacity() * sizeof(int64_t),
            "accounts": self._acct_hist.capacity() * sizeof(int32_t)
            + self._scratch.capacity() * sizeof(int32_t),
            "timers": self._timers.capacity() * sizeof(Timer),
            "events": self._events.capacity() * sizeof(Event),
            "known": self._known.capacity() * sizeof(uint64_t),
        }
        out["total"] = sum(out.values())
        return out

    def _check_invariants(self):
        """Raise AssertionError if any invariant of docs/semantics.md is broken.  O(state)."""
        cdef int32_t sid, i, b, c, p, k, n_words
        cdef int64_t nb = self._bookings.size(), total_live = 0, n_live = 0, qsum, n_free = 0
        cdef const Session* s
        cdef const Booking* bk
        cdef uint8_t st
        cdef int64_t counts[7]
        cdef const uint64_t* w
        cdef vector[int32_t] on_slot
        on_slot.resize(nb, -1)
        for sid in range(<int32_t>self._sessions.size()):
            s = &self._sessions[sid]
            for k in range(N_SLOT_STATES):
                counts[k] = 0
            w = self._bm(s)
            n_words = bm_words(s.capacity)
            assert s.capacity >= 1
            assert s.slot_off + s.capacity <= <int64_t>self._slot_bk.size()
            assert s.bm_off + bm_size(n_words) <= <int64_t>self._bits.size()
            for i in range(s.capacity):
                b = self._slot_bk[s.slot_off + i]
                assert b >= SB_CANCELLED and b < nb, f"session {sid} slot {i + 1}: bad cell {b}"
                st = self._slot_state(s, i)
                counts[st] += 1
                assert ((w[i >> 6] >> (i & 63)) & 1) == (st == S_FREE), \
                    f"session {sid} slot {i + 1}: free bitmap disagrees"
                if b >= 0:
                    assert on_slot[b] < 0, f"booking {b} on two slots"
                    on_slot[b] = i
                    bk = &self._bookings[b]
                    assert bk.session == sid and bk.slot == i, "slot/booking disagree"
                    assert B_HELD <= bk.state <= B_NO_SHOW, \
                        f"slot {sid}/{i + 1} holds booking {b} in state {bk.state}"
            for i in range(s.capacity, n_words * 64):
                assert not (w[i >> 6] >> (i & 63)) & 1, f"session {sid}: bit beyond capacity"
            if n_words > 1:
                for k in range(n_words):
                    assert ((w[n_words + (k >> 6)] >> (k & 63)) & 1) == (w[k] != 0), \
                        f"session {sid}: bitmap summary disagrees"
            n_free += counts[S_FREE]
            qsum = 0
            for c in range(self._n_ch):
                k = self._q_left[<int64_t>sid * self._n_ch + c]
                qsum += k
                if s.flags & SF_ROLLED and c != self._pub:
                    assert k == 0, f"session {sid}: rolled channel quota left"
            assert qsum == counts[S_FREE] + counts[S_BLOCKED], \
                f"session {sid}: quota does not match open slots"
            if s.flags & SF_SUSPENDED:
                assert counts[S_FREE] == 0 and counts[S_HELD] == 0 and counts[S_BOOKED] == 0
                assert counts[S_BLOCKED] == 0 and qsum == 0
        assert n_free == self._n_free, "free slot total drifted"
        for b in range(<int32_t>nb):
            bk = &self._bookings[b]
            assert 1 <= bk.state <= 6, f"booking {b}: bad state"
            assert 0 <= bk.session < <int64_t>self._sessions.size()
            if bk.state <= B_NO_SHOW:
                assert on_slot[b] == bk.slot, f"booking {b} lost its slot"
            if bk.state <= B_BOOKED:
                total_live += 1
        for p in range(<int32_t>self._patients.size()):
            b = self._patients[p].live
            while b >= 0:
                bk = &self._bookings[b]
                assert bk.patient == p and (bk.state == B_HELD or bk.state == B_BOOKED), \
                    f"patient {p}: live list holds booking {b} in state {bk.state}"
                n_live += 1
                assert n_live <= total_live, "live lists too long (a cycle?)"
                b = bk.live_next
            assert 0 <= self._patients[p].n_strikes <= self._n_ban
            assert 0 <= self._patients[p].n_cancels <= max(self._cancel_strikes, 0)
        assert n_live == total_live, "live lists do not hold exactly the HELD/BOOKED bookings"
        k = 0
        for i in range(<int32_t>self._known.size()):
            if self._known[i]:
                k += 1
                assert known_has(self._known, self._known_shift, self._known[i] - 1)
                p = <int32_t>((self._known[i] - 1) >> 32)
                assert p < <int64_t>self._patients.size() and self._patients[p].known_more
                assert <int32_t>((self._known[i] - 1) & 0xFFFFFFFF) != self._patients[p].known0
                assert <int32_t>((self._known[i] - 1) & 0xFFFFFFFF) != self._patients[p].known1
        assert k == self._n_known and k * 2 <= <int64_t>self._known.size() + 1, "known set size"
        for i in range(<int32_t>self._timers.size()):
            assert 0 <= self._timers[i].seq < self._seq and 1 <= self._timers[i].kind <= 3
            if i:
                assert not timer_before(self._timers[i], self._timers[(i - 1) >> 1]), "heap order"
