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
* waitlist (_waitlist.pxi): 64-byte request records (plus 24 cold bytes), per-(session, class)
  FIFOs as contiguous runs of 12-byte entries in one pool with lazy deletion
  (a bitmap of OPEN requests skips closed entries without touching them), a
  per-session block allocated on first use, and the patient's and account's
  request lists.  Without an OPEN request, re-release or a no-show grace the
  command path pays a compare or two for all of it.
* credit (_credit.pxi): a 64-byte, cache-line-aligned wallet per patient
  (allocated on the first money command, or up front with ``cover`` on), a
  16-byte hold per booking kept in a parallel vector only once money touched
  a booking (bookings stay 48 bytes otherwise), 16 bytes per request with
  ``cover`` on, 56-byte bills and 40-byte ledger movements.  With ``cover``
  off the booking path pays one predictable branch for all of it.
* names (_names.pxi): with the Engine bound (bind_names), an open-addressing
  index of its account and patient names lists, 16 bytes a slot and at most
  half full, so that ``book_named`` and ``cancel_named`` find a name's id in
  one cache miss; a binding, never saved.

Vectors grow by 1/8 (bookings by 1/4) rather than doubling, so allocated
memory stays close to live memory; ``memory_usage()`` reports it.
"""

cimport cython
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.tuple cimport PyTuple_SET_ITEM
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memmove, memset
from libcpp.algorithm cimport sort as cpp_sort
from libcpp.pair cimport pair
from libcpp.vector cimport vector

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(object o)   # drain_events_list

from operator import index as _index
from os import urandom as _urandom

import numpy as np

from slotengine._state import state_hash as _state_hash
from slotengine.errors import (
    InvalidArgument,
    InvalidState,
    InvalidType,
    PolicyError,
    SnapshotError,
    TimeWentBackwards,
    UnknownAccount,
    UnknownBill,
    UnknownBooking,
    UnknownChannel,
    UnknownPatient,
    UnknownSession,
    UnknownRequest,
    UnknownTicket,
)
from slotengine.outcomes import (
    BillState, BookingState, EventKind, FlagReason, LedgerAccount, LineKind, LineState, MoveKind,
    Reason, RequestState, SlotState, Status, TicketState)

include "_defs.pxi"
include "_names.pxi"
include "_ledger.pxi"
include "_timers.pxi"
include "_known.pxi"
include "_result.pxi"
include "_risk.pxi"
include "_release.pxi"

__all__ = ["Core", "Result", "crc32c"]


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
    assert [int(x) for x in EventKind][7:14] == [E_FLAGGED, E_UNFLAGGED, E_BLOCKED,
                                              E_UNBLOCKED, E_COHORT_DRAWN, E_TICKET_SERVED,
                                              E_TICKET_FAILED]
    assert (ST_QUEUED, R_DUPLICATE_TICKET, R_BLOCKED, R_THROTTLED) == (
        Status.QUEUED, Reason.DUPLICATE_TICKET, Reason.BLOCKED, Reason.THROTTLED)
    assert [int(x) for x in TicketState] == [K_QUEUED, K_SERVED, K_FAILED, K_CANCELLED]
    assert [int(x) for x in FlagReason] == [FR_HOST, FR_BLACKLIST, FR_EARLY_REQUESTS,
                                            FR_CANCELLATIONS, FR_MANY_PATIENTS,
                                            FR_CANCEL_REBOOK]
    assert ST_WAITLISTED == Status.WAITLISTED
    assert (R_DUPLICATE_WAITLIST, R_WAITLIST_PATIENT_CAP, R_FLAGGED, R_SLOTS_LEFT,
            R_WAITLIST_FULL, R_SLOT_RELEASED) == (
        Reason.DUPLICATE_WAITLIST, Reason.WAITLIST_PATIENT_CAP, Reason.FLAGGED,
        Reason.SLOTS_LEFT, Reason.WAITLIST_FULL, Reason.SLOT_RELEASED)
    assert S_RETURNING == SlotState.RETURNING
    assert [int(x) for x in EventKind][14:20] == [E_WAITLIST_FILLED, E_WAITLIST_EXPIRED,
                                             E_WAITLIST_SKIPPED, E_BOOKING_MOVED,
                                             E_BOOKING_WAITLISTED, E_SLOT_RERELEASED]
    assert [int(x) for x in RequestState] == [RQ_OPEN, RQ_FILLED, RQ_EXPIRED, RQ_CANCELLED]
    assert (R_NO_COVER, R_CREDIT_SUSPENDED) == (Reason.NO_COVER, Reason.CREDIT_SUSPENDED)
    assert [int(x) for x in EventKind][20:] == [E_BILLED, E_BILL_DUE_SOON, E_BILL_OVERDUE,
                                             E_BILL_PAID, E_CREDIT_SUSPENDED,
                                             E_CREDIT_REINSTATED, E_LIMIT_CHANGED]
    assert [int(x) for x in LineKind] == [LK_OUTPATIENT, LK_INPATIENT]
    assert [int(x) for x in LineState] == [LS_NONE, LS_OPEN, LS_SUSPENDED, LS_CLOSED]
    assert [int(x) for x in BillState] == [BS_OPEN, BS_OVERDUE, BS_PAID]
    assert [int(x) for x in LedgerAccount] == [LA_EXTERNAL, LA_HOSPITAL, LA_BALANCE, LA_CREDIT]
    assert [int(x) for x in MoveKind] == [MK_TOP_UP, MK_PAY_BALANCE, MK_PAY_CREDIT, MK_REPAY,
                                          MK_REFUND]

_check_codes()


cdef inline int _code(int status, int reason) noexcept nogil:
    """Pack a status and a reason into one int (status | reason << 8)."""
    return status | (reason << 8)


cdef int64_t _MAX_MS_C = MAX_MS


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

    # -- the Engine's intern tables, for book_named and cancel_named (see bind_names) --
    cdef dict _acc_ids, _pat_ids, _ses_ids, _chan_ids
    cdef list _acc_names              # account id -> name (the Engine's list; None: unbound)
    cdef list _pat_names              # patient id -> name (likewise)
    cdef list _ses_names              # session id -> name (likewise)
    cdef vector[NameSlot] _aidx       # name -> id indexes of those lists (_names.pxi)
    cdef vector[NameSlot] _pidx
    cdef vector[NameSlot] _sidx
    cdef Py_ssize_t _aidx_n           # names [0, _aidx_n) of _acc_names are in _aidx
    cdef Py_ssize_t _pidx_n
    cdef Py_ssize_t _sidx_n
    cdef uint64_t _nseed[4]           # the indexes' hash seed for short names (random)
    cdef object _slow_book, _slow_cancel

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
    cdef int64_t _prequeue
    cdef int64_t _cohort_ms
    cdef int64_t _gap
    cdef int64_t _slow_delay
    cdef int64_t _slow_T
    cdef int64_t _slow_tau
    cdef int64_t _early_ms
    cdef int32_t _early_count
    cdef int64_t _early_window
    cdef int32_t _cflag_count
    cdef int64_t _cflag_window
    cdef int32_t _pflag_count
    cdef int64_t _pflag_window
    cdef int64_t _rebook_ms
    cdef int64_t _flag_ms
    cdef bint _cohort_on              # prequeue_ms or cohort_ms > 0: cohort windows exist
    # -- clock, generator, timer counter --
    cdef int64_t _now
    cdef uint64_t _rng
    cdef int64_t _seq
    cdef int64_t _n_free              # FREE slots over all sessions (book_many reserves by it)
    # -- state (the big per-id tables use se_alloc: huge pages, see _defs.pxi) --
    cdef vector[Session] _sessions
    cdef vector[uint16_t] _q_init     # per session x channel, as given (<= capacity)
    cdef vector[uint16_t] _q_left     # per session x channel (sum <= capacity)
    cdef vector[int64_t] _release     # per session x channel
    cdef vector[int32_t] _slot_bk     # booking id, or SB_FREE / SB_BLOCKED / SB_CANCELLED
    cdef vector[uint64_t] _bits
    cdef vector[Booking, se_alloc[Booking]] _bookings
    cdef vector[Patient, se_alloc[Patient]] _patients
    cdef vector[int64_t, se_alloc[int64_t]] _strikes    # stride _n_ban, oldest first
    cdef vector[int64_t, se_alloc[int64_t]] _cancels    # stride _cancel_strikes, oldest first
    cdef vector[int32_t, se_alloc[int32_t]] _acct_hist  # per account: newest booking, -1 when none
    cdef vector[int32_t] _scratch     # distinct patients of one account (book)
    cdef vector[Timer] _timers
    cdef vector[Event] _events
    cdef vector[uint64_t] _known      # hash set of patient << 32 | hospital (_known.pxi)
    cdef int64_t _n_known
    cdef int _known_shift             # 64 - log2(table size)
    # -- fair release, slow lane, risk (issue 3) --
    cdef vector[SessionX] _sx         # per session: drain queue, last cancel
    cdef vector[vector[int32_t]] _fair   # per session: the open cohort's fair list
    cdef vector[vector[int32_t]] _slow   # per session: the open cohort's slow list
    cdef vector[Account, se_alloc[Account]] _accts      # per account: flag, block, GCRA tat
    cdef vector[int64_t, se_alloc[int64_t]] _early      # stride _early_count, when not in the rows
    cdef vector[int64_t, se_alloc[int64_t]] _acancels   # stride _cflag_count, oldest first
    cdef vector[Mark, se_alloc[Mark]] _pmarks           # per patient: flag and block
    # per patient: newest QUEUED ticket, -1 when none
    cdef vector[int32_t, se_alloc[int32_t]] _p_tq
    cdef vector[Ticket] _tickets
    cdef vector[FlagRow] _flag_log
    cdef vector[int32_t] _shuf        # scratch: one cohort's tickets (lottery)
    cdef int64_t _n_queued            # tickets in state QUEUED
    cdef int64_t _n_marks             # flags and blocks ever set (0: risk reads nothing)
    cdef int64_t _n_pmarks            # ... on patients (0: patient marks are not read)
    # -- waitlist, re-release, no-show scan, suspension moves (issue 4, _waitlist.pxi) --
    cdef int32_t _wl_classes
    cdef int32_t _wl_candidates
    cdef int32_t _wl_per_patient
    cdef int32_t _wl_session_cap
    cdef int64_t _rr_min
    cdef int64_t _rr_max              # 0: freed slots are FREE at once
    cdef int64_t _grace               # noshow_grace_ms, 0 off
    cdef int32_t _suspend_action
    cdef vector[Request, se_alloc[Request]] _requests
    cdef vector[RequestCold, se_alloc[RequestCold]] _rq_cold   # per request, off the fill path
    cdef vector[uint64_t] _rq_open    # bit r set <=> request r is OPEN (a pass skips closed
                                      # FIFO entries without touching their records)
    cdef vector[WlEntry, se_alloc[WlEntry]] _wq         # pool of the class FIFOs' regions (WlQueue)
    cdef int64_t _wq_dead             # pool entries in regions no queue owns any more
    cdef int64_t _wq_live             # entries in the queues' live ranges [head, len)
    cdef vector[WlEntry] _wq_keep     # scratch: entries a pass skipped (kept in place)
    cdef vector[WlSession] _wls       # per-session waitlist blocks, allocated lazily
    cdef vector[int32_t] _wl_of       # per session: its block, -1; empty until the first block
    cdef vector[int32_t] _wl_open     # per session: open[s] (sized with _wl_of)
    # per patient: newest request on its list, -1 when none
    cdef vector[int32_t, se_alloc[int32_t]] _p_rq
    # per account: newest request on its list, -1 when none
    cdef vector[int32_t, se_alloc[int32_t]] _a_rq
    cdef vector[FilledRec] _filled    # booking -> request it filled, ascending bookings
    cdef vector[ReturnRec] _returns   # RERELEASE records
    cdef vector[int32_t] _rq_scratch  # snapshot of one patient's / account's OPEN requests
    cdef vector[int32_t] _left        # bookings that left a closed or suspended session
    cdef int64_t _n_open              # OPEN requests (0: no pass or recheck reads anything)
    # -- credit and prepaid balances (issue 5, _credit.pxi) --
    cdef bint _cover                  # a booking's fee must be covered (held) to book
    cdef bint _settle_ci              # check-in charges what the booking holds
    cdef int64_t _terms[8]            # per LineKind - 1: start, floor, ceiling, step
    cdef int32_t _raise_after
    cdef int64_t _bill_due
    cdef int64_t _bill_notice
    cdef int64_t _ncmd                # commands run (movements record it)
    cdef bint _money                  # _bcover is kept (cover on, or a booking was settled)
    cdef vector[Wallet] _wallets      # per patient once money is used (else empty)
    cdef vector[Purse] _purses        # per patient alongside _wallets (the hot part)
    cdef vector[Cover, se_noinit[Cover]] _bcover  # per booking while _money (ahead: unset)
    cdef vector[Cover] _rcover        # per request while _cover
    cdef vector[Bill] _bills
    cdef vector[Move] _moves          # the ledger
    # -- command journal (issue 6, _journal.pxi); not part of the state --
    cdef int _jst                     # J_OFF / J_ON / J_FAILED: the hot paths branch on it
    cdef char* _jrec                  # the record a running command staged, NULL when none
    cdef int64_t _jsize               # ... and its size
    cdef char* _jbuf                  # _jview.buf
    cdef int64_t _jpos, _jcap         # write offset, buffer length
    cdef uint64_t _jseq               # seq of the next record
    cdef int64_t _jsync_every, _jsync_n
    cdef object _jsync, _jrotate
    cdef object _jnote                # pending note (bytes) for the next record, or None
    cdef int64_t _jnlen
    cdef str _jmsg                    # journal_fail's message
    cdef Py_buffer _jview
    cdef bint _jheld                  # _jview holds a buffer

    def __init__(self, policy, seed):
        cdef int64_t count, window
        cdef int k
        for k in range(4):   # not the engine's generator: the index is not state
            self._nseed[k] = int.from_bytes(_urandom(8), "little")
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
            fr = [_index(getattr(policy, name)) for name in (
                "prequeue_ms", "cohort_ms", "outflow_gap_ms", "slow_delay_ms",
                "slow_interval_ms", "slow_burst", "early_ms", "early_count",
                "early_window_ms", "cancel_flag_count", "cancel_flag_window_ms",
                "patients_flag_count", "patients_flag_window_ms", "rebook_ms", "flag_ms")]
            wl = [_index(getattr(policy, name)) for name in (
                "wl_classes", "wl_candidates", "wl_per_patient", "wl_session_cap",
                "rerelease_min_ms", "rerelease_max_ms", "noshow_grace_ms", "suspend_action")]
            cover = bool(policy.cover)
            settle_ci = bool(policy.settle_at_check_in)
            terms = [[_index(v) for v in row] for row in policy.credit_terms]
            raise_after = _index(policy.credit_raise_after)
            bill_due = _index(policy.bill_due_ms)
            bill_notice = _index(policy.bill_notice_ms)
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
        (prequeue, cohort_ms, gap, slow_delay, slow_T, slow_burst, early_ms, early_count,
         early_window, cflag_count, cflag_window, pflag_count, pflag_window, rebook_ms,
         flag_ms) = fr
        for v in (prequeue, cohort_ms, gap, slow_delay, slow_T, early_ms, early_window,
                  cflag_window, pflag_window, rebook_ms, flag_ms):
            if not 0 <= v <= MAX_MS:
                raise PolicyError(f"policy time {v} is outside 0..{MAX_MS} ms")
        if slow_T < 1 or not 1 <= slow_burst <= 1_000_000 or slow_T * (slow_burst - 1) > MAX_MS:
            raise PolicyError("policy slow_interval_ms / slow_burst are out of range")
        for v in (early_count, cflag_count, pflag_count):
            if not 0 <= v <= 65535:
                raise PolicyError("policy flag counts are out of range")
        (wl_classes, wl_candidates, wl_per_patient, wl_session_cap, rr_min, rr_max, grace,
         suspend_action) = wl
        if not 0 <= wl_classes <= WL_MAX_QUEUES - 1 or not 1 <= wl_candidates <= WL_MAX_CAND:
            raise PolicyError("policy wl_classes / wl_candidates are out of range")
        if not 0 <= wl_per_patient <= MAX_ID or not 0 <= wl_session_cap <= MAX_ID:
            raise PolicyError("policy wl_per_patient / wl_session_cap are out of range")
        if not 0 <= rr_min <= rr_max <= MAX_MS or not 0 <= grace <= MAX_MS:
            raise PolicyError("policy rerelease_min_ms / rerelease_max_ms / noshow_grace_ms "
                              "are out of range")
        if not 0 <= suspend_action <= 2:
            raise PolicyError(f"policy suspend_action={suspend_action} is not 0, 1 or 2")
        if len(terms) != 2 or any(len(row) != 4 or not 0 <= row[1] <= row[0] <= row[2] <= MAX_FEN
                                  or not 0 <= row[3] <= MAX_FEN for row in terms):
            raise PolicyError("policy.credit_terms must be two (start, floor, ceiling, step) rows "
                              f"with 0 <= floor <= start <= ceiling <= {MAX_FEN}, 0 <= step")
        if not (0 <= raise_after <= MAX_ID and 1 <= bill_due <= MAX_MS
                and 0 <= bill_notice < bill_due):
            raise PolicyError("policy credit_raise_after, bill_due_ms or bill_notice_ms is out "
                              "of range")
        self._cover = cover
        self._settle_ci = settle_ci
        for i in range(8):
            self._terms[i] = terms[i // 4][i % 4]
        self._raise_after = raise_after
        self._bill_due = bill_due
        self._bill_notice = bill_notice
        self._ncmd = 0
        self._money = cover
        self._wallets.clear()
        self._purses.clear()
        self._bcover.clear()
        self._rcover.clear()
        self._bills.clear()
        self._moves.clear()
        self._wl_classes = wl_classes
        self._wl_candidates = wl_candidates
        self._wl_per_patient = wl_per_patient
        self._wl_session_cap = wl_session_cap
        self._rr_min = rr_min
        self._rr_max = rr_max
        self._grace = grace
        self._suspend_action = suspend_action
        self._requests.clear()
        self._rq_cold.clear()
        self._rq_open.clear()
        self._wq.clear()
        self._wq_dead = 0
        self._wq_live = 0
        self._wq_keep.clear()
        self._wls.clear()
        self._wl_of.clear()
        self._wl_open.clear()
        self._p_rq.clear()
        self._a_rq.clear()
        self._filled.clear()
        self._returns.clear()
        self._rq_scratch.clear()
        self._left.clear()
        self._n_open = 0
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
        self._prequeue = prequeue
        self._cohort_ms = cohort_ms
        self._gap = gap
        self._slow_delay = slow_delay
        self._slow_T = slow_T
        self._slow_tau = slow_T * (slow_burst - 1)
        self._early_ms = early_ms
        self._early_count = early_count
        self._early_window = early_window
        self._cflag_count = cflag_count
        self._cflag_window = cflag_window
        self._pflag_count = pflag_count
        self._pflag_window = pflag_window
        self._rebook_ms = rebook_ms
        self._flag_ms = flag_ms
        self._cohort_on = prequeue > 0 or cohort_ms > 0
        self._sx.clear()
        self._fair.clear()
        self._slow.clear()
        self._drop_names()
        self._accts.clear()
        self._early.clear()
        self._acancels.clear()
        self._pmarks.clear()
        self._p_tq.clear()
        self._tickets.clear()
        self._flag_log.clear()
        self._shuf.clear()
        self._n_queued = 0
        self._n_marks = 0
        self._n_pmarks = 0
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

    cdef int32_t _checked_id(self, object x, str what, int64_t n, object err) except -1:
        """``x`` as a dense id below ``n``, else ``err`` ("unknown <what> <x>")."""
        cdef int64_t v = _id(x, what)
        if v < 0 or v >= n:
            raise err(f"unknown {what} {v}")
        return <int32_t>v

    cdef int32_t _session_id(self, object x) except -1:
        return self._checked_id(x, "session", self._sessions.size(), UnknownSession)

    cdef int32_t _booking_id(self, object x) except -1:
        return self._checked_id(x, "booking", self._bookings.size(), UnknownBooking)

    cdef int32_t _patient_id(self, object x) except -1:
        return self._checked_id(x, "patient", self._patients.size(), UnknownPatient)

    cdef int32_t _account_id(self, object x) except -1:
        return self._checked_id(x, "account", self._acct_hist.size(), UnknownAccount)

    cdef int32_t _channel_id(self, object x) except -1:
        return self._checked_id(x, "channel", self._n_ch, UnknownChannel)

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
                            int32_t patient, int32_t account, int64_t detail) noexcept nogil:
        """Append an event; ``slot`` is the booking's (1-based) when there is one, reason 0."""
        self._event_r(kind, at, session, booking, patient, account, detail,
                      self._bookings[booking].slot + 1 if booking >= 0 else 0, R_NONE)

    cdef inline void _event_r(self, int32_t kind, int64_t at, int32_t session, int32_t booking,
                              int32_t patient, int32_t account, int64_t detail, int32_t slot,
                              int32_t reason) noexcept nogil:
        """Append an event with an explicit 1-based slot (0 none) and reason (0 none)."""
        cdef Event e
        e.kind = kind
        e.at = at
        e.session = session
        e.booking = booking
        e.patient = patient
        e.account = account
        e.detail = detail
        e.slot = <uint16_t>slot
        e.reason = <int16_t>reason
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

    cdef inline bint _has_free(self, const Session* s) noexcept nogil:
        """Whether the session has a FREE slot.  O(1) for <= 64 slots."""
        return bm_lowest(self._bm(s), bm_words(s.capacity)) >= 0

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
        if v == SB_RETURNING:
            return S_RETURNING
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
        if self._money:
            cr_release_booking(self, b)
        if q != self._pub and s.flags & SF_ROLLED:
            q = self._pub
        self._q_left[<int64_t>bk.session * self._n_ch + q] += 1

    cdef void _expire(self, int32_t b, int64_t at) noexcept nogil:
        cdef Booking* bk = &self._bookings[b]
        bk.state = B_EXPIRED
        bk.changed_at = at
        self._free_slot(b)
        self._event(E_HOLD_EXPIRED, at, bk.session, b, bk.patient, bk.account, -1)

    cdef void _strike(self, int32_t p, int64_t t, int32_t session, int32_t b) noexcept nogil:
        # b is the booking that caused it (its account goes in the event)
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
        self._event(E_PATIENT_BANNED, t, session, b, p, self._bookings[b].account, n)

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

    cdef inline void _begin(self, int64_t now) noexcept nogil:
        """A command passed validation: count it (ncmd), then run the timers due by now."""
        self._ncmd += 1
        if self._timers.size() != 0 and self._timers[0].due <= now:
            self._advance(now)
        else:
            self._now = now     # what _advance does when nothing is due, without the call

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
                    self._backfill(t.id, t.due)
            elif t.kind == T_ROLLOVER:
                self._rollover(t.id, t.due)
                wl_pass(self, t.id, t.due)
            elif t.kind == T_SESSION_END:
                self._session_end(t.id, t.due)
            elif t.kind == T_COHORT_CLOSE:
                self._cohort_close(t.id, t.due)
            elif t.kind == T_DRAIN:
                self._sessions[t.id].flags &= ~SF_DRAIN
                self._drain(t.id, t.due)
            elif t.kind == T_SLOW_SERVE:
                if self._tickets[t.id].state == K_QUEUED:
                    self._serve(t.id, t.due)
            elif t.kind == T_WL_EXPIRE:
                wl_expire(self, t.id, t.due)
            elif t.kind == T_RERELEASE:
                wl_rerelease(self, t.id, t.due)
            elif t.kind == T_WL_RECHECK:
                wl_recheck_timer(self, t.id, t.due)
            elif t.kind == T_NOSHOW_SCAN:
                wl_noshow_scan(self, t.id, t.due)
            elif t.kind == T_BILL_NOTICE:
                cr_bill_notice(self, t.id, t.due)
            else:   # T_BILL_DUE
                cr_bill_due(self, t.id, t.due)
        self._now = now

    cdef void _backfill(self, int32_t b, int64_t t) noexcept nogil:
        """After booking b's slot was freed at t: pass, recheck its patient, maybe re-release.

        Costs two compares when no request is open and re-release is off.
        """
        if self._n_open == 0 and self._rr_max == 0:
            return
        wl_after_free(self, b, t)

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
            self._event(E_QUOTA_ROLLED, at, sid, -1, -1, -1, moved)

    cdef void _session_end(self, int32_t sid, int64_t at) noexcept nogil:
        """Close the session: BOOKED -> NO_SHOW (+ strike), HELD -> EXPIRED.  O(capacity).

        Then (waitlist) the patients of those bookings are rechecked in slot
        order: their live sets shrank.  The freed slots of expired holds stay
        FREE (the session is closed: no pass, no re-release).
        """
        cdef Session* s = &self._sessions[sid]
        cdef int32_t i, b
        cdef Booking* bk
        cdef bint wl = self._n_open > 0
        if s.flags & SF_SUSPENDED:
            return
        s.flags |= SF_CLOSED
        if wl:
            self._left.clear()
        for i in range(s.capacity):
            b = self._slot_bk[s.slot_off + i]
            if b < 0:
                continue
            bk = &self._bookings[b]
            if bk.state == B_BOOKED:
                bk.state = B_NO_SHOW     # the slot follows: it is NO_SHOW now
                bk.changed_at = at
                self._live_remove(bk.patient, b)
                if self._money:
                    cr_release_booking(self, b)
                self._event(E_NO_SHOW, at, sid, b, bk.patient, bk.account, -1)
                self._strike(bk.patient, at, sid, b)
                if wl:
                    self._left.push_back(b)
            elif bk.state == B_HELD:
                self._expire(b, at)
                if wl:
                    self._left.push_back(b)
        if wl:
            wl_recheck_left(self, at)

    # ------------------------------------------------------------------------
    # booking: the hot path

    cdef inline int _request(self, const Session* s, int64_t rel_c, int64_t rel_p,
                             int64_t now) noexcept nogil:
        """Stage 1 (request): 0, or the packed rejection."""
        if s.flags & SF_SUSPENDED:
            return _code(ST_REJECTED, R_SESSION_SUSPENDED)
        if s.flags & SF_CLOSED or now >= s.end_at:
            return _code(ST_REJECTED, R_SESSION_CLOSED)
        if now < rel_c - self._prequeue and now < rel_p - self._prequeue:
            return _code(ST_REJECTED, R_NOT_RELEASED)
        return 0

    cdef inline int _eligible(self, int32_t a, int32_t p, int32_t sid, const Session* s,
                              int64_t now) noexcept nogil:
        """Stage 3 (eligibility, without the duplicate-ticket check): 0, or the rejection.

        O(live bookings) for the duplicate checks, O(bookings in the largest
        window) for the patient limits and O(account bookings in its window x
        distinct patients) for the account rule.  Inline for a rush's common
        case, a patient and an account that have booked nothing yet: then only
        a ban or a limit of zero refuses (every rule that walks counts 0).
        """
        cdef const Patient* pt = &self._patients[p]
        cdef int32_t k
        if now < pt.banned_until:
            return _code(ST_REJECTED, R_PATIENT_BANNED)
        if pt.hist >= 0:
            return self._eligible_walk(a, p, sid, s, now)
        # No booking at all (the live list is part of the history): nothing to
        # walk for the duplicate rules and the patient limits (each counts 0).
        for k in range(<int32_t>self._lim_count.size()):
            if self._lim_count[k] <= 0:
                return _code(ST_REJECTED, R_PATIENT_LIMIT)
        if self._acct_hist[a] < 0 and not (self._bar_expert and s.tier == 2):
            return 0        # the account rule counts 0 too, and no first-visit check
        return self._eligible_tail(a, p, s, pt, now)

    cdef int _eligible_walk(self, int32_t a, int32_t p, int32_t sid, const Session* s,
                            int64_t now) noexcept nogil:
        """_eligible for a patient with bookings: the walks over live bookings, history
        and the account's."""
        cdef Patient* pt = &self._patients[p]
        cdef Booking* bk
        cdef const Session* other
        cdef int32_t b, k, n_lim
        cdef bint dd = False
        cdef int64_t cnt[8]
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
        if n_lim > 8:
            if self._limits_big(pt, now, n_lim):
                return _code(ST_REJECTED, R_PATIENT_LIMIT)
        elif n_lim:
            for k in range(8):   # a fixed size: a few stores, not a memset call
                cnt[k] = 0
            if _limit_hit(self, pt, now, n_lim, cnt):
                return _code(ST_REJECTED, R_PATIENT_LIMIT)
        return self._eligible_tail(a, p, s, pt, now)

    cdef bint _limits_big(self, const Patient* pt, int64_t now, int32_t n_lim) noexcept nogil:
        """_eligible's patient-limit check for more than 8 limit rows (kept out of
        _eligible, so that the common case carries no C++ vector): True when one is hit."""
        cdef vector[int64_t] cnts
        cnts.resize(n_lim)
        return _limit_hit(self, pt, now, n_lim, cnts.data())

    cdef inline int _eligible_tail(self, int32_t a, int32_t p, const Session* s,
                                   const Patient* pt, int64_t now) noexcept nogil:
        """The rest of stage 3 after the patient's own rules: the account rule, first visit."""
        cdef const Booking* bk
        cdef int64_t cutoff
        cdef int32_t b, k, nd
        cdef bint found
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
        return 0

    cdef int _allocate(self, int32_t a, int32_t p, int32_t sid, int32_t c, int64_t now,
                       bint hold, BookOut* out) noexcept nogil:
        """Stage 5 (allocate): the lowest FREE slot and a quota, then the signals."""
        cdef Session* s = &self._sessions[sid]
        cdef Patient* pt = &self._patients[p]
        cdef int64_t base = <int64_t>sid * self._n_ch
        cdef int32_t idx, q, bid
        cdef int64_t hb = 0, hc = 0
        cdef int reason
        cdef Purse* pu
        cdef Booking nb
        idx = bm_lowest(self._bm(s), bm_words(s.capacity))
        if idx < 0:
            return _code(ST_REJECTED, R_FULL)
        if now >= self._release[base + c] and self._q_left[base + c] > 0:
            q = c
        elif now >= self._release[base + self._pub] and self._q_left[base + self._pub] > 0:
            q = self._pub
        else:
            return _code(ST_REJECTED, R_QUOTA_EXHAUSTED)
        if self._money:
            # 6. credit: the fee is covered and held (the 16-byte purse, and
            # Patient.line_open on the patient's line already read).  A free
            # fee holds 0 + 0 (the free balance is never negative).
            if self._cover:
                pu = &self._purses[p]
                hb = pu.free
                if hb >= s.fee:         # the usual case: the free balance covers it all
                    hb = s.fee
                else:
                    reason = cr_cover(self, p, s.fee, &hb, &hc)
                    if reason:
                        return _code(ST_REJECTED, reason)
                    pu.room -= hc
                pu.free -= hb
            cr_put_cover(self, <int32_t>self._bookings.size(), hb, hc)
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
        out.slot = idx
        out.booking = bid
        if self._pflag_count > 0:
            self._many_patients(a, now)
        if self._rebook_ms > 0 and s.flags & SF_LAST_CANCEL:
            self._rebook(sid, a, now)
        return _code(ST_HELD if hold else ST_BOOKED, R_NONE)

    cdef int _book(self, int32_t a, int32_t p, int32_t sid, int32_t c, int64_t now, bint hold,
                   BookOut* out) noexcept nogil:
        """Run timers, then request -> risk -> eligibility -> route -> allocate.

        Returns status | reason << 8.  With fair release, flags and signals
        switched off (or idle) the risk and route stages cost a few compares
        on the session record already in cache.
        """
        cdef Session* s
        cdef Account* ac
        cdef int64_t base, rel_c, rel_p, close, wait
        cdef int32_t k
        cdef int code
        cdef bint slow = False

        self._begin(now)
        s = &self._sessions[sid]
        base = <int64_t>sid * self._n_ch
        rel_c = self._release[base + c]
        rel_p = self._release[base + self._pub]
        # 1. request
        code = self._request(s, rel_c, rel_p, now)
        if code:
            return code
        # 2. risk
        if self._n_marks or self._early_count:
            ac = &self._accts[a]
            if now < ac.blocked_until:
                return _code(ST_REJECTED, R_BLOCKED)
            if self._n_pmarks and now < self._pmarks[p].blocked_until:
                return _code(ST_REJECTED, R_BLOCKED)
            if self._early_count and (
                    (rel_c - self._prequeue <= now and now < rel_c + self._early_ms)
                    or (rel_p - self._prequeue <= now and now < rel_p + self._early_ms)):
                self._early_signal(a, now)
            slow = now < ac.flag_until or (self._n_pmarks and now < self._pmarks[p].flag_until)
            if slow:
                wait = gcra_check(&ac.tat, now, self._slow_T, self._slow_tau)
                if wait:
                    out.retry = wait
                    return _code(ST_REJECTED, R_THROTTLED)
        # 3. eligibility
        code = self._eligible(a, p, sid, s, now)
        if code:
            return code
        if self._n_queued:
            k = self._p_tq[p]
            while k >= 0:
                if self._tickets[k].session == sid:
                    return _code(ST_REJECTED, R_DUPLICATE_TICKET)
                k = self._tickets[k].p_next
        # 4. route
        if self._cohort_on or s.flags & (SF_COLLECTING | SF_QUEUE):
            if s.flags & SF_COLLECTING:
                out.ticket = self._new_ticket(a, p, sid, c, hold, slow, now,
                                              W_SLOW if slow else W_FAIR)
                return _code(ST_QUEUED, R_NONE)
            if self._cohort_on:
                close = -1
                if rel_c - self._prequeue <= now and now < rel_c + self._cohort_ms:
                    close = rel_c + self._cohort_ms
                elif rel_p - self._prequeue <= now and now < rel_p + self._cohort_ms:
                    close = rel_p + self._cohort_ms
                if close >= 0:
                    s.flags |= SF_COLLECTING
                    self._sx[sid].cohort_close = close
                    self._push_timer(close, T_COHORT_CLOSE, sid)
                    out.ticket = self._new_ticket(a, p, sid, c, hold, slow, now,
                                                  W_SLOW if slow else W_FAIR)
                    return _code(ST_QUEUED, R_NONE)
            if s.flags & SF_QUEUE:
                out.ticket = self._new_ticket(a, p, sid, c, hold, slow, now, W_QUEUE)
                return _code(ST_QUEUED, R_NONE)
        if slow:
            k = self._new_ticket(a, p, sid, c, hold, slow, now, W_NONE)
            self._push_timer(now + self._slow_delay, T_SLOW_SERVE, k)
            out.ticket = k
            return _code(ST_QUEUED, R_NONE)
        # 5. allocate
        return self._allocate(a, p, sid, c, now, hold, out)

    # ------------------------------------------------------------------------
    # tickets, cohorts and the drain queue

    cdef int32_t _new_ticket(self, int32_t a, int32_t p, int32_t sid, int32_t c, bint hold,
                             bint slow, int64_t now, int where) noexcept nogil:
        """A QUEUED ticket on its patient's queued list and on list ``where``.  O(1)."""
        cdef int32_t k = <int32_t>self._tickets.size()
        cdef Ticket tk
        tk.submitted_at = now
        tk.served_at = -1
        tk.session = sid
        tk.patient = p
        tk.account = a
        tk.booking = -1
        tk.draw = -1
        tk.cohort_size = 0
        tk.next = -1
        tk.p_next = self._p_tq[p]
        tk.reason = R_NONE
        tk.channel = <uint8_t>c
        tk.state = K_QUEUED
        tk.hold = hold
        tk.lane = slow
        tk.where = <uint8_t>where
        # Double, not a quarter as bookings do: a rush makes a million tickets
        # one call at a time, and each regrowth copies (and first-touches)
        # them all; room not yet used costs address space, not memory.
        se_grow(self._tickets, 1, 1)
        self._tickets.push_back(tk)
        self._p_tq[p] = k
        self._n_queued += 1
        # A cohort list starts at 64 entries, not 1 (a rush puts hundreds on
        # each: 2 regrowths rather than 8; _cohort_close keeps at most 64).
        if where == W_FAIR:
            if self._fair[sid].capacity() == 0:
                self._fair[sid].reserve(64)
            self._fair[sid].push_back(k)
        elif where == W_SLOW:
            if self._slow[sid].capacity() == 0:
                self._slow[sid].reserve(64)
            self._slow[sid].push_back(k)
        elif where == W_QUEUE:
            self._enqueue(sid, k)
        return k

    cdef inline void _enqueue(self, int32_t sid, int32_t k) noexcept nogil:
        """Append ticket k at the tail of the session's drain queue.  O(1)."""
        cdef SessionX* sx = &self._sx[sid]
        self._tickets[k].next = -1
        self._tickets[k].where = W_QUEUE
        if sx.q_tail >= 0:
            self._tickets[sx.q_tail].next = k
        else:
            sx.q_head = k
        sx.q_tail = k
        self._sessions[sid].flags |= SF_QUEUE

    cdef void _unqueue_patient(self, int32_t k) noexcept nogil:
        """Take ticket k off its patient's queued list.  O(queued tickets of the patient)."""
        cdef int32_t* cur = &self._p_tq[self._tickets[k].patient]
        while cur[0] >= 0 and cur[0] != k:
            cur = &self._tickets[cur[0]].p_next
        if cur[0] == k:
            cur[0] = self._tickets[k].p_next
        self._tickets[k].p_next = -1
        self._n_queued -= 1

    cdef void _cohort_close(self, int32_t sid, int64_t due) noexcept nogil:
        """Draw the cohort (fair list, then slow list, Fisher-Yates), queue it, drain.

        Without an outflow gap the queue is empty here (every drain empties
        it), so the drawn cohort is served straight from the lottery array,
        in the same order as queue-then-drain (_shuf holds the order, then
        each ticket's patient and account for the prefetches).
        """
        cdef Session* s = &self._sessions[sid]
        cdef SessionX* sx = &self._sx[sid]
        cdef int32_t k, nf, n, i
        cdef Ticket* tk
        cdef int32_t* order
        cdef int32_t* who
        if not (s.flags & SF_COLLECTING) or sx.cohort_close != due:
            return
        nf = <int32_t>self._fair[sid].size()
        n = nf + <int32_t>self._slow[sid].size()
        self._shuf.resize(3 * <size_t>n)    # the order, then each ticket's patient and account
        order = self._shuf.data()
        for i in range(nf):
            order[i] = self._fair[sid][i]
        for i in range(nf, n):
            order[i] = self._slow[sid][i - nf]
        self._fair[sid].clear()
        self._slow[sid].clear()
        if self._fair[sid].capacity() > 64:
            vector[int32_t]().swap(self._fair[sid])
        if self._slow[sid].capacity() > 64:
            vector[int32_t]().swap(self._slow[sid])
        fisher_yates(order, nf, &self._rng)
        fisher_yates(order + nf, n - nf, &self._rng)
        s.flags &= ~SF_COLLECTING
        # Every QUEUED ticket ends in one event (served or failed), and every
        # pending cohort (one timer each) in one more: when the events must
        # grow, make room for all of them at once.  A rush closes thousands of
        # cohorts in one advance; growing 1.5x as they go copied (and
        # page-faulted) the whole events array over and over.
        if self._events.size() + <size_t>n + 1 > self._events.capacity():
            self._events.reserve(max(
                self._events.size() + <size_t>(max(n, self._n_queued) + 1) + self._timers.size(),
                self._events.capacity() + self._events.capacity() // 2))
        self._event(E_COHORT_DRAWN, due, sid, -1, -1, -1, n)
        if self._gap == 0 and sx.q_head < 0:
            # Two passes, so that no cache miss waits on another: the first
            # reads each ticket (prefetched 16 ahead), numbers it and notes
            # whom it serves; the second serves, prefetching those patients'
            # and accounts' rows 8 tickets ahead.
            who = order + n
            for i in range(n):
                if i + 16 < n:
                    se_prefetch(&self._tickets[order[i + 16]])
                tk = &self._tickets[order[i]]
                tk.draw = i
                tk.cohort_size = n
                tk.where = W_NONE
                who[2 * i] = tk.patient
                who[2 * i + 1] = tk.account
            for i in range(n):
                if i + 8 < n:
                    se_prefetch(&self._tickets[order[i + 8]])
                    if not self._has_free(s):
                        se_prefetch(&self._p_tq[who[2 * (i + 8)]])   # a FULL fails: unqueue only
                    else:
                        self._prefetch_served(who[2 * (i + 8)], who[2 * (i + 8) + 1])
                k = order[i]
                if self._tickets[k].state == K_QUEUED:
                    self._serve(k, due)
            return
        for i in range(n):
            k = self._shuf[i]
            tk = &self._tickets[k]
            tk.draw = i
            tk.cohort_size = n
            self._enqueue(sid, k)
        self._drain(sid, due)

    cdef inline void _prefetch_served(self, int32_t p, int32_t a) noexcept nogil:
        """Prefetch what serving a ticket of patient p and account a reads first."""
        se_prefetch(&self._patients[p])
        se_prefetch(&self._p_tq[p])
        se_prefetch(&self._acct_hist[a])
        se_prefetch(&self._accts[a])

    cdef inline int32_t _dequeue(self, int32_t sid) noexcept nogil:
        """Pop the head of the session's drain queue (which must not be empty)."""
        cdef SessionX* sx = &self._sx[sid]
        cdef int32_t k = sx.q_head
        sx.q_head = self._tickets[k].next
        self._tickets[k].next = -1
        self._tickets[k].where = W_NONE
        if sx.q_head < 0:
            sx.q_tail = -1
            self._sessions[sid].flags &= ~SF_QUEUE
        return k

    cdef void _drain(self, int32_t sid, int64_t t) noexcept nogil:
        """Serve the queue at t: all of it (no outflow gap) or its first live ticket."""
        cdef int32_t k
        if self._gap == 0:
            while self._sx[sid].q_head >= 0:
                k = self._dequeue(sid)
                if self._tickets[k].state == K_QUEUED:
                    self._serve(k, t)
            return
        while self._sx[sid].q_head >= 0:
            k = self._dequeue(sid)
            if self._tickets[k].state == K_QUEUED:
                self._serve(k, t)
                break
        if self._sx[sid].q_head >= 0 and not (self._sessions[sid].flags & SF_DRAIN):
            self._sessions[sid].flags |= SF_DRAIN
            self._push_timer(t + self._gap, T_DRAIN, sid)

    cdef void _serve(self, int32_t k, int64_t t) noexcept nogil:
        """Serve ticket k at t: request, eligibility, allocate (no risk, no routing).

        A session with no FREE slot fails the ticket FULL before eligibility:
        whoever holds it, it lost the lottery.  Most of a rush's cohort ends
        so, and this way without reading its patient's and account's rows.
        """
        cdef Ticket* tk = &self._tickets[k]
        cdef int32_t sid = tk.session, a = tk.account, p = tk.patient, c = tk.channel
        cdef bint hold = tk.hold
        cdef const Session* s = &self._sessions[sid]
        cdef int64_t base = <int64_t>sid * self._n_ch
        cdef BookOut out
        cdef int code
        out.slot = -1
        out.booking = -1
        code = self._request(s, self._release[base + c], self._release[base + self._pub], t)
        if not code and not self._has_free(s):
            code = _code(ST_REJECTED, R_FULL)
        if not code:
            code = self._eligible(a, p, sid, s, t)
        if not code:
            code = self._allocate(a, p, sid, c, t, hold, &out)
        self._unqueue_patient(k)
        tk = &self._tickets[k]
        tk.served_at = t
        if (code & 0xFF) == ST_REJECTED:
            tk.state = K_FAILED
            tk.reason = <int16_t>(code >> 8)
            self._event_r(E_TICKET_FAILED, t, sid, -1, p, a, k, 0, code >> 8)
        else:
            tk.state = K_SERVED
            tk.booking = out.booking
            self._event(E_TICKET_SERVED, t, sid, out.booking, p, a, k)

    # ------------------------------------------------------------------------
    # flags, blocks and signals

    cdef void _flag(self, int kind, int32_t key, int reason, int64_t until,
                    int64_t t) noexcept nogil:
        """Flag an account (kind 0) or patient (kind 1) until ``until``; log and event."""
        cdef int64_t* fu
        cdef int64_t* since
        cdef bint flagged
        if kind == 0:
            fu = &self._accts[key].flag_until
            since = &self._accts[key].flag_since
        else:
            fu = &self._pmarks[key].flag_until
            since = &self._pmarks[key].flag_since
        flagged = t < fu[0]
        if flagged and until <= fu[0]:
            return
        fu[0] = until
        if kind == 0:
            self._accts[key].flag_reason = <int8_t>reason
        else:
            self._pmarks[key].flag_reason = reason
            self._n_pmarks += 1
        if not flagged:
            since[0] = t
        self._n_marks += 1
        self._log(t, kind, key, reason, until)
        self._event(E_FLAGGED, t, -1, -1, key if kind == 1 else -1, key if kind == 0 else -1,
                    reason)

    cdef inline void _log(self, int64_t t, int kind, int32_t key, int reason,
                          int64_t until) noexcept nogil:
        cdef FlagRow row
        row.at = t
        row.until = until
        row.key = key
        row.kind = <int8_t>kind
        row.reason = <int8_t>reason
        se_grow(self._flag_log, 1, 4)
        self._flag_log.push_back(row)

    cdef void _rule_flag(self, int32_t a, int reason, int64_t now) noexcept nogil:
        """A policy rule flags an account for flag_ms, unless it is flagged already.

        So a host's flag keeps its reason, and a rule firing again on a
        flagged account neither extends the flag nor fills the log.
        """
        if now < self._accts[a].flag_until:
            return
        self._flag(0, a, reason, now + self._flag_ms, now)

    cdef inline int64_t* _early_ring(self, int32_t a) noexcept nogil:
        """Account a's early-request ring: in its row's second line, or in _early."""
        if self._early_count <= EARLY_INLINE:
            return self._accts[a].early
        return self._early.data() + <int64_t>a * self._early_count

    cdef void _early_signal(self, int32_t a, int64_t now) noexcept nogil:
        """Record an early request; early_count of them in the window flag the account."""
        cdef Account* ac = &self._accts[a]
        cdef int64_t* times = self._early_ring(a)
        ring_push(times, &ac.n_early, self._early_count, now)
        if ring_count_after(times, ac.n_early, now - self._early_window) >= self._early_count:
            ac.n_early = 0
            self._rule_flag(a, FR_EARLY_REQUESTS, now)

    cdef void _cancel_signal(self, int32_t a, int64_t now) noexcept nogil:
        """Record a cancellation by the account; enough of them flag it."""
        cdef Account* ac = &self._accts[a]
        cdef int64_t* times = self._acancels.data() + <int64_t>a * self._cflag_count
        ring_push(times, &ac.n_cancels, self._cflag_count, now)
        if ring_count_after(times, ac.n_cancels, now - self._cflag_window) >= self._cflag_count:
            ac.n_cancels = 0
            self._rule_flag(a, FR_CANCELLATIONS, now)

    cdef void _many_patients(self, int32_t a, int64_t now) noexcept nogil:
        """Flag an unflagged account that booked for patients_flag_count distinct patients.

        The account's record is read only when the count is reached (_rule_flag
        leaves a flagged account alone): the walk starts at the booking just
        made, already in cache.
        """
        cdef int64_t cutoff = now - self._pflag_window
        cdef int32_t b, k, nd = 0
        cdef const Booking* bk
        b = self._acct_hist[a]
        while b >= 0:
            bk = &self._bookings[b]
            if bk.created_at <= cutoff:
                break
            for k in range(nd):
                if self._scratch[k] == bk.patient:
                    break
            else:
                if <size_t>nd >= self._scratch.size():
                    self._scratch.push_back(bk.patient)
                else:
                    self._scratch[nd] = bk.patient
                nd += 1
                if nd >= self._pflag_count:
                    self._rule_flag(a, FR_MANY_PATIENTS, now)
                    return
            b = bk.a_prev

    cdef void _rebook(self, int32_t sid, int32_t a, int64_t now) noexcept nogil:
        """Cancel-then-rebook by another account within rebook_ms flags both accounts."""
        cdef SessionX* sx = &self._sx[sid]
        cdef int32_t other = sx.last_cancel_acct
        if other == a or now - sx.last_cancel_at > self._rebook_ms:
            return
        self._rule_flag(other, FR_CANCEL_REBOOK, now)
        self._rule_flag(a, FR_CANCEL_REBOOK, now)
        sx.last_cancel_at = 0
        sx.last_cancel_acct = -1
        self._sessions[sid].flags &= ~SF_LAST_CANCEL

    cdef inline void _prefetch_row(self, int32_t a, int32_t p, int32_t sid) noexcept nogil:
        """Prefetch every row a booking of (a, p, sid) reads, so that their misses
        overlap (book and book_named at once, book_many rows ahead)."""
        cdef const Session* s = &self._sessions[sid]
        se_prefetch(&self._patients[p])
        se_prefetch(&self._acct_hist[a])
        se_prefetch(s)
        if self._n_marks or self._early_count:
            se_prefetch(&self._accts[a])
            if self._early_count:
                se_prefetch(self._early_ring(a))
            if self._n_pmarks:
                se_prefetch(&self._pmarks[p])
        if self._n_queued or self._cohort_on:
            se_prefetch(&self._p_tq[p])
            if s.flags & SF_COLLECTING:
                # where the row's ticket will go: the end of a cohort list of hundreds
                lane_tail(&self._fair[sid])
                if self._n_marks:
                    lane_tail(&self._slow[sid])
        if self._cover:
            se_prefetch(&self._purses[p])

    def book(self, account, patient, session, channel, now, hold):
        """Book (or hold, if ``hold``) the lowest FREE slot of ``session``, or say why not.

        Runs due timers first.  O(1) besides the rule walks described in
        docs/semantics.md (live bookings, bookings inside the limit windows).
        """
        if self._jst:
            return j_book_def(self, account, patient, session, channel, now, hold)
        cdef int32_t a = self._account_id(account)
        cdef int32_t p = self._patient_id(patient)
        cdef int32_t sid = self._session_id(session)
        cdef int32_t c = self._channel_id(channel)
        cdef int64_t t = self._check_now(now)
        cdef bint h = _truth(hold)
        cdef BookOut out
        cdef int code
        cdef Result r
        # every row the command reads, at once: their misses overlap instead of
        # queueing one after another (book_many prefetches them rows ahead)
        self._prefetch_row(a, p, sid)
        out.slot = -1
        out.booking = -1
        out.ticket = -1
        out.retry = 0
        code = self._book(a, p, sid, c, t, h, &out)
        r = _result(code, sid, out.slot, out.booking, &self._sessions[sid])
        r._ticket = out.ticket
        r._retry = out.retry
        return r

    def bind_names(self, dict accounts, dict patients, dict sessions, dict channels,
                   slow_book, slow_cancel=None, list account_names=None,
                   list patient_names=None, list session_names=None):
        """Let ``book_named`` and ``cancel_named`` read the Engine's intern tables
        (str -> dense id).

        ``slow_book(account, patient, session, channel, now, hold)`` and
        ``slow_cancel(booking, account, now)`` handle every call the fast
        paths do not: a new or bad id, a datetime, a bad ``hold``, time out of
        range.  ``account_names``, ``patient_names`` and ``session_names``
        (optional) are the inverses of ``accounts``, ``patients`` and
        ``sessions`` (``account_names[i]`` is the name with id i); each is
        indexed here (_names.pxi) as it grows, so a known name costs one cache
        miss, not a dict's three.  The dicts and the lists are shared, not
        copied, and may only grow, in place.
        """
        self._drop_names()
        self._acc_ids = accounts
        self._acc_names = account_names
        self._pat_names = patient_names
        self._ses_names = session_names
        self._pat_ids = patients
        self._ses_ids = sessions
        self._chan_ids = channels
        self._slow_book = slow_book
        self._slow_cancel = slow_cancel

    def __dealloc__(self):
        self._drop_names()
        j_detach(self)

    cdef void _drop_names(self) noexcept:
        """Empty the name indexes and the account rows' keys (they refill from the
        bound lists on next use)."""
        cdef size_t k
        for k in range(self._accts.size()):
            self._accts[k].key_len = 0
        ni_clear(self._aidx, &self._aidx_n)
        ni_clear(self._pidx, &self._pidx_n)
        ni_clear(self._sidx, &self._sidx_n)

    def index_names(self):
        """Index the names bound lists gained since the last look-up (book_named and
        cancel_named do this lazily; the Engine calls it after a bulk intern, so that
        the first booking after it does not pay for a million names).  O(new names)."""
        self._index_all()

    cdef int _index_all(self) except -1:
        """Index what each bound list gained since the last look-up (three compares
        when nothing did)."""
        if self._acc_names is not None and self._aidx_n < PyList_GET_SIZE(self._acc_names):
            self._index_accounts()
        if self._pat_names is not None and self._pidx_n < PyList_GET_SIZE(self._pat_names):
            ni_sync(self._pidx, self._nseed, self._pat_names,
                    <Py_ssize_t>self._patients.size(), &self._pidx_n)
        if self._ses_names is not None and self._sidx_n < PyList_GET_SIZE(self._ses_names):
            ni_sync(self._sidx, self._nseed, self._ses_names,
                    <Py_ssize_t>self._sessions.size(), &self._sidx_n)
        return 0

    cdef int _index_accounts(self) except -1:
        """Index the bound account names not indexed yet, and key their rows."""
        cdef Py_ssize_t k, k0 = self._aidx_n
        ni_sync(self._aidx, self._nseed, self._acc_names, <Py_ssize_t>self._acct_hist.size(),
                &self._aidx_n)
        for k in range(k0, self._aidx_n):
            nk_put(&self._accts[k], <object>PyList_GET_ITEM(self._acc_names, k))
        return 0

    cdef inline int32_t _account_named(self, str name) except -2:
        """The id of a known account name (bound list), or -1."""
        cdef NameProbe pr
        if self._aidx_n < PyList_GET_SIZE(self._acc_names):
            self._index_accounts()
        ni_probe(self._nseed, name, &pr)
        return ni_find(self._aidx, self._acc_names, name, &pr)

    cdef inline int32_t _patient_named(self, str name) except -2:
        """The id of a known patient name (bound list), or -1."""
        return ni_lookup(self._pidx, self._nseed, self._pat_names,
                         <Py_ssize_t>self._patients.size(), &self._pidx_n, name)

    cdef inline int32_t _session_named(self, str name) except -2:
        """The id of a known session name (bound list), or -1."""
        return ni_lookup(self._sidx, self._nseed, self._ses_names,
                         <Py_ssize_t>self._sessions.size(), &self._sidx_n, name)

    cdef int _named_three(self, str account, str patient, str session,
                          int32_t* a, int32_t* p, int32_t* sid) except -1:
        """book_named's three look-ups when all are str and all lists are bound: the
        three probes first, their slots prefetched together (independent cache
        misses that overlap), then the three finds."""
        cdef NameProbe pa, pp, ps
        self._index_all()
        ni_probe(self._nseed, account, &pa)
        ni_touch(self._aidx, &pa)
        ni_probe(self._nseed, patient, &pp)
        ni_touch(self._pidx, &pp)
        ni_probe(self._nseed, session, &ps)
        ni_touch(self._sidx, &ps)
        a[0] = ni_find(self._aidx, self._acc_names, account, &pa)
        p[0] = ni_find(self._pidx, self._pat_names, patient, &pp)
        sid[0] = ni_find(self._sidx, self._ses_names, session, &ps)
        return 0

    def book_named(self, account, patient, session, channel=None, *, now, hold=False):
        """``Engine.book`` without a Python frame: string ids looked up here, in C.

        Known ids, int ``now`` in range and a bool ``hold`` go straight to the
        command path; anything else goes to the Engine's checked slow path.
        """
        cdef object c = None
        cdef int32_t a = -1, p = -1, sid = -1
        cdef long long t = 0
        cdef int over = 0
        cdef BookOut out
        cdef int code
        cdef Result r
        try:
            if (type(account) is str and type(patient) is str and type(session) is str
                    and self._acc_names is not None and self._pat_names is not None
                    and self._ses_names is not None):
                self._named_three(<str>account, <str>patient, <str>session, &a, &p, &sid)
            else:   # one at a time: the index for a str of a bound list, else the dict
                a = (self._account_named(<str>account)
                     if type(account) is str and self._acc_names is not None
                     else _dict_id(self._acc_ids, account))
                p = (self._patient_named(<str>patient)
                     if type(patient) is str and self._pat_names is not None
                     else _dict_id(self._pat_ids, patient))
                sid = (self._session_named(<str>session)
                       if type(session) is str and self._ses_names is not None
                       else _dict_id(self._ses_ids, session))
            c = self._pub if channel is None else self._chan_ids.get(channel)
        except TypeError:  # an unhashable id: let the slow path name the error
            a = -1
        if type(now) is int:
            t = PyLong_AsLongLongAndOverflow(now, &over)
        if (a < 0 or p < 0 or sid < 0 or c is None or type(now) is not int or over
                or (hold is not True and hold is not False)
                or t < self._now or t > _MAX_MS_C):
            # the slow path journals through book (and ensure_*); refuse before it
            # registers anything when the journal failed
            if self._jst == J_FAILED:
                j_raise(self)
            return self._slow_book(account, patient, session, channel, now, hold)
        self._prefetch_row(a, p, sid)         # as in book
        if self._jst:
            return j_book(self, a, p, sid, <int32_t>c, t, hold is True)
        out.slot = -1
        out.booking = -1
        out.ticket = -1
        out.retry = 0
        code = self._book(a, p, sid, <int32_t>c, t, hold is True, &out)
        r = _result(code, sid, out.slot, out.booking, &self._sessions[sid])
        r._ticket = out.ticket
        r._retry = out.retry
        return r

    def book_many(self, accounts, patients, sessions, channels, nows, hold):
        """``book`` for each row, in order, after validating every row.

        Columns are int arrays (or sequences) of equal length; ``nows`` must be
        non-decreasing and start at or after ``now``.  Returns numpy arrays
        (status int8, reason int16, slot int32 with 0 for none, booking int64
        with -1 for none, ticket int64 with -1 for none, retry_after int64).  The loop runs in C with no Python objects.
        """
        if self._jst == J_FAILED:
            j_raise(self)
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
        out_ticket = np.empty(n, dtype=np.int64)
        out_retry = np.empty(n, dtype=np.int64)
        cdef int8_t[::1] os = out_status
        cdef int16_t[::1] orr = out_reason
        cdef int32_t[::1] osl = out_slot
        cdef int64_t[::1] ob = out_booking
        cdef int64_t[::1] otk = out_ticket
        cdef int64_t[::1] ort = out_retry
        cdef const int64_t* cols[5]
        if self._jst:
            j_many(self, n, h)
        if n:
            cols[0] = &va[0]
            cols[1] = &vp[0]
            cols[2] = &vs[0]
            cols[3] = &vc[0]
            cols[4] = &vt[0]
            self._book_rows(cols[0], cols[1], cols[2], cols[3], cols[4], n, h,
                            &os[0], &orr[0], &osl[0], &ob[0], &otk[0], &ort[0])
            if self._jrec != NULL:
                j_many_fill(self, n, cols[0], cols[1], cols[2], cols[3], cols[4])
        j_end(self)
        return out_status, out_reason, out_slot, out_booking, out_ticket, out_retry

    cdef int _book_rows(self, const int64_t* va, const int64_t* vp, const int64_t* vs,
                        const int64_t* vc, const int64_t* vt, Py_ssize_t n, bint h,
                        int8_t* os, int16_t* orr, int32_t* osl, int64_t* ob, int64_t* otk,
                        int64_t* ort) except -1:
        """book each of n validated rows in order; results into os.. (os NULL: none, replay)."""
        cdef BookOut out
        cdef int code
        cdef Py_ssize_t i, ahead
        # Reserve once for the most rows that can succeed (expired holds may
        # free more slots mid-batch; push_back then grows as usual).
        cdef int64_t room = min(self._n_free, <int64_t>n)
        if self._bookings.size() + room > self._bookings.capacity():
            self._bookings.reserve(self._bookings.size() + room)
        if self._money and self._bcover.size() < self._bookings.size() + room:
            cr_covers_grow(self, self._bookings.size() + room)
        if h and self._timers.size() + room > self._timers.capacity():
            self._timers.reserve(self._timers.size() + room)
        if (self._cohort_on or self._n_marks) and \
                self._tickets.size() + n > self._tickets.capacity():
            self._tickets.reserve(self._tickets.size() + n)
        for i in range(n):
            # Rows hit patients, accounts and sessions at random: prefetch a
            # few rows ahead so their cache misses overlap (about 2x faster).
            ahead = i + 16
            if ahead < n:
                self._prefetch_row(<int32_t>va[ahead], <int32_t>vp[ahead], <int32_t>vs[ahead])
            ahead = i + 4
            if ahead < n and self._acct_hist[va[ahead]] >= 0:
                se_prefetch(&self._bookings[self._acct_hist[va[ahead]]])
            out.slot = -1
            out.booking = -1
            out.ticket = -1
            out.retry = 0
            code = self._book(<int32_t>va[i], <int32_t>vp[i], <int32_t>vs[i], <int32_t>vc[i],
                              vt[i], h, &out)
            if os != NULL:
                os[i] = <int8_t>(code & 0xFF)
                orr[i] = <int16_t>(code >> 8)
                osl[i] = out.slot + 1
                ob[i] = out.booking
                otk[i] = out.ticket
                ort[i] = out.retry
        return 0

    # ------------------------------------------------------------------------
    # lifecycle of an existing booking

    cdef Result _result_for(self, int code, int32_t b):
        cdef const Booking* bk = &self._bookings[b]
        return _result(code, bk.session, bk.slot, b, &self._sessions[bk.session])

    def confirm(self, booking, account, now):
        """HELD -> BOOKED by the owning account.  O(1)."""
        if self._jst:
            return j_pair_def(self, OP_CONFIRM, booking, account, now)
        cdef int32_t b = self._booking_id(booking)
        cdef int32_t a = self._account_id(account)
        cdef int64_t t = self._check_now(now)
        return self._result_for(self._confirm(b, a, t), b)

    cdef int _confirm(self, int32_t b, int32_t a, int64_t t) noexcept:
        """confirm after validation; the packed code."""
        cdef Booking* bk
        cdef int code
        self._begin(t)
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
        return code

    def cancel(self, booking, account, now):
        """Cancel a live booking before the cut-off and free its slot (then backfill it).

        O(live bookings), plus the waitlist requests the pass walks.
        """
        if self._jst:
            return j_pair_def(self, OP_CANCEL, booking, account, now)
        cdef int32_t b = self._booking_id(booking)
        cdef int32_t a = self._account_id(account)
        cdef int64_t t = self._check_now(now)
        return self._result_for(self._cancel(b, a, t), b)

    def cancel_named(self, booking, *, account, now):
        """``Engine.cancel`` without a Python frame: the account name looked up here.

        An int booking id in range, a known account name (``bind_names``) and
        an int ``now`` in range go straight to the command path; anything else
        goes to the Engine's checked ``slow_cancel(booking, account, now)``.
        """
        cdef object a
        cdef long long b, t
        cdef int32_t acc
        cdef int over_b = 0, over_t = 0
        if self._slow_cancel is None:
            raise InvalidState("cancel_named needs bind_names(..., slow_cancel=...)")
        if type(booking) is not int or type(now) is not int:
            if self._jst == J_FAILED:
                j_raise(self)
            return self._slow_cancel(booking, account, now)
        b = PyLong_AsLongLongAndOverflow(booking, &over_b)
        t = PyLong_AsLongLongAndOverflow(now, &over_t)
        if (over_b or over_t or b < 0 or b >= <long long>self._bookings.size()
                or t < self._now or t > _MAX_MS_C):
            if self._jst == J_FAILED:
                j_raise(self)
            return self._slow_cancel(booking, account, now)
        # The owner check compares the name with the key in the owner's row,
        # which the cancel reads anyway (_names.pxi); the index only when the
        # row has no key or the key differs (another account, or none).
        if type(account) is str and self._acc_names is not None:
            if self._aidx_n < PyList_GET_SIZE(self._acc_names):
                self._index_accounts()
            acc = self._bookings[b].account
            se_prefetch(&self._accts[acc])
            self._cancel_prefetch(<int32_t>b)
            if not nk_is(&self._accts[acc], <str>account):
                acc = self._account_named(<str>account)
            if acc >= 0:
                if self._jst:
                    return self._result_for(j_cancel(self, <int32_t>b, acc, t), <int32_t>b)
                return self._result_for(self._cancel(<int32_t>b, acc, t), <int32_t>b)
            if self._jst == J_FAILED:
                j_raise(self)
            return self._slow_cancel(booking, account, now)
        self._cancel_prefetch(<int32_t>b)
        try:
            a = self._acc_ids.get(account)
        except TypeError:  # an unhashable name: let the slow path name the error
            a = None
        if a is None:
            if self._jst == J_FAILED:
                j_raise(self)
            return self._slow_cancel(booking, account, now)
        if self._jst:
            return self._result_for(j_cancel(self, <int32_t>b, <int32_t>a, t), <int32_t>b)
        return self._result_for(self._cancel(<int32_t>b, <int32_t>a, t), <int32_t>b)

    cdef inline void _cancel_prefetch(self, int32_t b) noexcept nogil:
        """Prefetch what a cancel of b reads besides b (its owner's rows, its session):
        independent of each other, so their cache misses overlap."""
        cdef const Booking* bk = &self._bookings[b]
        cdef int32_t a = bk.account
        if self._cflag_count > 0:
            se_prefetch(&self._accts[a])
            se_prefetch(self._acancels.data() + <int64_t>a * self._cflag_count)
        se_prefetch(&self._sessions[bk.session])

    cdef int _cancel(self, int32_t b, int32_t a, int64_t t) noexcept:
        """cancel after validation: timers, the checks, free and backfill; the packed code."""
        cdef Booking* bk
        cdef bint was_booked
        cdef int code
        self._cancel_prefetch(b)
        self._begin(t)
        bk = &self._bookings[b]
        if bk.account != a:
            code = _code(ST_REJECTED, R_NOT_OWNER)
        elif bk.state != B_HELD and bk.state != B_BOOKED:
            code = _code(ST_REJECTED, R_NOT_ACTIVE)
        elif bk.state == B_BOOKED and t >= self._sessions[bk.session].cancel_cutoff_at:
            code = _code(ST_REJECTED, R_CANCEL_CUTOFF)
        else:
            was_booked = bk.state == B_BOOKED
            if self._n_open:
                wl_prefetch(self, bk.session)
            bk.state = B_CANCELLED
            bk.changed_at = t
            bk.flags &= ~F_SUSPENDED
            self._free_slot(b)
            if was_booked:
                self._record_cancel(bk.patient, t, bk.session, b)
            self._sx[bk.session].last_cancel_at = t
            self._sx[bk.session].last_cancel_acct = a
            self._sessions[bk.session].flags |= SF_LAST_CANCEL
            if self._cflag_count > 0:
                self._cancel_signal(a, t)
            self._backfill(b, t)
            code = _code(ST_CANCELLED, R_NONE)
        return code

    def check_in(self, booking, now):
        """BOOKED -> ARRIVED; the patient becomes known at the hospital.  O(live bookings)."""
        if self._jst:
            return j_pair_def(self, OP_CHECK_IN, booking, 0, now)
        cdef int32_t b = self._booking_id(booking)
        cdef int64_t t = self._check_now(now)
        return self._result_for(self._check_in(b, t), b)

    cdef int _check_in(self, int32_t b, int64_t t) noexcept:
        """check_in after validation; the packed code."""
        cdef Booking* bk
        cdef Session* s
        cdef int code
        self._begin(t)
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
            if self._money and self._settle_ci:
                cr_check_in(self, b, t)
            if self._n_open:
                wl_recheck_patient(self, bk.patient, t)
            code = _code(ST_ARRIVED, R_NONE)
        return code

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
                    cancel_cutoff_at, slot_ms, capacity, fee, quotas, release, now, doctor=-1):
        """Add a session of ``capacity`` FREE slots; returns its id.  O(capacity + n_channels).

        Pushes a ROLLOVER timer at ``rollover_at`` and a SESSION_END timer at
        ``end_at`` (and, with a no-show grace, the first NOSHOW_SCAN).
        ``doctor`` is an opaque label (-1 none) for suspension moves.
        """
        if self._jst == J_FAILED:
            j_raise(self)
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
        cdef int64_t doc = _int(doctor, "doctor")
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
        if doc != -1 and not 0 <= doc <= MAX_LABEL:
            raise InvalidArgument(f"doctor={doc} must be -1 or in 0..{MAX_LABEL}")
        if self._sessions.size() >= <size_t>MAX_ID:
            raise InvalidArgument("too many sessions")
        cdef int64_t t = self._check_now(now)
        if self._jst:
            j_add_session(self, h, d, tier_, day_, start, end, roll, cutoff, sms, cap, fee_, t,
                          doc, qs, rel)
        self._begin(t)

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
        cdef SessionX sx
        sx.cohort_close = 0
        sx.last_cancel_at = 0
        sx.last_cancel_acct = -1
        sx.q_head = sx.q_tail = -1
        sx.doctor = <int32_t>doc
        se_grow(self._sx, 1, 8)
        self._sx.push_back(sx)
        self._fair.resize(self._sx.size())
        self._slow.resize(self._sx.size())
        se_grow(self._q_init, self._n_ch, 8)
        se_grow(self._q_left, self._n_ch, 8)
        se_grow(self._release, self._n_ch, 8)
        for c in range(self._n_ch):
            self._q_init.push_back(<uint16_t>qs[c])
            self._q_left.push_back(<uint16_t>qs[c])
            self._release.push_back(rel[c])
        if self._wl_of.size():
            self._wl_of.push_back(-1)
            self._wl_open.push_back(0)
        self._push_timer(roll, T_ROLLOVER, sid)
        self._push_timer(end, T_SESSION_END, sid)
        if self._grace > 0 and start + self._grace < end:
            self._push_timer(start + self._grace, T_NOSHOW_SCAN, sid)
        j_end(self)
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
        if self._jst == J_FAILED:
            j_raise(self)
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
        if self._jst:
            j_rare(self, OP_ADD_CAPACITY, 4, sid, k, c, t, 0)
        if old_off + old_cap == <int64_t>self._slot_bk.size() \
                and s.bm_off + bm_size(bm_words(old_cap)) == <int64_t>self._bits.size():
            # Last in both arrays (the usual case right after add_session): grow in place.
            if s.bm_off + nbits > MAX_BITS:
                raise MemoryError("slotengine: the free-slot bitmap is full")
            self._begin(t)
            s = &self._sessions[sid]
            se_grow(self._slot_bk, k, 8)
            self._slot_bk.resize(old_off + new_cap, SB_FREE)
            se_grow(self._bits, nbits, 8)
            self._bits.resize(s.bm_off + nbits, 0)
            s.capacity = <uint16_t>new_cap
        else:
            self._begin(t)
            s = &self._sessions[sid]
            self._new_slots(s, new_cap)
            for i in range(old_cap):
                self._slot_bk[s.slot_off + i] = self._slot_bk[old_off + i]
                self._slot_bk[old_off + i] = SB_CANCELLED
        self._rebuild_bitmap(s)
        self._n_free += k
        self._q_left[<int64_t>sid * self._n_ch + (self._pub if s.flags & SF_ROLLED else c)] += \
            <uint16_t>k
        self._event(E_CAPACITY_ADDED, t, sid, -1, -1, -1, k)
        if self._grace > 0:
            wl_noshow_resume(self, sid, old_cap)
        wl_pass(self, sid, t)
        j_end(self)
        return new_cap

    def suspend(self, session, now):
        """Stop a session: its live bookings leave it (cancelled, or with
        ``suspend_action`` moved or waitlisted) and its open slots close; returns the count.

        O(capacity), plus O(sessions) once when a booking is moved or
        waitlisted.  A second suspend returns 0 and changes nothing (timers aside).
        """
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int32_t sid = self._session_id(session)
        cdef int64_t t = self._check_now(now)
        cdef int64_t n = 0
        if self._jst:
            j_rare(self, OP_SUSPEND, 2, sid, t, 0, 0, 0)
        self._begin(t)
        if not self._sessions[sid].flags & SF_SUSPENDED:
            n = wl_suspend(self, sid, t)
        j_end(self)
        return n

    def block_slot(self, session, slot_no, now):
        """FREE -> BLOCKED (True), else nothing (False).  Quotas are untouched.  O(1)."""
        if self._jst == J_FAILED:
            j_raise(self)
        return self._flip(session, slot_no, now, SB_FREE, SB_BLOCKED)

    def unblock_slot(self, session, slot_no, now):
        """BLOCKED -> FREE (True), else nothing (False).  Quotas are untouched.  O(1)."""
        if self._jst == J_FAILED:
            j_raise(self)
        return self._flip(session, slot_no, now, SB_BLOCKED, SB_FREE)

    cdef object _flip(self, object session, object slot_no, object now, int32_t old,
                      int32_t new):
        cdef int32_t sid = self._session_id(session)
        cdef int32_t i = self._slot_index(sid, slot_no)
        cdef int64_t t = self._check_now(now)
        cdef Session* s
        cdef bint done = False
        if self._jst:
            j_rare(self, OP_UNBLOCK_SLOT if new == SB_FREE else OP_BLOCK_SLOT, 3, sid, i + 1, t,
                   0, 0)
        self._begin(t)
        s = &self._sessions[sid]
        if self._slot_bk[s.slot_off + i] == old:
            self._slot_put(s, i, new)
            if new == SB_FREE:
                wl_pass(self, sid, t)
            done = True
        j_end(self)
        return done

    # ------------------------------------------------------------------------
    # patients, accounts, clock

    def ensure_patients(self, n):
        """Make room for patient ids ``< n`` (never shrinks).  O(new patients)."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int64_t k = _int(n, "n")
        cdef Patient blank
        if k < 0 or k > MAX_ID:
            raise InvalidArgument(f"n={k} is outside 0..{MAX_ID}")
        if k <= <int64_t>self._patients.size():
            return
        if self._jst:
            j_rare(self, OP_ENSURE_PATIENTS, 1, k, 0, 0, 0, 0)
        blank.banned_until = 0
        blank.hist = -1
        blank.live = -1
        blank.known0 = -1
        blank.known1 = -1
        blank.n_strikes = 0
        blank.n_cancels = 0
        blank.known_more = 0
        blank.wl = 0
        blank.line_open = 0
        self._patients.resize(k, blank)
        self._strikes.resize(k * self._n_ban, 0)
        self._cancels.resize(k * self._cancel_strikes, 0)
        cdef Mark m
        memset(&m, 0, sizeof(Mark))
        self._pmarks.resize(k, m)
        self._p_tq.resize(k, -1)
        self._p_rq.resize(k, -1)
        if self._cover or self._wallets.size():
            cr_wallets_need(self)
        j_end(self)

    def ensure_accounts(self, n):
        """Make room for account ids ``< n`` (never shrinks).  O(new accounts)."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int64_t k = _int(n, "n")
        if k < 0 or k > MAX_ID:
            raise InvalidArgument(f"n={k} is outside 0..{MAX_ID}")
        cdef Account blank
        if k > <int64_t>self._acct_hist.size():
            if self._jst:
                j_rare(self, OP_ENSURE_ACCOUNTS, 1, k, 0, 0, 0, 0)
            self._acct_hist.resize(k, -1)
            memset(&blank, 0, sizeof(Account))
            self._accts.resize(k, blank)
            if self._early_count > EARLY_INLINE:
                self._early.resize(k * self._early_count, 0)
            self._acancels.resize(k * self._cflag_count, 0)
            self._a_rq.resize(k, -1)
            j_end(self)

    def reserve(self, requests):
        """Room for a rush of ``requests`` more requests, taken from the kernel now:
        as many tickets and events, and bookings up to the slots there are.

        A fresh engine's first rush otherwise pays a page fault for every 4 KB
        of tickets and events it writes (about a fifth of a million-request
        batch rush in a VM); a long-lived engine has that room from its earlier
        rushes.  Not state: no decision, id or hash changes, nothing is
        journaled.  At most MAX_RESERVE (10**8, about 10 GB): the memory is
        written now, so an absurd count would not fail but exhaust the machine.
        O(requests).
        """
        cdef int64_t n = _int(requests, "requests")
        cdef int64_t most = min(MAX_RESERVE, MAX_ID - <int64_t>self._tickets.size())
        if n < 0 or n > most:
            raise InvalidArgument(f"requests={n} is outside 0..{most}")
        se_reserve_touched(self._tickets, n)
        se_reserve_touched(self._events, n + <int64_t>self._sessions.size())
        se_reserve_touched(self._bookings, min(n, <int64_t>self._slot_bk.size()))

    def mark_known(self, patient, hospital, now):
        """``(patient, hospital)`` becomes known (a registered, returning patient).  O(1)."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int32_t p = self._patient_id(patient)
        cdef int64_t h = _int(hospital, "hospital")
        if h < 0 or h > MAX_LABEL:
            raise InvalidArgument(f"hospital={h} is outside 0..{MAX_LABEL}")
        cdef int64_t t = self._check_now(now)
        if self._jst:
            j_rare(self, OP_MARK_KNOWN, 3, p, h, t, 0, 0)
        self._begin(t)
        self._mark_known(p, <int32_t>h)
        if self._n_open:
            wl_recheck_patient(self, p, t)
        j_end(self)

    def advance(self, now):
        """Run the timers due by ``now`` and move the clock.  O(k log n) for k due timers."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int64_t t = self._check_now(now)
        if self._jst:
            j_advance(self, t)
        else:
            self._begin(t)

    def drain_events(self):
        """Events since the last drain, as ``(kind, at, session, booking, patient, account,
        detail, slot, reason)``."""
        if self._jst == J_FAILED:
            j_raise(self)
        if self._jst:
            j_drain(self)
        out = [(e.kind, e.at, e.session, e.booking, e.patient, e.account, e.detail, e.slot,
                e.reason) for e in self._events]
        self._events.clear()
        j_end(self)
        return out

    def drain_events_array(self):
        """Events since the last drain as a dict of numpy arrays (int64 ``kind``, ``at``,
        ``session``, ``booking``, ``patient``, ``account``, ``detail``; int32 ``slot``; int16
        ``reason``); clears them.  O(n) in C."""
        if self._jst == J_FAILED:
            j_raise(self)
        if self._jst:
            j_drain(self)
        cdef Py_ssize_t n = self._events.size(), i
        cols = {name: np.empty(n, dtype=np.int64) for name in
                ("kind", "at", "session", "booking", "patient", "account", "detail")}
        cols["slot"] = np.empty(n, dtype=np.int32)
        cols["reason"] = np.empty(n, dtype=np.int16)
        cdef int32_t[::1] csl = cols["slot"]
        cdef int16_t[::1] crs = cols["reason"]
        cdef int64_t[::1] ck = cols["kind"]
        cdef int64_t[::1] ca = cols["at"]
        cdef int64_t[::1] cs = cols["session"]
        cdef int64_t[::1] cb = cols["booking"]
        cdef int64_t[::1] cp = cols["patient"]
        cdef int64_t[::1] cacc = cols["account"]
        cdef int64_t[::1] cd = cols["detail"]
        cdef const Event* e
        with nogil:
            for i in range(n):
                e = &self._events[i]
                ck[i] = e.kind
                ca[i] = e.at
                cs[i] = e.session
                cb[i] = e.booking
                cp[i] = e.patient
                cacc[i] = e.account
                cd[i] = e.detail
                csl[i] = e.slot
                crs[i] = e.reason
        self._events.clear()
        j_end(self)
        return cols

    def drain_events_list(self, type event_type, list kinds, list reasons, list sessions,
                          list patients, list accounts):
        """Events since the last drain as a list of ``event_type`` tuples; clears them.

        Row i is ``event_type(kinds[kind], at, sessions[session] or None,
        booking or None, patients[patient] or None, accounts[account] or None,
        detail, slot or None, reasons[reason])`` (None where the id is -1 or
        the slot 0): what ``Engine.events`` builds, in one pass in C with no
        column lists, prefetching the names a few events ahead (each is a
        random row of a table of millions).  ``event_type`` must be a tuple
        subclass of 9 fields without instance dicts.  Returns None, draining
        nothing, when an id or code falls outside its list (the caller then
        takes the array path).  O(n).
        """
        cdef Py_ssize_t n = self._events.size(), i, j
        cdef Py_ssize_t nk = PyList_GET_SIZE(kinds), nr = PyList_GET_SIZE(reasons)
        cdef Py_ssize_t ns = PyList_GET_SIZE(sessions), np_ = PyList_GET_SIZE(patients)
        cdef Py_ssize_t na = PyList_GET_SIZE(accounts)
        cdef const Event* e
        cdef object out, ev, x, at_obj = None
        cdef int64_t last_at = -1
        if not issubclass(event_type, tuple) or event_type.__dictoffset__ != 0:
            raise InvalidType("event_type must be a tuple subclass without a __dict__")
        if self._jst == J_FAILED:
            j_raise(self)
        for i in range(n):
            e = &self._events[i]
            if (e.kind < 0 or e.kind >= nk or e.reason < 0 or e.reason >= nr
                    or e.session >= ns or e.patient >= np_ or e.account >= na):
                return None
        if self._jst:
            j_drain(self)
        out = PyList_New(n)
        for i in range(n):
            # two stages: the names' list slots 16 events ahead, the str objects 8 ahead
            # (written out: a shared helper measured twice as slow for the whole drain)
            j = i + 16
            if j < n:
                e = &self._events[j]
                if e.patient >= 0:
                    se_prefetch(se_list_slot(patients, e.patient))
                if e.account >= 0:
                    se_prefetch(se_list_slot(accounts, e.account))
            j = i + 8
            if j < n:
                e = &self._events[j]
                if e.patient >= 0:
                    se_prefetch(PyList_GET_ITEM(patients, e.patient))
                if e.account >= 0:
                    se_prefetch(PyList_GET_ITEM(accounts, e.account))
            e = &self._events[i]
            ev = se_tuple_alloc(event_type, 9)
            x = <object>PyList_GET_ITEM(kinds, e.kind)
            Py_INCREF(x)
            PyTuple_SET_ITEM(ev, 0, x)
            if e.at != last_at or at_obj is None:   # a rush's events share a few times
                at_obj = e.at
                last_at = e.at
            Py_INCREF(at_obj)
            PyTuple_SET_ITEM(ev, 1, at_obj)
            x = <object>PyList_GET_ITEM(sessions, e.session) if e.session >= 0 else None
            Py_INCREF(x)
            PyTuple_SET_ITEM(ev, 2, x)
            x = e.booking if e.booking >= 0 else None
            Py_INCREF(x)
            PyTuple_SET_ITEM(ev, 3, x)
            x = <object>PyList_GET_ITEM(patients, e.patient) if e.patient >= 0 else None
            Py_INCREF(x)
            PyTuple_SET_ITEM(ev, 4, x)
            x = <object>PyList_GET_ITEM(accounts, e.account) if e.account >= 0 else None
            Py_INCREF(x)
            PyTuple_SET_ITEM(ev, 5, x)
            x = e.detail
            Py_INCREF(x)
            PyTuple_SET_ITEM(ev, 6, x)
            x = e.slot if e.slot > 0 else None
            Py_INCREF(x)
            PyTuple_SET_ITEM(ev, 7, x)
            x = <object>PyList_GET_ITEM(reasons, e.reason)
            Py_INCREF(x)
            PyTuple_SET_ITEM(ev, 8, x)
            # Ints, strs, None and enum members: no cycle can pass through the
            # event, so the collector need not walk it.  CPython untracks such
            # tuples itself, but only exact ones; a drain's million events kept
            # tracked made each full collection walk them all.
            PyObject_GC_UnTrack(ev)
            Py_INCREF(ev)
            PyList_SET_ITEM(out, i, ev)
        self._events.clear()
        j_end(self)
        return out

    # ------------------------------------------------------------------------
    # flags, blocks, tickets (host commands)

    cdef int32_t _key(self, int64_t kind, object key) except -1:
        """Validate a (kind, key) pair: kind 0 = account, 1 = patient."""
        if kind != 0 and kind != 1:
            raise InvalidArgument(f"kind={kind} must be 0 (account) or 1 (patient)")
        return self._account_id(key) if kind == 0 else self._patient_id(key)

    def flag(self, kind, key, reason, until, now):
        """Flag an account (kind 0) or patient (kind 1) with HOST or BLACKLIST until ``until``."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int64_t kd = _int(kind, "kind")
        cdef int32_t k = self._key(kd, key)
        cdef int64_t r = _int(reason, "reason")
        if r != FR_HOST and r != FR_BLACKLIST:
            raise InvalidArgument(f"reason={r} must be HOST or BLACKLIST")
        cdef int64_t u = _time(until, "until")
        cdef int64_t t = self._check_now(now)
        if u <= t:
            raise InvalidArgument(f"until={u} must be after now={t}")
        if self._jst:
            j_rare(self, OP_FLAG, 5, kd, k, r, u, t)
        self._begin(t)
        self._flag(<int>kd, k, <int>r, u, t)
        j_end(self)

    def unflag(self, kind, key, now):
        """End a flag now; returns whether the key was flagged."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int64_t kd = _int(kind, "kind")
        cdef int32_t k = self._key(kd, key)
        cdef int64_t t = self._check_now(now)
        cdef int64_t* fu
        cdef bint done = False
        if self._jst:
            j_rare(self, OP_UNFLAG, 3, kd, k, t, 0, 0)
        self._begin(t)
        fu = &self._accts[k].flag_until if kd == 0 else &self._pmarks[k].flag_until
        if t < fu[0]:
            fu[0] = t
            self._log(t, <int>kd, k, 0, t)
            self._event(E_UNFLAGGED, t, -1, -1, k if kd == 1 else -1, k if kd == 0 else -1, -1)
            self._recheck_key(<int>kd, k, t)
            done = True
        j_end(self)
        return done

    cdef void _recheck_key(self, int kind, int32_t k, int64_t t) noexcept nogil:
        if self._n_open:
            if kind == 0:
                wl_recheck_account(self, k, t)
            else:
                wl_recheck_patient(self, k, t)

    def block(self, kind, key, until, now):
        """Block an account or patient until ``until`` (the longer block wins)."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int64_t kd = _int(kind, "kind")
        cdef int32_t k = self._key(kd, key)
        cdef int64_t u = _time(until, "until")
        cdef int64_t t = self._check_now(now)
        cdef int64_t* bu
        if u <= t:
            raise InvalidArgument(f"until={u} must be after now={t}")
        if self._jst:
            j_rare(self, OP_BLOCK, 4, kd, k, u, t, 0)
        self._begin(t)
        bu = &self._accts[k].blocked_until if kd == 0 else &self._pmarks[k].blocked_until
        if u > bu[0]:
            bu[0] = u
        self._n_marks += 1
        if kd == 1:
            self._n_pmarks += 1
        self._log(t, <int>kd, k, -1, u)
        self._event(E_BLOCKED, t, -1, -1, k if kd == 1 else -1, k if kd == 0 else -1, -1)
        j_end(self)

    def unblock(self, kind, key, now):
        """End a block now; returns whether the key was blocked."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int64_t kd = _int(kind, "kind")
        cdef int32_t k = self._key(kd, key)
        cdef int64_t t = self._check_now(now)
        cdef int64_t* bu
        cdef bint done = False
        if self._jst:
            j_rare(self, OP_UNBLOCK, 3, kd, k, t, 0, 0)
        self._begin(t)
        bu = &self._accts[k].blocked_until if kd == 0 else &self._pmarks[k].blocked_until
        if t < bu[0]:
            bu[0] = 0
            self._event(E_UNBLOCKED, t, -1, -1, k if kd == 1 else -1, k if kd == 0 else -1, -1)
            self._recheck_key(<int>kd, k, t)
            done = True
        j_end(self)
        return done

    def import_blacklist(self, kinds, keys, untils, now):
        """Flag each row ``(kind, key, until)`` with BLACKLIST, in order, after checking all."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef object K = _int_column(kinds, "kinds")
        cdef object Y = _int_column(keys, "keys")
        cdef object U = _int_column(untils, "untils")
        cdef Py_ssize_t n = K.shape[0], i
        if Y.shape[0] != n or U.shape[0] != n:
            raise InvalidArgument("import_blacklist columns must have equal lengths")
        cdef const int64_t[::1] vk = K
        cdef const int64_t[::1] vy = Y
        cdef const int64_t[::1] vu = U
        for i in range(n):
            if vk[i] != 0 and vk[i] != 1:
                raise InvalidArgument(f"kinds[{i}]={vk[i]} must be 0 (account) or 1 (patient)")
            if vk[i] == 0 and not 0 <= vy[i] < <int64_t>self._acct_hist.size():
                raise UnknownAccount(f"unknown account {vy[i]} (row {i})")
            if vk[i] == 1 and not 0 <= vy[i] < <int64_t>self._patients.size():
                raise UnknownPatient(f"unknown patient {vy[i]} (row {i})")
            if not 0 <= vu[i] <= MAX_MS:
                raise InvalidArgument(f"untils[{i}]={vu[i]} is outside 0..{MAX_MS} milliseconds")
        cdef int64_t t = self._check_now(now)
        for i in range(n):
            if vu[i] <= t:
                raise InvalidArgument(f"untils[{i}]={vu[i]} must be after now={t}")
        cdef const int64_t* cols[3]
        if self._jst:
            if n:
                cols[0] = &vk[0]
                cols[1] = &vy[0]
                cols[2] = &vu[0]
            j_columns(self, OP_IMPORT_BLACKLIST, n, t, n, 3, cols)
        self._begin(t)
        for i in range(n):
            self._flag(<int>vk[i], <int32_t>vy[i], FR_BLACKLIST, vu[i], t)
        j_end(self)

    cdef int32_t _ticket_id(self, object x) except -1:
        return self._checked_id(x, "ticket", self._tickets.size(), UnknownTicket)

    def cancel_ticket(self, ticket, account, now):
        """Withdraw a QUEUED ticket (owner only); it is skipped when its turn comes."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int32_t k = self._ticket_id(ticket)
        cdef int32_t a = self._account_id(account)
        cdef int64_t t = self._check_now(now)
        cdef Ticket* tk
        cdef int code
        cdef Result r
        if self._jst:
            j_rare(self, OP_CANCEL_TICKET, 3, k, a, t, 0, 0)
        self._begin(t)
        tk = &self._tickets[k]
        if tk.account != a:
            code = _code(ST_REJECTED, R_NOT_OWNER)
        elif tk.state != K_QUEUED:
            code = _code(ST_REJECTED, R_NOT_ACTIVE)
        else:
            tk.state = K_CANCELLED
            self._unqueue_patient(k)
            code = _code(ST_CANCELLED, R_NONE)
        r = _result(code, self._tickets[k].session, -1, -1, NULL)
        r._ticket = k
        j_end(self)
        return r

    # ------------------------------------------------------------------------
    # waitlist (候补, issue 4): the C side lives in _waitlist.pxi

    cdef int32_t _request_id(self, object x) except -1:
        return self._checked_id(x, "request", self._requests.size(), UnknownRequest)

    cdef list _candidate_ids(self, object sessions):
        """A sequence of session ids (any ints), each known, as a list."""
        if isinstance(sessions, (str, bytes)) or not hasattr(sessions, "__len__"):
            raise InvalidType("sessions must be a sequence of session ids")
        try:
            items = list(sessions)
        except TypeError:
            raise InvalidType("sessions must be a sequence of session ids") from None
        return [self._session_id(x) for x in items]

    cdef int32_t _candidates(self, list ids, int32_t* out) except -1:
        """Candidate ids into ``out`` (1..wl_candidates, no repeats); returns how many."""
        cdef int32_t n = 0, i, j
        cdef int64_t v
        if not 1 <= len(ids) <= self._wl_candidates:
            raise InvalidArgument(
                f"a waitlist request names 1..{self._wl_candidates} sessions, not {len(ids)}")
        for v in ids:
            out[n] = <int32_t>v
            n += 1
        for i in range(n):
            for j in range(i):
                if out[i] == out[j]:
                    raise InvalidArgument(f"session {out[i]} is named twice")
        return n

    def join_waitlist(self, account, patient, sessions, channel, klass, deadline, now):
        """Wait for a slot of any of ``sessions`` until ``deadline`` (status WAITLISTED,
        ``request`` set), or say why not.  O(candidates x (queue checks + live bookings)).
        """
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int32_t a = self._account_id(account)
        cdef int32_t p = self._patient_id(patient)
        cdef list ids = self._candidate_ids(sessions)
        cdef int32_t c = self._channel_id(channel)
        cdef int32_t cands[8]
        cdef int32_t n = self._candidates(ids, cands)
        cdef int64_t k = _int(klass, "klass")
        if not 1 <= k <= self._wl_classes:
            raise InvalidArgument(f"klass={k} is outside 1..{self._wl_classes}")
        cdef int64_t dl = _time(deadline, "deadline")
        cdef int64_t t = self._check_now(now)
        if dl <= t:
            raise InvalidArgument(f"deadline={dl} must be after now={t}")
        cdef int32_t where = -1
        cdef int code
        cdef Result r
        if self._jst:
            j_join(self, a, p, c, k, dl, t, cands, n)
        self._begin(t)
        code = wl_join(self, a, p, cands, n, c, <int32_t>k, dl, t, &where)
        if (code & 0xFF) == ST_WAITLISTED:
            r = _result(code, -1, -1, -1, NULL)
            r._request = where
        else:
            r = _result(code, where, -1, -1, NULL)
        j_end(self)
        return r

    def cancel_waitlist(self, request, account, now):
        """Withdraw an OPEN request (owner only): status CANCELLED, ``request`` set.

        O(candidates).
        """
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int32_t k = self._request_id(request)
        cdef int32_t a = self._account_id(account)
        cdef int64_t t = self._check_now(now)
        cdef Request* rq
        cdef int code
        cdef Result r
        if self._jst:
            j_rare(self, OP_CANCEL_WAITLIST, 3, k, a, t, 0, 0)
        self._begin(t)
        rq = &self._requests[k]
        if rq.account != a:
            code = _code(ST_REJECTED, R_NOT_OWNER)
        elif rq.state != RQ_OPEN:
            code = _code(ST_REJECTED, R_NOT_ACTIVE)
        else:
            rq.state = RQ_CANCELLED
            rq.changed_at = t
            wl_close(self, k)
            code = _code(ST_CANCELLED, R_NONE)
        r = _result(code, -1, -1, -1, NULL)
        r._request = k
        j_end(self)
        return r

    cdef tuple _request_tuple(self, int32_t k):
        cdef const Request* rq = &self._requests[k]
        cdef const RequestCold* rc = &self._rq_cold[k]
        return (rq.account, rq.patient, rq.channel, rq.klass, rq.state,
                tuple([rq.cand[i] for i in range(rq.n_cand)]), rc.created_at, rc.deadline,
                rq.changed_at, rq.booking, rq.filled_session, rq.skip_reason)

    def waitlist_info(self, request):
        """``(account, patient, channel, klass, state, candidates, created_at, deadline,
        changed_at, booking, filled_session, skip_reason)``."""
        return self._request_tuple(self._request_id(request))

    cdef list _session_waitlist(self, int32_t sid):
        cdef const WlSession* w
        cdef const WlQueue* q
        cdef int32_t cl, i, r, bi
        out = []
        if self._wl_of.size() == 0:
            return out
        bi = self._wl_of[sid]
        if bi < 0:
            return out
        w = &self._wls[bi]
        for cl in range(self._wl_classes + 1):
            q = &w.q[cl]
            for i in range(q.head, q.len):
                r = self._wq[q.off + i].req
                if self._requests[r].state == RQ_OPEN:
                    out.append(r)
        return out

    def session_waitlist(self, session):
        """The OPEN request ids listing ``session``, in fill order (class, then FIFO)."""
        return self._session_waitlist(self._session_id(session))

    def booking_request(self, booking):
        """The request booking ``booking`` filled, -1 if none.  O(log fills)."""
        return wl_booking_request(self, self._booking_id(booking))

    @property
    def n_requests(self):
        return self._requests.size()

    # ------------------------------------------------------------------------
    # credit and prepaid balances (issue 5): the C side lives in _credit.pxi

    cdef Wallet* _wallet_for(self, int32_t p):
        """The patient's wallet, allocating the wallets on first use (invisible state)."""
        cr_wallets_need(self)
        return &self._wallets[p]

    def settle(self, booking, amount, now):
        """Charge an ARRIVED, unsettled booking ``amount`` fen: its hold and the free
        balance first, then its credit hold and the free credit (billed).

        Returns ``(code, from_balance, from_credit, bill)``: code ``ARRIVED | NONE <<
        8``, or ``REJECTED | reason << 8`` (NO_COVER, CREDIT_SUSPENDED; nothing
        changes, the split is what would have been taken); bill -1 when none.
        """
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int32_t b = self._booking_id(booking)
        cdef int64_t x = _amount(amount, "amount", 0)
        cdef int64_t t = self._check_now(now)
        cdef int64_t xb, xc
        cdef int32_t bill
        cdef int reason
        # state before timers: no timer changes an ARRIVED booking or its charge
        if self._bookings[b].state != B_ARRIVED:
            raise InvalidState(f"booking {b} is not ARRIVED")
        if self._bookings[b].flags & F_SETTLED:
            raise InvalidState(f"booking {b} is already settled")
        if self._jst:
            j_rare(self, OP_SETTLE, 3, b, x, t, 0, 0)
        cr_covers_need(self)
        cr_wallets_need(self)
        self._begin(t)
        reason = cr_charge(self, b, x, t, &xb, &xc, &bill)
        j_end(self)
        if reason:
            return (_code(ST_REJECTED, reason), xb, xc, -1)
        return (_code(ST_ARRIVED, R_NONE), xb, xc, bill)

    def top_up(self, patient, amount, now):
        """Add ``amount`` (1..MAX_FEN) fen to the prepaid balance; returns the balance."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int32_t p = self._patient_id(patient)
        cdef int64_t x = _amount(amount, "amount", 1)
        cdef Wallet* w = self._wallet_for(p)
        if w.balance + x > MAX_BALANCE:     # an amount check (no timer moves money)
            raise InvalidArgument(f"a balance may not pass {MAX_BALANCE} fen")
        cdef int64_t t = self._check_now(now)
        if self._jst:
            j_rare(self, OP_TOP_UP, 3, p, x, t, 0, 0)
        self._begin(t)
        w = &self._wallets[p]
        w.balance += x
        self._purses[p].free += x
        cr_record(self, p, LA_EXTERNAL, LA_BALANCE, x, MK_TOP_UP, -1, -1, t)
        j_end(self)
        return self._wallets[p].balance

    def refund(self, patient, amount, now):
        """Pay ``amount`` fen (at most the balance) out of the free balance; returns
        ``(reason, balance)``: 0, or NO_COVER (nothing refunded) when the free balance
        after the timers is short (a ticket they served may have held some)."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int32_t p = self._patient_id(patient)
        cdef int64_t x = _amount(amount, "amount", 1)
        cdef Wallet* w = self._wallet_for(p)
        if x > w.balance:        # an amount check, on the state before timers
            raise InvalidArgument(f"amount={x} is more than the balance {w.balance}")
        cdef int64_t t = self._check_now(now)
        cdef int reason = 0
        if self._jst:
            j_rare(self, OP_REFUND, 3, p, x, t, 0, 0)
        self._begin(t)
        w = &self._wallets[p]
        if x > self._purses[p].free:
            reason = R_NO_COVER
        else:
            w.balance -= x
            self._purses[p].free -= x
            cr_record(self, p, LA_BALANCE, LA_EXTERNAL, x, MK_REFUND, -1, -1, t)
        j_end(self)
        return reason, self._wallets[p].balance

    def open_line(self, patient, kind, limit, now):
        """Open (or reopen a CLOSED) credit line of ``kind`` (LineKind) with ``limit`` fen
        (-1: the kind's start)."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int32_t p = self._patient_id(patient)
        cdef int64_t k = _int(kind, "kind")
        if k != LK_OUTPATIENT and k != LK_INPATIENT:
            raise InvalidArgument(f"kind={k} must be 1 (outpatient) or 2 (inpatient)")
        cdef int64_t lim = _int(limit, "limit")
        if lim != -1 and not 0 <= lim <= MAX_FEN:
            raise InvalidArgument(f"limit={lim} must be -1 or in 0..{MAX_FEN} fen")
        cdef int64_t t = self._check_now(now)
        cdef Wallet* w = self._wallet_for(p)
        if w.state == LS_OPEN or w.state == LS_SUSPENDED:
            raise InvalidState(f"patient {p} already has a credit line")
        if self._jst:
            j_rare(self, OP_OPEN_LINE, 4, p, k, lim, t, 0)
        self._begin(t)
        w = &self._wallets[p]
        w.kind = <uint8_t>k
        lim = self._terms[4 * (k - 1)] if lim == -1 else lim
        self._purses[p].room += lim - w.limit      # room = limit - used - held
        w.limit = lim
        cr_set_state(self, p, LS_OPEN)
        w.streak = 0
        w.n_overdue = 0
        j_end(self)

    def close_line(self, patient, now):
        """Close an OPEN or SUSPENDED line with nothing used or held on it."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int32_t p = self._patient_id(patient)
        cdef int64_t t = self._check_now(now)
        cdef Wallet* w = self._wallet_for(p)
        if w.state != LS_OPEN and w.state != LS_SUSPENDED:
            raise InvalidState(f"patient {p} has no open credit line")
        if w.limit - self._purses[p].room > 0:      # used + held
            raise InvalidState(f"patient {p}'s line has {w.limit - self._purses[p].room} "
                               "fen used or held")
        cdef bint done = False
        if self._jst:
            j_rare(self, OP_CLOSE_LINE, 2, p, t, 0, 0, 0)
        self._begin(t)
        w = &self._wallets[p]
        if w.limit - self._purses[p].room <= 0:     # else a ticket the timers served holds some
            cr_set_state(self, p, LS_CLOSED)
            done = True
        j_end(self)
        return done

    def set_limit(self, patient, limit, now):
        """Set the line's limit (never below used + held); returns the limit."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int32_t p = self._patient_id(patient)
        cdef int64_t lim = _amount(limit, "limit", 0)
        cdef int64_t t = self._check_now(now)
        cdef Wallet* w = self._wallet_for(p)
        if w.state == LS_NONE or w.state == LS_CLOSED:
            raise InvalidState(f"patient {p} has no open credit line")
        if self._jst:
            j_rare(self, OP_SET_LIMIT, 3, p, lim, t, 0, 0)
        self._begin(t)
        w = &self._wallets[p]
        if lim < w.limit - self._purses[p].room:   # used + held
            lim = w.limit - self._purses[p].room
        cr_set_limit(self, p, lim, t)
        j_end(self)
        return self._wallets[p].limit

    def repay(self, patient, amount, now):
        """Repay ``amount`` (<= used) fen on the unpaid bills, oldest first; returns the
        count of bills paid in full."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef int32_t p = self._patient_id(patient)
        cdef int64_t x = _amount(amount, "amount", 1)
        cdef Wallet* w = self._wallet_for(p)
        if x > w.used:                      # an amount check (no timer changes used)
            raise InvalidArgument(f"amount={x} is more than the {w.used} fen owed")
        cdef int64_t t = self._check_now(now)
        cdef int64_t paid
        if self._jst:
            j_rare(self, OP_REPAY, 3, p, x, t, 0, 0)
        self._begin(t)
        paid = cr_repay(self, p, x, t)
        j_end(self)
        return paid

    @property
    def ncmd(self):
        """Commands run so far (each money movement records its command's number)."""
        return self._ncmd

    @property
    def n_bills(self):
        return self._bills.size()

    @property
    def n_movements(self):
        return self._moves.size()

    def wallet(self, patient):
        """``(balance, bal_held, kind, state, limit, used, held, streak, n_overdue)``."""
        return cr_wallet_tuple(self, self._patient_id(patient))

    def check_cover(self, patient, amount):
        """``(reason, from_balance, from_credit)``: could ``amount`` fen be covered now
        (reason 0)?  Changes nothing."""
        cdef int32_t p = self._patient_id(patient)
        cdef int64_t x = _amount(amount, "amount", 1)
        cdef int64_t fb, fc
        cdef int reason
        if <size_t>p >= self._wallets.size():
            return (R_NO_COVER, 0, x)       # no wallet: nothing free (as a zero wallet)
        reason = cr_cover(self, p, x, &fb, &fc)
        return (reason, fb, fc)

    def booking_cover(self, booking):
        """``(hold_balance, hold_credit, settled)``; settled -1 until charged."""
        return cr_cover_tuple(self, self._booking_id(booking))

    def request_cover(self, request):
        """``(hold_balance, hold_credit)`` of a waitlist request."""
        return cr_rcover_tuple(self, self._request_id(request))

    def bill_info(self, bill):
        """``(patient, booking, amount, paid, created_at, due_at, state, paid_at)``."""
        return cr_bill_tuple(self, self._checked_id(bill, "bill", self._bills.size(), UnknownBill))

    def patient_bills(self, patient):
        """The patient's bill ids, ascending."""
        return cr_patient_bills(self, self._patient_id(patient))

    def movements(self, start=0):
        """Ledger movements from ``start`` on: ``(seq, ncmd, at, patient, source, target,
        amount, kind, booking, bill)``."""
        cdef int64_t i = _int(start, "start")
        if i < 0:
            raise InvalidArgument(f"start={i} must be >= 0")
        return [cr_move_tuple(self, i) for i in range(i, <int64_t>self._moves.size())]

    def ledger_totals(self):
        """The sum of every movement per LedgerAccount (EXTERNAL, HOSPITAL, BALANCE,
        CREDIT); they add up to 0.  O(movements)."""
        cdef int64_t tot[4]
        cdef const Move* mv
        cdef size_t i
        tot[0] = tot[1] = tot[2] = tot[3] = 0
        for i in range(self._moves.size()):
            mv = &self._moves[i]
            tot[mv.source] -= mv.amount
            tot[mv.target] += mv.amount
        return (tot[0], tot[1], tot[2], tot[3])

    def rng_next(self):
        """Advance the splitmix64 generator and return its next 64-bit output."""
        if self._jst == J_FAILED:
            j_raise(self)
        cdef uint64_t v
        if self._jst:
            j_rare(self, OP_RNG_NEXT, 0, 0, 0, 0, 0, 0)
        v = rng_step(&self._rng)
        j_end(self)
        return v

    # ------------------------------------------------------------------------
    # command journal (issue 6, docs/durability.md; the C side is _journal.pxi)

    def journal_open(self, buf, pos, next_seq, sync_every, sync, rotate):
        """Journal every later state-changing command into the writable buffer ``buf``
        (an mmap) from byte ``pos`` (8-aligned); the next record gets ``next_seq``.

        ``sync()`` is called after every ``sync_every`` records (0: never);
        ``rotate(need) -> (buf, pos)`` when a record of ``need`` bytes does not fit
        (None: the command raises JournalError).
        """
        j_open(self, buf, pos, next_seq, sync_every, sync, rotate)

    def journal_position(self):
        """``(pos, next_seq)``: where the next record goes."""
        return (self._jpos, self._jseq)

    def journal_close(self):
        """Stop journaling and release the buffer; returns ``(pos, next_seq)``.  After
        ``journal_fail`` the core stays failed."""
        return j_close(self)

    def journal_fail(self, message):
        """Release the buffer; every later command raises ``JournalError(message)``."""
        j_fail(self, message)

    def journal_note(self, payload):
        """Attach ``payload`` (bytes) to the next record written; None clears it."""
        j_note(self, payload)

    def journal_reserve(self, need):
        """Make sure the next ``need`` bytes of records fit in the current buffer
        (rotating now if not), so that a host call made of several records (a booking
        that registers new names) fails, on a full disk, before its first one."""
        if isinstance(need, bool) or not hasattr(type(need), "__index__"):
            raise InvalidType(f"need must be an int, not {type(need).__name__}")
        if not 0 <= _index(need) <= MAX_MS:
            raise InvalidArgument(f"need={need} is out of range")
        cdef int64_t n = _index(need)
        if self._jst == J_ON and n > self._jcap - self._jpos:
            j_rotate(self, n)

    def replay(self, buf, pos, end, expect_seq, note):
        """Execute the records in ``buf[pos:end]``: skip ``seq < expect_seq``, run ``seq ==
        expect_seq`` (then ``note(payload)`` if it has a note and ``note`` is not None);
        stop at a zero size or the end (status 0, END) or at an invalid record or a gap
        (status 1, BAD).  Returns ``(pos, next_seq, status)``, pos where it stopped.  A
        record with a good CRC that does not apply raises CorruptJournal (``offset`` set)
        before changing anything.  The journal must be closed (replay never journals)."""
        return j_replay(self, buf, pos, end, expect_seq, note)

    def find_record(self, buf, pos, end):
        """The offset of the first valid record at an 8-aligned offset in ``(pos, end)``,
        or -1."""
        return j_find(buf, pos, end)

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

    @property
    def n_tickets(self):
        return self._tickets.size()

    cdef tuple _ticket_tuple(self, int32_t k):
        cdef const Ticket* tk = &self._tickets[k]
        return (tk.session, tk.patient, tk.account, tk.channel, bool(tk.hold), tk.lane,
                tk.submitted_at, tk.state, tk.draw, tk.cohort_size, tk.served_at, tk.booking,
                tk.reason)

    cdef tuple _account_tuple(self, int32_t a):
        cdef const Account* ac = &self._accts[a]
        cdef const int64_t* er = self._early_ring(a)
        cdef const int64_t* cr = self._acancels.data() + <int64_t>a * self._cflag_count
        return (ac.flag_until, ac.flag_reason, ac.flag_since, ac.blocked_until, ac.tat,
                tuple([er[k] for k in range(ac.n_early)]),
                tuple([cr[k] for k in range(ac.n_cancels)]))

    cdef tuple _pflags_tuple(self, int32_t p):
        cdef const Mark* m = &self._pmarks[p]
        return (m.flag_until, m.flag_reason, m.flag_since, m.blocked_until)

    def ticket_info(self, ticket):
        """``(session, patient, account, channel, hold, lane, submitted_at, state, draw,
        cohort_size, served_at, booking, reason)``."""
        return self._ticket_tuple(self._ticket_id(ticket))

    def position(self, ticket):
        """``(state, ahead, draw, cohort_size)``; ``ahead`` is -1 while the ticket's cohort
        is collecting or when it is not QUEUED.  O(queue length)."""
        cdef int32_t k = self._ticket_id(ticket)
        cdef const Ticket* tk = &self._tickets[k]
        cdef int64_t ahead = -1
        cdef int32_t j
        if tk.state == K_QUEUED:
            if tk.where == W_QUEUE:
                ahead = 0
                j = self._sx[tk.session].q_head
                while j >= 0 and j != k:
                    if self._tickets[j].state == K_QUEUED:
                        ahead += 1
                    j = self._tickets[j].next
            elif tk.where == W_NONE:
                ahead = 0
        return (tk.state, ahead, tk.draw, tk.cohort_size)

    def account_info(self, account):
        """``(flag_until, flag_reason, flag_since, blocked_until, tat, early, cancels)``."""
        return self._account_tuple(self._account_id(account))

    def patient_flags(self, patient):
        """``(flag_until, flag_reason, flag_since, blocked_until)``."""
        return self._pflags_tuple(self._patient_id(patient))

    def flag_log(self):
        """Every flag, unflag and block as ``(at, kind, key, reason, until)``, in order."""
        return [(r.at, r.kind, r.key, r.reason, r.until) for r in self._flag_log]

    cdef list _list_from(self, int32_t k):
        out = []
        while k >= 0:
            out.append(k)
            k = self._tickets[k].next
        return out

    def session_counts(self, session):
        """Slots by SlotState order (free, held, booked, arrived, no_show, cancelled, blocked,
        returning).

        O(capacity); counts are not stored (they would cost 14 bytes a session).
        """
        cdef const Session* s = &self._sessions[self._session_id(session)]
        cdef int64_t counts[8]
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
                R_SESSION_SUSPENDED if bk.flags & F_SUSPENDED
                else (R_SLOT_RELEASED if bk.flags & F_RELEASED else R_NONE))

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
        cdef int32_t sid, b, p, c, a, k
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
                "collecting": bool(s.flags & SF_COLLECTING),
                "cohort_close": self._sx[sid].cohort_close,
                "cohort": list(self._fair[sid]) + list(self._slow[sid]),
                "queue": self._list_from(self._sx[sid].q_head),
                "last_cancel": (self._sx[sid].last_cancel_at, self._sx[sid].last_cancel_acct),
                "doctor": self._sx[sid].doctor,
                "waitlist": self._session_waitlist(sid),
                "recheck_at": wl_recheck_at(self, sid),
                "scan_k": wl_scan_k(self, sid),
            })
        return {
            "now": self._now,
            "rng": self._rng,
            "seq": self._seq,
            "sessions": sessions,
            "bookings": [self._booking_tuple(b) for b in range(<int32_t>self._bookings.size())],
            "patients": [self._patient_tuple(p) + self._pflags_tuple(p)
                         for p in range(<int32_t>self._patients.size())],
            "accounts": [self._account_tuple(a) for a in range(<int32_t>self._accts.size())],
            "tickets": [self._ticket_tuple(k) for k in range(<int32_t>self._tickets.size())],
            "flag_log": self.flag_log(),
            "known": self._known_pairs(),
            "timers": sorted([(t.due, t.seq, t.kind, t.id) for t in self._timers]),
            "events": [(e.kind, e.at, e.session, e.booking, e.patient, e.account, e.detail,
                        e.slot, e.reason) for e in self._events],
            "requests": [self._request_tuple(k) for k in range(<int32_t>self._requests.size())],
            "returns": [(x.session, x.slot) for x in self._returns],
            "ncmd": self._ncmd,
            "wallets": self._dump_wallets(),
            "covers": [(b,) + cr_cover_tuple(self, b)
                       for b in range(<int32_t>self._bcover.size() if self._money else 0)
                       if b < <int32_t>self._bookings.size()
                       if self._bcover[b].hb or self._bcover[b].hc
                       or self._bookings[b].flags & F_SETTLED],
            "request_covers": [(r,) + cr_rcover_tuple(self, r)
                               for r in range(<int32_t>self._rcover.size())
                               if self._rcover[r].hb or self._rcover[r].hc],
            "bills": [cr_bill_tuple(self, k) for k in range(<int32_t>self._bills.size())],
            "movements": [cr_move_tuple(self, i) for i in range(<int64_t>self._moves.size())],
        }

    cdef list _dump_wallets(self):
        cdef int32_t p
        out = []
        for p in range(<int32_t>self._wallets.size()):
            w = cr_wallet_tuple(self, p)
            if any(w):
                out.append((p,) + w)
        return out

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

    def snapshot(self):
        """The whole state as bytes (not the policy, not the bindings): a header naming
        the format version, every struct's size and the policy's shape, then every
        state vector's bytes (_snapshot.pxi).  O(state), a memcpy per vector."""
        return sn_snapshot(self)

    def restore(self, data):
        """Load ``snapshot()`` bytes (bytes, bytearray or memoryview) into this freshly
        constructed Core of the same policy: then ``dump()``, ``state_hash()`` and every
        later command are as on the Core that wrote them.  InvalidState on a Core with
        state, SnapshotError on bad data: this Core is then unchanged."""
        sn_restore(self, data)

    def memory_usage(self):
        """Bytes allocated per structure (capacity x element size of every array).

        ``slots`` covers the slot arrays and free bitmaps (dead regions left by
        add_capacity included); ``known`` estimates the hash set's buckets and nodes.
        """
        out = {
            "sessions": self._sessions.capacity() * sizeof(Session)
            + self._sx.capacity() * sizeof(SessionX)
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
            + self._scratch.capacity() * sizeof(int32_t)
            + self._accts.capacity() * sizeof(Account)
            + (self._early.capacity() + self._acancels.capacity()) * sizeof(int64_t),
            "risk": self._pmarks.capacity() * sizeof(Mark)
            + self._p_tq.capacity() * sizeof(int32_t)
            + self._flag_log.capacity() * sizeof(FlagRow),
            "tickets": self._tickets.capacity() * sizeof(Ticket)
            + self._shuf.capacity() * sizeof(int32_t),
            "timers": self._timers.capacity() * sizeof(Timer),
            "events": self._events.capacity() * sizeof(Event),
            "known": self._known.capacity() * sizeof(uint64_t),
            "names": (self._aidx.capacity() + self._pidx.capacity() + self._sidx.capacity())
            * sizeof(NameSlot),
            "waitlist": self._requests.capacity() * sizeof(Request)
            + self._rq_cold.capacity() * sizeof(RequestCold)
            + (self._wq.capacity() + self._wq_keep.capacity()) * sizeof(WlEntry)
            + self._wls.capacity() * sizeof(WlSession)
            + (self._wl_of.capacity() + self._wl_open.capacity() + self._p_rq.capacity()
               + self._a_rq.capacity()
               + self._rq_scratch.capacity() + self._left.capacity()) * sizeof(int32_t)
            + self._rq_open.capacity() * sizeof(uint64_t)
            + self._filled.capacity() * sizeof(FilledRec)
            + self._returns.capacity() * sizeof(ReturnRec),
            "credit": self._wallets.capacity() * sizeof(Wallet)
            + self._purses.capacity() * sizeof(Purse)
            + self._bcover.capacity() * sizeof(Cover)
            + self._rcover.capacity() * sizeof(Cover)
            + self._bills.capacity() * sizeof(Bill)
            + self._moves.capacity() * sizeof(Move),
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
        cdef int64_t counts[8]
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
                assert b >= SB_RETURNING and b < nb, f"session {sid} slot {i + 1}: bad cell {b}"
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
            assert qsum == counts[S_FREE] + counts[S_BLOCKED] + counts[S_RETURNING], \
                f"session {sid}: quota does not match open slots"
            if s.flags & SF_SUSPENDED:
                assert counts[S_FREE] == 0 and counts[S_HELD] == 0 and counts[S_BOOKED] == 0
                assert counts[S_BLOCKED] == 0 and counts[S_RETURNING] == 0 and qsum == 0
        assert n_free == self._n_free, "free slot total drifted"
        for b in range(<int32_t>nb):
            bk = &self._bookings[b]
            assert 1 <= bk.state <= 6, f"booking {b}: bad state"
            assert 0 <= bk.session < <int64_t>self._sessions.size()
            if bk.flags & F_RELEASED:
                assert bk.state == B_NO_SHOW and on_slot[b] < 0, \
                    f"booking {b}: released by the grace rule but still on a slot"
            elif bk.state <= B_NO_SHOW:
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
            assert 0 <= self._timers[i].seq < self._seq
            assert 1 <= self._timers[i].kind <= N_TIMER_KINDS
            if i:
                assert not timer_before(self._timers[i], self._timers[(i - 1) >> 1]), "heap order"
        self._check_tickets()
        wl_check(self)
        cr_check(self)

    cdef _check_tickets(self):
        """Tickets against the cohort lists, drain queues and patients' queued lists."""
        cdef int64_t nt = self._tickets.size(), n_q = 0, n_tq = 0
        cdef int32_t sid, k, p, j, lst
        cdef const Ticket* tk
        cdef const SessionX* sx
        cdef vector[int8_t] seen
        cdef bint drain_pending
        seen.resize(nt, 0)
        assert <int64_t>self._sx.size() == <int64_t>self._sessions.size()
        assert self._fair.size() == self._slow.size() == self._sx.size()
        assert self._accts.size() == self._acct_hist.size()
        assert self._pmarks.size() == self._patients.size() == self._p_tq.size()
        for sid in range(<int32_t>self._sessions.size()):
            sx = &self._sx[sid]
            collecting = bool(self._sessions[sid].flags & SF_COLLECTING)
            if not collecting:
                assert self._fair[sid].size() == 0 and self._slow[sid].size() == 0, \
                    f"session {sid}: stale cohort"
            for lst in range(2):
                for k in (list(self._fair[sid]) if lst == 0 else list(self._slow[sid])):
                    assert 0 <= k < nt, f"session {sid}: bad ticket {k} in a cohort"
                    assert not seen[k], f"ticket {k} is in two queues"
                    seen[k] = 1
                    tk = &self._tickets[k]
                    assert tk.session == sid and tk.where == W_FAIR + lst, f"ticket {k}: wrong list"
                    assert tk.draw == -1 and tk.lane == lst
            assert bool(self._sessions[sid].flags & SF_QUEUE) == (sx.q_head >= 0)
            assert bool(self._sessions[sid].flags & SF_LAST_CANCEL) == (sx.last_cancel_acct >= 0)
            k = sx.q_head
            j = -1
            while k >= 0:
                assert 0 <= k < nt, f"session {sid}: bad ticket {k} in the queue"
                assert not seen[k], f"ticket {k} is in two queues"
                seen[k] = 1
                tk = &self._tickets[k]
                assert tk.session == sid and tk.where == W_QUEUE, f"ticket {k}: wrong list"
                j = k
                k = tk.next
            assert j == sx.q_tail
            if self._gap > 0 and sx.q_head >= 0:
                assert self._sessions[sid].flags & SF_DRAIN, f"session {sid}: queue not drained"
        for k in range(<int32_t>nt):
            tk = &self._tickets[k]
            assert K_QUEUED <= tk.state <= K_CANCELLED
            assert 0 <= tk.session < <int64_t>self._sessions.size()
            if tk.where != W_NONE:
                assert seen[k], f"ticket {k}: says it is on a list it is not on"
            if tk.state == K_QUEUED:
                n_q += 1
                assert tk.served_at == -1 and tk.booking == -1
                if tk.where == W_NONE:
                    assert tk.lane == 1 and tk.draw == -1, f"ticket {k}: lost its queue"
            elif tk.state == K_SERVED:
                assert 0 <= tk.booking < <int64_t>self._bookings.size()
                assert self._bookings[tk.booking].patient == tk.patient
            else:
                assert tk.booking == -1
            if tk.draw >= 0:
                assert tk.draw < tk.cohort_size
            pos = self.position(k)
            assert pos[1] >= -1, "ahead is negative"
        for p in range(<int32_t>self._patients.size()):
            k = self._p_tq[p]
            while k >= 0:
                tk = &self._tickets[k]
                assert tk.patient == p and tk.state == K_QUEUED, \
                    f"patient {p}: queued list holds ticket {k} in state {tk.state}"
                n_tq += 1
                assert n_tq <= n_q, "queued lists too long (a cycle?)"
                k = tk.p_next
        assert n_tq == n_q == self._n_queued, "queued lists do not hold exactly the QUEUED tickets"


cdef inline bint _limit_hit(Core self, const Patient* pt, int64_t now, int32_t n_lim,
                            int64_t* cnts) noexcept nogil:
    """Whether the patient hit one of the n_lim patient-limit rows: one newest-first
    walk of its history counts every row into ``cnts`` (n_lim zeroed entries)."""
    cdef int32_t b = pt.hist, k
    cdef const Booking* bk
    cdef int64_t cutoff = now - self._lim_max_window
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
            return True
    return False


include "_waitlist.pxi"
include "_credit.pxi"
include "_journal.pxi"
include "_snapshot.pxi"
