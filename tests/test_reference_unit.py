"""Hand-checked cases of docs/semantics.md, run on every available backend.

Each test pins one tricky rule with numbers worked out by hand: the order of
checks, quota choice, timers at equal times, strikes and bans, the cancel
cut-off, roll-over, suspension, and the dump layout.  Times are small ints (ms)
so the arithmetic is easy to follow.
"""
from __future__ import annotations

import numpy as np
import pytest

from slotengine import errors
from slotengine.outcomes import BookingState as B
from slotengine.outcomes import EventKind as E
from slotengine.outcomes import Reason as R
from slotengine.outcomes import SlotState as S
from slotengine.outcomes import Status
from slotengine._core import Core as FastCore
from slotengine.policy import CorePolicy
from slotengine.reference import Core as RefCore

CLASSES = {"core": FastCore, "reference": RefCore}

# Three channels: 0 public, 1 and 2 others.  Nothing tight unless a test says so.
BASE = CorePolicy(
    n_channels=3, public_channel=0, hold_ms=10, patient_limits=(),
    one_per_department_day=False, account_patients=0, account_window_ms=100,
    bar_first_visit_expert=False, ban_ms=(100, 200, 300), strike_window_ms=1000,
    cancel_strikes=0, cancel_window_ms=100,
)
PUB, CH1, CH2 = 0, 1, 2


@pytest.fixture
def make(backend):
    """``make(**policy_changes)`` -> a backend (conftest's ``backend``) with 4 patients and 4
    accounts; every one built must still pass its invariants when the test ends."""
    cls = CLASSES[backend]
    built = []

    def build(**changes):
        core = cls(BASE._replace(**changes), 7)
        core.ensure_patients(4)
        core.ensure_accounts(4)
        built.append(core)
        return core
    yield build
    for core in built:
        core._check_invariants()


def session(core, *, hospital=0, department=0, tier=0, day=0, starts_at=1000, end_at=1100,
            rollover_at=900, cutoff=800, slot_ms=10, quotas=(2, 0, 0), release=(0, 0, 0),
            now=None, doctor=-1, fee=0):
    return core.add_session(hospital, department, tier, day, starts_at, end_at, rollover_at,
                            cutoff, slot_ms, sum(quotas), fee, list(quotas), list(release),
                            core.now if now is None else now, doctor)


def book(core, now, *, account=0, patient=0, s=0, channel=PUB, hold=False):
    return core.book(account, patient, s, channel, now, hold)


# -- booking and its checks ---------------------------------------------------------


def test_book_takes_lowest_free_slot_and_reports_window(make):
    c = make()
    session(c, quotas=(3, 0, 0))
    r1 = book(c, 10, patient=0)
    r2 = book(c, 10, patient=1, hold=True)
    assert (r1.status, r1.reason, r1.slot, r1.booking, r1.window, r1.session) == \
        (Status.BOOKED, R.NONE, 1, 0, (1000, 1010), 0)
    assert r2.as_tuple() == (int(Status.HELD), 0, 2, 1) and r2.window == (1010, 1020)
    assert r1.ok and r2.ok and r1.ticket is None
    assert c.booking_info(1) == (0, 2, 1, 0, PUB, PUB, int(B.HELD), 10, 10, 20, 0)
    assert c.cancel(0, 0, 11).status == Status.CANCELLED
    assert book(c, 12, patient=2).slot == 1  # the freed slot is the lowest again


def test_rejected_book_changes_only_the_clock(make):
    c = make()
    session(c, release=(50, 50, 50))
    before = c.dump()
    r = book(c, 10)
    assert r.as_tuple() == (int(Status.REJECTED), int(R.NOT_RELEASED), 0, -1)
    assert (r.slot, r.booking, r.window) == (None, None, None) and not r.ok
    after = c.dump()
    assert after.pop("now") == 10 and before.pop("now") == 0
    assert after.pop("ncmd") == 2 and before.pop("ncmd") == 1  # a REJECTED command counts
    assert after == before


def test_request_stage_order_suspended_then_closed_then_release(make):
    c = make()
    session(c, release=(500, 500, 500), end_at=1100)
    assert book(c, 10).reason == R.NOT_RELEASED
    assert book(c, 1100).reason == R.SESSION_CLOSED  # closed wins over not released
    c2 = make()
    session(c2, release=(500, 500, 500))
    c2.suspend(0, 5)
    assert book(c2, 2000).reason == R.SESSION_SUSPENDED  # suspended wins over closed


def test_closed_by_clock_before_the_timer_runs(make):
    # now >= end_at is closed even though SESSION_END has not been handled yet:
    # the timer was pushed by add_session at now=end_at and runs at the next command.
    c = make()
    session(c, starts_at=10, end_at=20, rollover_at=5, cutoff=5, now=30)
    assert not c.session_flags(0)[2]
    assert book(c, 30).reason == R.SESSION_CLOSED
    assert c.session_flags(0)[2]


def test_release_either_channel_or_public_opens(make):
    c = make()
    session(c, quotas=(1, 1, 0), release=(100, 50, 500))
    r = book(c, 60, channel=CH2)  # CH2 not released, public not released
    assert r.reason == R.NOT_RELEASED
    r = book(c, 60, channel=CH1)  # CH1 released: draws from CH1
    assert r.status == Status.BOOKED and c.booking_info(r.booking)[5] == CH1
    r = book(c, 100, channel=CH2, patient=1)  # CH2 not released but public is: draws public
    assert r.status == Status.BOOKED and c.booking_info(r.booking)[4:6] == (CH2, PUB)


def test_quota_exhausted_versus_full(make):
    c = make()
    session(c, quotas=(0, 1, 1))
    assert book(c, 10, channel=PUB).reason == R.QUOTA_EXHAUSTED  # free slots, none for public
    assert book(c, 10, channel=CH1).status == Status.BOOKED
    assert book(c, 10, channel=CH1, patient=1).reason == R.QUOTA_EXHAUSTED
    assert book(c, 10, channel=CH2, patient=1).status == Status.BOOKED
    assert book(c, 10, channel=CH2, patient=2).reason == R.FULL  # FULL is checked first


def test_blocked_slot_is_not_free_and_keeps_its_quota(make):
    c = make()
    session(c, quotas=(2, 0, 0))
    assert c.block_slot(0, 1, 5) is True and c.block_slot(0, 1, 5) is False
    assert book(c, 10).slot == 2
    assert book(c, 10, patient=1).reason == R.FULL
    assert c.session_quota(0) == [1, 0, 0]
    assert c.unblock_slot(0, 1, 11) is True and c.unblock_slot(0, 1, 11) is False
    assert book(c, 12, patient=1).slot == 1
    with pytest.raises(errors.InvalidArgument):
        c.block_slot(0, 3, 12)


def test_eligibility_order(make):
    c = make(one_per_department_day=True, patient_limits=((1, 50),), account_patients=1,
             bar_first_visit_expert=True)
    session(c, quotas=(3, 0, 0))                              # s0: dept 0, day 0
    session(c, quotas=(3, 0, 0), department=0, day=0)         # s1: same dept/day
    session(c, quotas=(3, 0, 0), department=1, tier=2)        # s2: other dept, expert
    assert book(c, 10, s=0).status == Status.BOOKED
    assert book(c, 11, s=0).reason == R.DUPLICATE_SESSION
    assert book(c, 11, s=1).reason == R.DUPLICATE_DEPARTMENT_DAY
    assert book(c, 11, s=2).reason == R.PATIENT_LIMIT
    assert book(c, 11, s=2, patient=1).reason == R.ACCOUNT_PATIENT_LIMIT
    assert book(c, 11, s=2, patient=1, account=1).reason == R.FIRST_VISIT_EXPERT
    c.mark_known(1, 0, 12)
    assert book(c, 12, s=2, patient=1, account=1).status == Status.BOOKED


def test_patient_limit_window_is_open_at_its_start(make):
    # counted: created_at > now - window
    c = make(patient_limits=((1, 50),))
    session(c, quotas=(2, 0, 0))
    session(c, quotas=(2, 0, 0), department=1)
    assert book(c, 10, s=0).status == Status.BOOKED
    assert book(c, 59, s=1).reason == R.PATIENT_LIMIT
    assert book(c, 60, s=1).status == Status.BOOKED


def test_patient_limit_ignores_cancelled_and_expired(make):
    c = make(patient_limits=((1, 500),))
    session(c, quotas=(3, 0, 0))
    b = book(c, 10, hold=True).booking
    assert c.cancel(b, 0, 11).status == Status.CANCELLED
    assert book(c, 12, hold=True).status == Status.HELD  # expires at 22
    assert book(c, 22).status == Status.BOOKED


def test_account_patients_counts_any_state(make):
    c = make(account_patients=1, account_window_ms=100)
    session(c, quotas=(3, 0, 0))
    b = book(c, 10, patient=0).booking
    c.cancel(b, 0, 11)
    assert book(c, 12, patient=1).reason == R.ACCOUNT_PATIENT_LIMIT
    assert book(c, 12, patient=0).status == Status.BOOKED  # same patient is fine
    assert book(c, 111, patient=1).reason == R.ACCOUNT_PATIENT_LIMIT  # booking at 12 counts
    assert book(c, 112, patient=1).status == Status.BOOKED  # 12 > 112 - 100 is false


def test_check_in_makes_the_patient_known(make):
    c = make(bar_first_visit_expert=True)
    session(c, quotas=(1, 0, 0), hospital=3, starts_at=50, end_at=60, cutoff=40, rollover_at=30)
    session(c, quotas=(1, 0, 0), hospital=3, tier=2, department=1)
    assert book(c, 10, s=1).reason == R.FIRST_VISIT_EXPERT
    b = book(c, 10, s=0).booking
    assert c.check_in(b, 55).status == Status.ARRIVED
    assert c.patient_live(0) == []
    assert c.dump()["known"] == [(0, 3)]
    assert book(c, 56, s=1).status == Status.BOOKED


# -- lifecycle -------------------------------------------------------------------------


def test_confirm_rules_and_hold_expiry_at_exactly_hold_until(make):
    c = make()
    session(c, quotas=(3, 0, 0))
    b = book(c, 10, hold=True).booking  # hold_until 20
    assert c.confirm(b, 1, 11).reason == R.NOT_OWNER
    r = c.confirm(b, 0, 20)  # the timer at 20 runs first
    assert r.as_tuple() == (int(Status.REJECTED), int(R.HOLD_EXPIRED), 1, b)
    assert r.window == (1000, 1010) and r.session == 0
    assert c.drain_events() == [(int(E.HOLD_EXPIRED), 20, 0, b, 0, 0, -1, 1, 0)]
    b2 = book(c, 21, hold=True).booking
    r = c.confirm(b2, 0, 30)  # 21 + 10 = 31: still held
    assert r.status == Status.BOOKED
    assert c.booking_info(b2)[6:10] == (int(B.BOOKED), 21, 30, 31)  # hold_until kept
    assert c.confirm(b2, 0, 31).reason == R.NOT_HELD
    assert c.drain_events() == []  # the stale HOLD_EXPIRE at 31 did nothing


def test_check_in_needs_a_confirmed_booking(make):
    c = make()
    session(c, quotas=(3, 0, 0))
    b = book(c, 10, hold=True).booking
    assert c.check_in(b, 11).reason == R.NOT_CONFIRMED
    c.cancel(b, 0, 12)
    assert c.check_in(b, 13).reason == R.NOT_ACTIVE


def test_cancel_cutoff_applies_to_booked_not_held(make):
    c = make()
    session(c, quotas=(3, 0, 0), cutoff=800)
    booked = book(c, 10).booking
    held = book(c, 799, patient=1, hold=True).booking
    assert c.cancel(booked, 0, 800).reason == R.CANCEL_CUTOFF
    assert c.cancel(held, 0, 800).status == Status.CANCELLED
    assert c.cancel(held, 0, 801).reason == R.NOT_ACTIVE
    assert c.booking_info(held)[6] == int(B.CANCELLED)


def test_rollover_then_cancel_returns_to_public(make):
    c = make()
    session(c, quotas=(1, 2, 1), rollover_at=500, release=(0, 0, 0))
    b = book(c, 10, channel=CH1).booking
    assert c.session_quota(0) == [1, 1, 1]
    c.advance(500)
    assert c.session_quota(0) == [3, 0, 0]
    assert c.session_flags(0) == (True, False, False, 4)
    assert c.drain_events() == [(int(E.QUOTA_ROLLED), 500, 0, -1, -1, -1, 2, 0, 0)]
    assert c.cancel(b, 0, 501).status == Status.CANCELLED
    assert c.session_quota(0) == [4, 0, 0]
    assert c.add_capacity(0, 2, CH2, 502) == 6  # after roll-over: public
    assert c.session_quota(0) == [6, 0, 0]


def test_cancel_before_rollover_returns_to_its_quota(make):
    c = make()
    session(c, quotas=(1, 2, 1), rollover_at=500)
    b = book(c, 10, channel=CH1).booking
    c.cancel(b, 0, 20)
    assert c.session_quota(0) == [1, 2, 1]
    assert c.add_capacity(0, 2, CH2, 21) == 6
    assert c.session_quota(0) == [1, 2, 3]
    assert c.drain_events() == [(int(E.CAPACITY_ADDED), 21, 0, -1, -1, -1, 2, 0, 0)]


def test_rollover_with_nothing_to_move_is_silent(make):
    c = make()
    session(c, quotas=(2, 0, 0), rollover_at=500)
    c.advance(600)
    assert c.session_flags(0)[0]
    assert c.drain_events() == []


# -- timers ------------------------------------------------------------------------------


def test_session_end_no_show_and_expiry_in_slot_order(make):
    c = make()
    session(c, quotas=(3, 0, 0), starts_at=100, end_at=200, rollover_at=200, cutoff=50)
    b0 = book(c, 10, patient=0).booking
    b1 = book(c, 10, patient=1, hold=True).booking  # hold_until 20
    b2 = book(c, 15, patient=2).booking
    c.confirm(b1, 0, 16)
    assert book(c, 17, patient=3, hold=True).reason == R.FULL
    c.cancel(b1, 0, 40)  # confirmed, cancelled before the cut-off: slot 2 free again
    b3 = book(c, 195, patient=3, hold=True).booking  # slot 2 again, hold_until 205
    c.drain_events()
    c.advance(200)
    # ROLLOVER(200) was pushed before SESSION_END(200): it runs first (nothing to move).
    assert c.drain_events() == [
        (int(E.NO_SHOW), 200, 0, b0, 0, 0, -1, 1, 0),
        (int(E.PATIENT_BANNED), 200, 0, b0, 0, 0, 1, 1, 0),
        (int(E.HOLD_EXPIRED), 200, 0, b3, 3, 0, -1, 2, 0),
        (int(E.NO_SHOW), 200, 0, b2, 2, 0, -1, 3, 0),
        (int(E.PATIENT_BANNED), 200, 0, b2, 2, 0, 1, 3, 0),
    ]
    assert c.session_counts(0) == (1, 0, 0, 0, 2, 0, 0, 0)
    assert c.session_flags(0) == (True, False, True, 3)
    assert c.patient_info(0) == (300, (200,), ())
    assert book(c, 201, patient=1).reason == R.SESSION_CLOSED
    c.advance(205)  # the stale HOLD_EXPIRE(b3) at 205
    assert c.drain_events() == []
    with pytest.raises(errors.InvalidState):
        c.add_capacity(0, 1, PUB, 205)


def test_timers_due_at_the_same_time_run_in_push_order(make):
    c = make()
    session(c, quotas=(0, 1, 0), starts_at=100, end_at=150, rollover_at=150, release=(0, 0, 0))
    c.advance(150)
    # ROLLOVER(150) before SESSION_END(150): the quota rolled, then the session closed.
    assert c.drain_events() == [(int(E.QUOTA_ROLLED), 150, 0, -1, -1, -1, 1, 0, 0)]
    d = c.dump()
    assert d["timers"] == [] and d["seq"] == 2
    assert d["sessions"][0]["rolled"] and d["sessions"][0]["closed"]


def test_dump_lists_pending_and_stale_timers(make):
    c = make()
    session(c, rollover_at=900, end_at=1100)
    b = book(c, 10, hold=True).booking
    c.confirm(b, 0, 11)
    assert c.dump()["timers"] == [(20, 2, 1, b), (900, 0, 2, 0), (1100, 1, 3, 0)]


# -- strikes, bans, cancellations -------------------------------------------------------------


def _no_show(c, patient, t):
    """A session ending at t with ``patient`` booked and absent: one strike at t."""
    s = session(c, quotas=(1, 0, 0), starts_at=t - 5, end_at=t, rollover_at=t - 5, cutoff=0,
                department=100 + c.n_sessions)
    assert book(c, t - 5, patient=patient, s=s).status == Status.BOOKED
    c.advance(t)


def test_bans_escalate_with_strikes_in_window(make):
    c = make(ban_ms=(100, 200, 300), strike_window_ms=1000)
    _no_show(c, 0, 10)
    assert c.patient_info(0) == (110, (10,), ())
    _no_show(c, 0, 120)
    assert c.patient_info(0) == (320, (10, 120), ())
    _no_show(c, 0, 330)
    assert c.patient_info(0) == (630, (10, 120, 330), ())
    _no_show(c, 0, 640)  # capped at len(ban_ms): oldest strike dropped, ban_ms[-1]
    assert c.patient_info(0) == (940, (120, 330, 640), ())
    assert [e[6] for e in c.drain_events() if e[0] == E.PATIENT_BANNED] == [1, 2, 3, 3]


def test_old_strikes_fall_out_of_the_window(make):
    c = make(ban_ms=(100, 200, 300), strike_window_ms=150)
    _no_show(c, 0, 10)
    _no_show(c, 0, 160)  # 10 > 160 - 150 is false: n = 1
    assert c.patient_info(0) == (260, (10, 160), ())
    s = session(c, starts_at=500, end_at=600, department=7)
    assert book(c, 259, patient=0, s=s).reason == R.PATIENT_BANNED


def test_ban_blocks_booking_until_banned_until(make):
    c = make(ban_ms=(100,))
    _no_show(c, 0, 10)
    s = session(c, quotas=(2, 0, 0), starts_at=500, end_at=600, department=7)
    assert book(c, 109, s=s).reason == R.PATIENT_BANNED
    assert book(c, 110, s=s).status == Status.BOOKED


def test_ban_never_shortens(make):
    c = make(ban_ms=(500, 10), strike_window_ms=1000)
    for dept in (1, 2):  # two sessions ending at 20 with the same absent patient
        s = session(c, quotas=(1, 0, 0), starts_at=10, end_at=20, department=dept)
        assert book(c, 5, s=s).status == Status.BOOKED
    c.advance(20)  # strikes: 20 + 500, then 20 + 10 which must not shorten the ban
    assert c.patient_info(0) == (520, (20, 20), ())


def test_cancellations_become_a_strike(make):
    c = make(cancel_strikes=2, cancel_window_ms=100, ban_ms=(50,))
    session(c, quotas=(3, 0, 0))
    b = book(c, 10).booking
    c.cancel(b, 0, 11)
    assert c.patient_info(0) == (0, (), (11,))
    h = book(c, 12, hold=True).booking
    c.cancel(h, 0, 13)  # a hold: no cancellation record
    assert c.patient_info(0) == (0, (), (11,))
    b = book(c, 14).booking
    c.cancel(b, 0, 111)  # 11 > 111 - 100 is false: one in window
    assert c.patient_info(0) == (0, (), (11, 111))
    b = book(c, 112).booking
    c.cancel(b, 0, 120)  # cap 2: (111, 120), both in window -> strike, cleared
    assert c.patient_info(0) == (170, (120,), ())
    assert c.drain_events() == [(int(E.PATIENT_BANNED), 120, 0, b, 0, 0, 1, 1, 0)]


def test_cancel_strikes_zero_records_nothing(make):
    c = make(cancel_strikes=0)
    session(c, quotas=(3, 0, 0))
    for t in (10, 20, 30):
        c.cancel(book(c, t).booking, 0, t + 1)
    assert c.patient_info(0) == (0, (), ())


# -- suspension and capacity ----------------------------------------------------------------


def test_suspend_cancels_live_bookings_and_open_slots(make):
    c = make()
    session(c, quotas=(4, 1, 0), starts_at=100, end_at=200)
    b0 = book(c, 10, patient=0).booking
    b1 = book(c, 10, patient=1, hold=True).booking
    b2 = book(c, 10, patient=2).booking
    c.check_in(b2, 15)
    c.block_slot(0, 5, 16)
    c.drain_events()
    assert c.suspend(0, 19) == 2  # b1's hold would expire at 20
    assert c.drain_events() == [
        (int(E.BOOKING_CANCELLED), 19, 0, b0, 0, 0, 101, 1, int(R.SESSION_SUSPENDED)),
        (int(E.BOOKING_CANCELLED), 19, 0, b1, 1, 0, 101, 2, int(R.SESSION_SUSPENDED)),
        (int(E.SESSION_SUSPENDED), 19, 0, -1, -1, -1, 2, 0, 0),
    ]
    assert c.session_counts(0) == (0, 0, 0, 1, 0, 4, 0, 0)
    assert c.session_quota(0) == [0, 0, 0]
    assert c.booking_info(b0)[6:] == (int(B.CANCELLED), 10, 19, 0, int(R.SESSION_SUSPENDED))
    assert c.patient_info(0) == (0, (), ())  # no strike, no cancellation record
    assert c.patient_live(0) == [] and c.patient_live(1) == []
    assert c.suspend(0, 21) == 0 and c.drain_events() == []
    assert c.cancel(b0, 0, 22).reason == R.NOT_ACTIVE
    assert c.unblock_slot(0, 5, 22) is False
    with pytest.raises(errors.InvalidState):
        c.add_capacity(0, 1, PUB, 22)
    c.advance(300)  # ROLLOVER and SESSION_END of a suspended session do nothing
    assert c.drain_events() == [] and c.session_flags(0) == (False, True, False, 5)


def test_add_capacity_limits(make):
    c = make()
    session(c, quotas=(1, 0, 0))
    for n in (0, 10_001):
        with pytest.raises(errors.InvalidArgument):
            c.add_capacity(0, n, PUB, 1)
    with pytest.raises(errors.UnknownChannel):
        c.add_capacity(0, 1, 3, 1)
    assert c.add_capacity(0, 10_000, PUB, 1) == 10_001
    assert c.session_counts(0)[0] == 10_001


# -- errors ------------------------------------------------------------------------------------


def test_errors_change_nothing_not_even_timers(make):
    c = make()
    session(c, quotas=(2, 0, 0), rollover_at=50, release=(0, 0, 0))
    book(c, 10, channel=PUB, hold=True)
    before = c.state_hash()
    calls = [
        (errors.TimeWentBackwards, lambda: c.advance(9)),
        (errors.UnknownSession, lambda: c.book(0, 0, 1, 0, 100, False)),
        (errors.UnknownPatient, lambda: c.book(0, 4, 0, 0, 100, False)),
        (errors.UnknownAccount, lambda: c.book(4, 0, 0, 0, 100, False)),
        (errors.UnknownChannel, lambda: c.book(0, 0, 0, 3, 100, False)),
        (errors.UnknownBooking, lambda: c.confirm(1, 0, 100)),
        (errors.UnknownBooking, lambda: c.check_in(-1, 100)),
        (errors.InvalidArgument, lambda: c.block_slot(0, 0, 100)),
        (errors.InvalidArgument, lambda: session(c, quotas=(1, 0, 0), tier=3, now=100)),
        (errors.InvalidArgument, lambda: c.add_session(0, 0, 0, 0, 10, 20, 0, 0, 1, 2, 0,
                                                       [1, 0, 0], [0, 0, 0], 100)),
        (errors.InvalidArgument, lambda: c.add_session(0, 0, 0, 0, 10, 20, 0, 0, 1, 1, 0,
                                                       [1, 0], [0, 0], 100)),
        (errors.TimeWentBackwards, lambda: c.book_many([0, 0], [0, 1], [0, 0], [0, 0],
                                                       [100, 99], False)),
        (errors.UnknownSession, lambda: c.book_many([0, 0], [0, 1], [0, 5], [0, 0],
                                                    [100, 100], False)),
    ]
    for err, call in calls:
        with pytest.raises(err):
            call()
        assert c.state_hash() == before, err
    assert c.now == 10


def test_typed_errors_for_wrong_types(make):
    c = make()
    session(c)
    with pytest.raises(errors.InvalidType):
        c.book(0, 0, 0, 0, 1.5, False)
    with pytest.raises(errors.InvalidType):
        c.ensure_patients("3")
    with pytest.raises(errors.InvalidArgument):
        type(c)(BASE, -1)


# -- batch, rng, dump --------------------------------------------------------------------------


def test_book_many_is_book_row_by_row(make):
    rows = [(0, 0, 0, PUB, 10), (0, 0, 0, PUB, 11), (1, 1, 0, PUB, 11), (2, 2, 0, CH1, 12),
            (3, 3, 0, PUB, 12)]
    c1, c2 = make(), make()
    for c in (c1, c2):
        session(c, quotas=(2, 1, 0))
    want = [book(c1, t, account=a, patient=p, s=s, channel=ch, hold=True).as_tuple()
            for a, p, s, ch, t in rows]
    cols = [np.array(col, dtype=np.int64 if i == 4 else np.int32) for i, col in enumerate(zip(*rows))]
    status, reason, slot, booking, ticket, retry = c2.book_many(*cols, True)
    assert (status.dtype, reason.dtype, slot.dtype, booking.dtype) == (
        np.int8, np.int16, np.int32, np.int64)
    assert ticket.dtype == retry.dtype == np.int64
    assert ticket.tolist() == [-1] * len(rows) and retry.tolist() == [0] * len(rows)
    assert list(zip(status.tolist(), reason.tolist(), slot.tolist(), booking.tolist())) == want
    assert c1.state_hash() == c2.state_hash()
    assert c1.drain_events() == c2.drain_events()


def test_rng_is_splitmix64(make):
    c = make()
    if not hasattr(c, "rng_next"):
        pytest.skip("backend has no rng_next")
    assert c.dump()["rng"] == 7
    c0 = type(c)(BASE, 0)
    assert c0.rng_next() == 0xE220A8397B1DCDAF
    assert c0.dump()["rng"] == 0x9E3779B97F4A7C15


def test_dump_layout(make):
    c = make()
    session(c, hospital=1, department=2, tier=1, day=3, quotas=(1, 1, 0), release=(5, 6, 7))
    book(c, 10, patient=1, account=2, hold=True)
    d = c.dump()
    assert sorted(d) == sorted(["now", "rng", "seq", "sessions", "bookings", "patients", "known",
                                "timers", "events", "accounts", "tickets", "flag_log",
                                "requests", "returns", "ncmd", "wallets", "covers",
                                "request_covers", "bills", "movements"])
    assert d["sessions"] == [{
        "hospital": 1, "department": 2, "tier": 1, "day": 3, "starts_at": 1000, "end_at": 1100,
        "rollover_at": 900, "cancel_cutoff_at": 800, "slot_ms": 10, "capacity": 2, "fee": 0,
        "quotas": [1, 1, 0], "quota_left": [0, 1, 0], "release": [5, 6, 7], "rolled": False,
        "suspended": False, "closed": False, "slot_states": [int(S.HELD), int(S.FREE)],
        "slot_bookings": [0, -1], "collecting": False, "cohort_close": 0, "cohort": [],
        "queue": [], "last_cancel": (0, -1),
        "doctor": -1, "waitlist": [], "recheck_at": -1, "scan_k": 0,
    }]
    assert d["bookings"] == [(0, 1, 1, 2, PUB, PUB, int(B.HELD), 10, 10, 20, 0)]
    assert d["patients"] == [(0, (), (), 0, 0, 0, 0)] * 4
    assert d["accounts"] == [(0, 0, 0, 0, 0, (), ())] * 4
    assert d["tickets"] == [] and d["flag_log"] == []
    assert d["requests"] == [] and d["returns"] == []
    assert (d["ncmd"], d["wallets"], d["covers"], d["request_covers"], d["bills"],
            d["movements"]) == (2, [], [], [], [], [])
    assert (d["now"], d["seq"], d["known"], d["events"]) == (10, 3, [], [])
    assert d["timers"] == [(20, 2, 1, 0), (900, 0, 2, 0), (1100, 1, 3, 0)]


# -- fair release, slow lane and risk (issue 3) ------------------------------------------

from slotengine.outcomes import FlagReason as F  # noqa: E402
from slotengine.outcomes import TicketState as TS  # noqa: E402

_M64 = (1 << 64) - 1


def _splitmix(state: int):
    """An independent splitmix64 for the expected lottery."""
    while True:
        state = (state + 0x9E3779B97F4A7C15) & _M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        yield z ^ (z >> 31)


def test_cohort_lottery_is_fisher_yates_on_splitmix(make):
    c = make(prequeue_ms=10, cohort_ms=5)
    session(c, quotas=(4, 0, 0), release=(0, 0, 0))  # window [-10, 5): open at 1..4
    c.flag(0, 3, int(F.HOST), 1000, 0)  # account 3 is slow: ranked after the fair three
    c.drain_events()
    for i in range(4):
        r = book(c, 1 + i, account=i, patient=i)
        assert (r.status, r.ticket, r.session, r.slot, r.booking) == (Status.QUEUED, i, 0, None, None)
    d = c.dump()["sessions"][0]
    assert (d["collecting"], d["cohort_close"], d["cohort"], d["queue"]) == (True, 5, [0, 1, 2, 3], [])
    assert c.position(0) == (int(TS.QUEUED), -1, -1, 0)
    fair = [0, 1, 2]
    rng = _splitmix(7)
    for i in range(len(fair) - 1, 0, -1):
        j = next(rng) % (i + 1)
        fair[i], fair[j] = fair[j], fair[i]
    order = fair + [3]  # a one-ticket slow list draws nothing
    c.advance(5)
    events = c.drain_events()
    assert events[0] == (int(E.COHORT_DRAWN), 5, 0, -1, -1, -1, 4, 0, 0)
    assert [e[6] for e in events[1:]] == order
    assert all(e[0] == E.TICKET_SERVED for e in events[1:])
    for rank, k in enumerate(order):
        info = c.ticket_info(k)
        assert info[7:12] == (int(TS.SERVED), rank, 4, 5, rank)  # booking ids in serve order
        assert c.booking_info(info[11])[1] == rank + 1  # slot = rank + 1
    assert c.dump()["sessions"][0]["collecting"] is False


def test_slow_lane_gcra_and_delay(make):
    c = make(slow_interval_ms=10, slow_burst=2, slow_delay_ms=5)  # tau = 10
    session(c, quotas=(4, 0, 0))
    c.flag(0, 0, int(F.HOST), 1000, 0)
    r = book(c, 10, patient=0)  # tat 0 -> 20
    assert r.status == Status.QUEUED and c.position(r.ticket) == (int(TS.QUEUED), 0, -1, 0)
    assert book(c, 11, patient=1).status == Status.QUEUED  # 11 >= 20 - 10: tat -> 30
    th = book(c, 12, patient=2)
    assert (th.status, th.reason, th.retry_after, th.ticket) == (Status.REJECTED, R.THROTTLED, 8, None)
    assert c.account_info(0)[4] == 30
    assert (15, 2, 6, 0) in c.dump()["timers"]  # SLOW_SERVE(ticket 0) at 10 + 5
    c.advance(15)
    assert c.ticket_info(0)[7:12] == (int(TS.SERVED), -1, 0, 15, 0)
    assert c.booking_info(0)[7] == 15


def test_flag_rule_unflag_block_and_log(make):
    c = make()
    session(c, quotas=(4, 0, 0))
    c.drain_events()
    c.flag(0, 0, int(F.HOST), 100, 10)
    c.flag(0, 0, int(F.BLACKLIST), 50, 20)  # shorter: nothing at all
    c.flag(0, 0, int(F.BLACKLIST), 200, 30)  # longer: reason changes, since stays
    assert c.account_info(0)[:4] == (200, int(F.BLACKLIST), 10, 0)
    assert c.unflag(0, 0, 40) and not c.unflag(0, 0, 41)
    assert c.account_info(0)[:4] == (40, int(F.BLACKLIST), 10, 0)
    c.block(1, 2, 90, 41)
    c.block(1, 2, 60, 42)  # never shortens, but is logged
    assert c.patient_flags(2) == (0, 0, 0, 90)
    assert book(c, 43, patient=2).reason == R.BLOCKED
    assert c.unblock(1, 2, 44) and not c.unblock(1, 2, 45)
    assert c.flag_log() == [(10, 0, 0, 1, 100), (30, 0, 0, 2, 200), (40, 0, 0, 0, 40),
                            (41, 1, 2, -1, 90), (42, 1, 2, -1, 60)]
    assert c.drain_events() == [
        (int(E.FLAGGED), 10, -1, -1, -1, 0, 1, 0, 0), (int(E.FLAGGED), 30, -1, -1, -1, 0, 2, 0, 0),
        (int(E.UNFLAGGED), 40, -1, -1, -1, 0, -1, 0, 0),
        (int(E.BLOCKED), 41, -1, -1, 2, -1, -1, 0, 0), (int(E.BLOCKED), 42, -1, -1, 2, -1, -1, 0, 0),
        (int(E.UNBLOCKED), 44, -1, -1, 2, -1, -1, 0, 0)]
    c.import_blacklist([1, 0], [3, 1], [70, 80], 50)
    assert c.flag_log()[-2:] == [(50, 1, 3, 2, 70), (50, 0, 1, 2, 80)]
    with pytest.raises(errors.InvalidArgument):
        c.flag(0, 0, int(F.EARLY_REQUESTS), 100, 50)  # rules flag, hosts don't


def test_early_requests_flag_the_account(make):
    c = make(early_count=2, early_ms=3, early_window_ms=100, flag_ms=500)
    session(c, quotas=(3, 0, 0), release=(5, 5, 5))
    assert book(c, 5, patient=0).status == Status.BOOKED  # early 1
    assert c.account_info(0)[6 - 1] == (5,)
    r = book(c, 7, patient=1)  # early 2: flagged first, so this one goes slow
    assert r.status == Status.QUEUED
    assert c.account_info(0) == (507, int(F.EARLY_REQUESTS), 7, 0, 8, (), ())
    assert book(c, 8, patient=2, account=1).status == Status.BOOKED  # 8 >= 5 + 3: not early
    assert c.account_info(1)[5] == ()


def test_cancellations_rebook_and_many_patients_flag(make):
    c = make(cancel_flag_count=2, cancel_flag_window_ms=100, rebook_ms=10, flag_ms=500,
             patients_flag_count=2, patients_flag_window_ms=100)
    session(c, quotas=(4, 0, 0))
    b = book(c, 10, patient=0).booking
    c.cancel(b, 0, 11)
    assert c.dump()["sessions"][0]["last_cancel"] == (11, 0)
    assert c.account_info(0)[6] == (11,)
    book(c, 15, patient=1, account=1)  # another account within 10 ms: both flagged
    assert c.flag_log() == [(15, 0, 0, int(F.CANCEL_REBOOK), 515),
                            (15, 0, 1, int(F.CANCEL_REBOOK), 515)]
    assert c.dump()["sessions"][0]["last_cancel"] == (0, -1)
    b = book(c, 30, patient=2, account=2).booking  # one patient: no flag
    c.cancel(b, 2, 31)
    b = book(c, 50, patient=2, account=2).booking  # own rebook: no flag; still one patient
    c.cancel(b, 2, 51)  # second cancellation in 100 ms: CANCELLATIONS, ring cleared
    assert c.account_info(2)[:3] == (551, int(F.CANCELLATIONS), 51) and c.account_info(2)[6] == ()
    book(c, 70, patient=3, account=3)  # 70 - 51 > 10: no rebook pair
    book(c, 71, patient=0, account=3)  # two patients in 100 ms: MANY_PATIENTS
    assert c.account_info(3)[:3] == (571, int(F.MANY_PATIENTS), 71)
    assert c.flag_log()[-1] == (71, 0, 3, int(F.MANY_PATIENTS), 571)


# -- waitlist backfill and suspension moves (issue 4) -----------------------------------

from slotengine.outcomes import RequestState as RS  # noqa: E402

OPEN, FILLED, EXPIRED, CANCELLED = int(RS.OPEN), int(RS.FILLED), int(RS.EXPIRED), int(RS.CANCELLED)
WL_EXPIRE, RERELEASE, WL_RECHECK, NOSHOW_SCAN = 7, 8, 9, 10


def join(core, now, *, patient, sessions, account=None, klass=1, deadline=None, channel=PUB):
    """A waitlist join; the account defaults to the patient's number."""
    return core.join_waitlist(patient if account is None else account, patient, list(sessions),
                              channel, klass, now + 1000 if deadline is None else deadline, now)


def ev(kind, at, s=-1, b=-1, p=-1, a=-1, detail=-1, slot=0, reason=0):
    return (int(kind), at, s, b, p, a, detail, slot, int(reason))


def timers_of(core, kind):
    return [(due, ident) for due, _, k, ident in core.dump()["timers"] if k == kind]


def test_join_waitlist_rejections_in_order(make):
    c = make(wl_per_patient=1, wl_session_cap=1)
    full = session(c, quotas=(1, 0, 0))
    free = session(c, quotas=(1, 0, 0), department=1)
    later = session(c, quotas=(1, 0, 0), release=(500, 500, 500))
    gone = session(c, quotas=(1, 0, 0), starts_at=10, end_at=20, rollover_at=5, cutoff=5)
    stopped = session(c, quotas=(1, 0, 0))
    c.suspend(stopped, 1)
    assert book(c, 2, patient=3, account=3, s=full).status == Status.BOOKED

    def check(r, reason, s):
        assert (r.status, r.reason, r.session, r.request) == (Status.REJECTED, reason, s, None)
        assert (r.slot, r.booking, r.window, r.ticket) == (None, None, None, None) and not r.ok

    # 1. request stage, candidate by candidate
    check(join(c, 30, patient=0, sessions=[full, stopped, gone]), R.SESSION_SUSPENDED, stopped)
    check(join(c, 30, patient=0, sessions=[full, gone, stopped]), R.SESSION_CLOSED, gone)
    check(join(c, 30, patient=0, sessions=[later, full]), R.NOT_RELEASED, later)
    # 2. risk: blocked (after the request stage); flagged keys may join
    c.block(1, 1, 100, 30)
    check(join(c, 31, patient=1, sessions=[full, later]), R.NOT_RELEASED, later)
    check(join(c, 31, patient=1, sessions=[full]), R.BLOCKED, None)  # not about a candidate
    # 3. eligibility: banned, then per candidate live booking / open request, then the cap
    check(join(c, 31, patient=3, sessions=[full]), R.DUPLICATE_SESSION, full)
    ok = join(c, 32, patient=0, sessions=[full])
    assert (ok.status, ok.reason, ok.request, ok.session, ok.slot, ok.booking) == \
        (Status.WAITLISTED, R.NONE, 0, None, None, None)
    check(join(c, 33, patient=0, sessions=[free, full]), R.DUPLICATE_WAITLIST, full)
    check(join(c, 33, patient=0, sessions=[free]), R.WAITLIST_PATIENT_CAP, None)  # cap 1
    # 4. allocate: any candidate with room first, then the queue caps
    check(join(c, 33, patient=2, sessions=[full, free]), R.SLOTS_LEFT, free)
    check(join(c, 33, patient=2, sessions=[full]), R.WAITLIST_FULL, full)  # cap 1
    _no_show(c, 2, 40)  # patient 2 banned from 40
    check(join(c, 41, patient=2, sessions=[full]), R.PATIENT_BANNED, None)
    assert c.n_requests == 1 and c.session_waitlist(full) == [0]


def test_join_waitlist_bad_input_changes_nothing(make):
    c = make(wl_candidates=2, wl_classes=2)
    s0, s1, s2 = (session(c, quotas=(1, 0, 0), department=d) for d in range(3))
    book(c, 5, s=s0)
    before = c.state_hash()
    calls = [
        (errors.InvalidArgument, lambda: join(c, 10, patient=1, sessions=[])),
        (errors.InvalidArgument, lambda: join(c, 10, patient=1, sessions=[s0, s0])),
        (errors.InvalidArgument, lambda: join(c, 10, patient=1, sessions=[s0, s1, s2])),
        (errors.InvalidArgument, lambda: join(c, 10, patient=1, sessions=[s0], klass=0)),
        (errors.InvalidArgument, lambda: join(c, 10, patient=1, sessions=[s0], klass=3)),
        (errors.InvalidArgument, lambda: join(c, 10, patient=1, sessions=[s0], deadline=10)),
        (errors.UnknownSession, lambda: join(c, 10, patient=1, sessions=[s0, 3])),
        (errors.UnknownPatient, lambda: join(c, 10, patient=4, account=0, sessions=[s0])),
        (errors.UnknownAccount, lambda: join(c, 10, patient=1, account=4, sessions=[s0])),
        (errors.UnknownChannel, lambda: join(c, 10, patient=1, sessions=[s0], channel=3)),
        (errors.InvalidType, lambda: c.join_waitlist(1, 1, s0, PUB, 1, 100, 10)),
        (errors.InvalidType, lambda: join(c, 10, patient=1, sessions=[s0], klass=1.0)),
        (errors.TimeWentBackwards, lambda: join(c, 4, patient=1, sessions=[s0])),
        (errors.UnknownRequest, lambda: c.cancel_waitlist(0, 0, 10)),
        (errors.UnknownRequest, lambda: c.waitlist_info(-1)),
        (errors.UnknownBooking, lambda: c.booking_request(1)),
        (errors.UnknownSession, lambda: c.session_waitlist(3)),
        (errors.InvalidArgument, lambda: session(c, doctor=-2)),
        (errors.InvalidArgument, lambda: session(c, doctor=2**31)),
    ]
    for err, call in calls:
        with pytest.raises(err):
            call()
        assert c.state_hash() == before, err
    assert issubclass(errors.UnknownRequest, errors.UnknownId)


def test_join_passes_a_candidate_not_yet_released_for_its_channel(make):
    # One slot in CH1's quota, CH1 released at 100; the public pool (empty) is released.
    c = make()
    s = session(c, quotas=(0, 1, 0), release=(0, 100, 0))
    assert book(c, 10, channel=CH1).reason == R.QUOTA_EXHAUSTED
    c.drain_events()
    r = join(c, 11, patient=1, sessions=[s], channel=CH1)
    assert r.status == Status.WAITLISTED  # not SLOTS_LEFT: CH1 may not draw yet
    # The join's pass records the skip and schedules the recheck at CH1's release.
    assert c.drain_events() == [ev(E.WAITLIST_SKIPPED, 11, s, -1, 1, 1, 0,
                                   reason=R.QUOTA_EXHAUSTED)]
    assert timers_of(c, WL_RECHECK) == [(100, s)]
    c.advance(100)  # the waiter gets the slot before open booking can
    assert c.drain_events() == [ev(E.WAITLIST_FILLED, 100, s, 0, 1, 1, 0, slot=1)]
    assert c.booking_info(0)[4:6] == (CH1, CH1)


def test_session_end_rechecks_after_its_bookkeeping(make):
    c = make(one_per_department_day=True, hold_ms=500)
    a = session(c, quotas=(2, 0, 0), starts_at=100, end_at=200, rollover_at=50, cutoff=50)
    s = session(c, quotas=(1, 0, 0))  # same department and day, later
    h = book(c, 10, patient=0, s=a, hold=True).booking  # held until 510, past a's end
    gone = book(c, 10, patient=2, s=a).booking          # will not come
    other = book(c, 10, patient=1, s=s).booking
    join(c, 11, patient=0, sessions=[s])
    c.cancel(other, 0, 20)
    assert c.waitlist_info(0)[11] == int(R.DUPLICATE_DEPARTMENT_DAY)
    c.drain_events()
    c.advance(200)
    # SESSION_END(a) ends both bookings (expiry, no-show and its strike), then rechecks
    # their patients in slot order: patient 0 may now take the slot of s.
    assert c.drain_events() == [
        ev(E.HOLD_EXPIRED, 200, a, h, 0, 0, -1, slot=1),
        ev(E.NO_SHOW, 200, a, gone, 2, 0, -1, slot=2),
        ev(E.PATIENT_BANNED, 200, a, gone, 2, 0, 1, slot=2),
        ev(E.WAITLIST_FILLED, 200, s, 3, 0, 0, 0, slot=1),
    ]
    assert c.session_counts(a)[:5] == (1, 0, 0, 0, 1)  # a closed session's slot is only freed


def test_cancel_frees_the_slot_to_the_waitlist(make):
    c = make()
    s = session(c, quotas=(2, 0, 0))
    b0 = book(c, 10, patient=0).booking
    book(c, 10, patient=1)
    r = join(c, 11, patient=2, sessions=[s], deadline=500)
    assert r.request == 0 and c.session_waitlist(s) == [0]
    assert c.waitlist_info(0) == (2, 2, PUB, 1, OPEN, (s,), 11, 500, 11, -1, -1, 0)
    assert timers_of(c, WL_EXPIRE) == [(500, 0)]
    c.drain_events()
    assert c.cancel(b0, 0, 20).status == Status.CANCELLED
    # Filled in the same call: the lowest free slot, a BOOKED booking of the request's channel.
    assert c.drain_events() == [ev(E.WAITLIST_FILLED, 20, s, 2, 2, 2, 0, slot=1)]
    assert c.booking_info(2) == (s, 1, 2, 2, PUB, PUB, int(B.BOOKED), 20, 20, 0, 0)
    assert c.waitlist_info(0) == (2, 2, PUB, 1, FILLED, (s,), 11, 500, 20, 2, s, 0)
    assert (c.booking_request(2), c.booking_request(b0)) == (0, -1)
    assert c.session_waitlist(s) == [] and c.session_counts(s)[0] == 0
    assert c.patient_live(2) == [2]
    c.advance(500)  # the WL_EXPIRE of a filled request is stale
    assert c.drain_events() == [] and c.waitlist_info(0)[4] == FILLED


def test_priority_class_then_arrival_order(make):
    c = make()
    s = session(c, quotas=(1, 0, 0))
    b = book(c, 10, patient=0).booking
    join(c, 11, patient=1, sessions=[s], klass=2)   # request 0
    join(c, 12, patient=2, sessions=[s], klass=2)   # request 1
    join(c, 13, patient=3, sessions=[s], klass=1)   # request 2: later, but a higher class
    assert c.session_waitlist(s) == [2, 0, 1]
    assert c.dump()["sessions"][s]["waitlist"] == [2, 0, 1]
    c.drain_events()
    c.cancel(b, 0, 20)
    assert c.drain_events() == [ev(E.WAITLIST_FILLED, 20, s, 1, 3, 3, 2, slot=1)]
    assert c.session_waitlist(s) == [0, 1]
    c.cancel(1, 3, 21)  # patient 3 gives it back: first in class 2 (FIFO) gets it
    assert c.drain_events() == [ev(E.WAITLIST_FILLED, 21, s, 2, 1, 1, 0, slot=1)]
    assert c.session_waitlist(s) == [1]


def test_filled_in_one_candidate_leaves_the_others(make):
    c = make(wl_session_cap=2)
    s0 = session(c, quotas=(1, 0, 0))
    s1 = session(c, quotas=(1, 0, 0), department=1)
    b0 = book(c, 10, patient=0, s=s0).booking
    b1 = book(c, 10, patient=1, s=s1).booking
    join(c, 11, patient=2, sessions=[s1, s0])  # request 0: two candidates
    join(c, 12, patient=3, sessions=[s1])      # request 1
    assert c.session_waitlist(s0) == [0] and c.session_waitlist(s1) == [0, 1]
    assert join(c, 13, patient=0, sessions=[s1]).reason == R.WAITLIST_FULL  # open[s1] == 2
    c.cancel(b0, 0, 20)  # request 0 is filled in s0 ...
    assert c.waitlist_info(0)[4:] == (FILLED, (s1, s0), 11, 1011, 20, 2, s0, 0)
    assert c.session_waitlist(s0) == [] and c.session_waitlist(s1) == [1]  # ... and leaves s1
    r = join(c, 21, patient=0, sessions=[s1])  # open[s1] is 1 again
    assert r.status == Status.WAITLISTED and r.request == 2
    c.drain_events()
    c.cancel(b1, 0, 22)
    assert c.drain_events() == [ev(E.WAITLIST_FILLED, 22, s1, 3, 3, 3, 1, slot=1)]
    assert c.session_waitlist(s1) == [2]


def test_skipped_request_keeps_its_place_and_is_reported_once(make):
    c = make()
    s = session(c, quotas=(2, 0, 0))
    b0 = book(c, 10, patient=0).booking
    b1 = book(c, 10, patient=1).booking
    join(c, 11, patient=2, sessions=[s])  # request 0
    join(c, 12, patient=3, sessions=[s])  # request 1
    c.flag(1, 2, int(F.HOST), 1000, 13)   # patient 2 flagged until 1000: may wait, not be filled
    c.drain_events()
    c.cancel(b0, 0, 20)
    assert c.drain_events() == [
        ev(E.WAITLIST_SKIPPED, 20, s, -1, 2, 2, 0, reason=R.FLAGGED),
        ev(E.WAITLIST_FILLED, 20, s, 2, 3, 3, 1, slot=1),
    ]
    assert c.waitlist_info(0)[4] == OPEN and c.waitlist_info(0)[11] == int(R.FLAGGED)
    assert timers_of(c, WL_RECHECK) == []  # no free slot was left: nothing to recheck
    c.cancel(b1, 0, 21)  # skipped again for the same reason: no second event
    assert c.drain_events() == []
    assert c.session_waitlist(s) == [0]
    # A free slot is left behind a skipped request: recheck when the flag ends.
    assert timers_of(c, WL_RECHECK) == [(1000, s)] and c.dump()["sessions"][s]["recheck_at"] == 1000
    assert book(c, 22, patient=1).slot == 2  # open booking may take it meanwhile
    assert c.session_waitlist(s) == [0]


def test_recheck_fills_when_a_ban_ends(make):
    c = make(ban_ms=(100,))
    s = session(c, quotas=(1, 0, 0))
    b = book(c, 5, patient=0).booking
    join(c, 6, patient=2, sessions=[s])  # request 0
    _no_show(c, 2, 15)  # patient 2 banned until 115
    c.drain_events()
    c.cancel(b, 0, 20)
    assert c.drain_events() == [ev(E.WAITLIST_SKIPPED, 20, s, -1, 2, 2, 0,
                                   reason=R.PATIENT_BANNED)]
    assert timers_of(c, WL_RECHECK) == [(115, s)]
    c.advance(114)
    assert c.drain_events() == []
    c.advance(115)
    b2 = c.n_bookings - 1
    assert c.drain_events() == [ev(E.WAITLIST_FILLED, 115, s, b2, 2, 2, 0, slot=1)]
    assert c.dump()["sessions"][s]["recheck_at"] == -1
    assert c.waitlist_info(0)[11] == int(R.PATIENT_BANNED)  # the last skip reason stays


def test_recheck_the_patient_after_their_other_booking_goes(make):
    c = make(one_per_department_day=True)
    a = session(c, quotas=(1, 0, 0))
    s = session(c, quotas=(1, 0, 0), starts_at=1200, end_at=1300)  # same department and day
    mine = book(c, 10, patient=0, s=a).booking
    other = book(c, 10, patient=1, s=s).booking
    assert book(c, 11, patient=0, s=s).reason == R.DUPLICATE_DEPARTMENT_DAY
    r = join(c, 11, patient=0, sessions=[s])  # a join does not check the department-day rule
    assert r.status == Status.WAITLISTED
    c.drain_events()
    c.cancel(other, 0, 20)
    assert c.drain_events() == [ev(E.WAITLIST_SKIPPED, 20, s, -1, 0, 0, 0,
                                   reason=R.DUPLICATE_DEPARTMENT_DAY)]
    assert timers_of(c, WL_RECHECK) == []  # only an event clears it
    assert c.session_counts(s)[0] == 1
    c.cancel(mine, 0, 21)  # patient 0's live set shrinks: recheck their requests
    assert c.drain_events() == [ev(E.WAITLIST_FILLED, 21, s, 2, 0, 0, 0, slot=1)]


def test_unflag_rechecks_the_account(make):
    c = make()
    s = session(c, quotas=(1, 0, 0))
    b = book(c, 10, patient=0).booking
    join(c, 11, patient=1, account=2, sessions=[s])
    c.flag(0, 2, int(F.HOST), 1000, 12)
    c.cancel(b, 0, 20)
    assert c.waitlist_info(0)[11] == int(R.FLAGGED) and c.session_counts(s)[0] == 1
    c.drain_events()
    assert c.unflag(0, 2, 30)
    assert c.drain_events() == [ev(E.UNFLAGGED, 30, a=2), ev(E.WAITLIST_FILLED, 30, s, 1, 1, 2, 0,
                                                            slot=1)]


def test_rerelease_hides_a_freed_slot_then_frees_it(make):
    c = make(rerelease_min_ms=5, rerelease_max_ms=5)
    s = session(c, quotas=(2, 0, 0))
    b = book(c, 10, patient=0).booking
    c.cancel(b, 0, 20)  # nobody waits: RETURNING for exactly 5 ms (min == max: no draw)
    d = c.dump()
    assert d["sessions"][s]["slot_states"] == [int(S.RETURNING), int(S.FREE)]
    assert d["returns"] == [(s, 0)] and d["rng"] == 7
    assert timers_of(c, RERELEASE) == [(25, 0)]
    assert c.session_counts(s) == (1, 0, 0, 0, 0, 0, 0, 1)
    assert c.session_quota(s) == [2, 0, 0]  # the quota came back with the slot
    assert book(c, 21, patient=1).slot == 2
    assert book(c, 22, patient=2).reason == R.FULL  # only a RETURNING slot is left
    assert c.block_slot(s, 1, 22) is False
    c.drain_events()
    c.advance(25)
    assert c.drain_events() == [ev(E.SLOT_RERELEASED, 25, s, slot=1)]
    assert c.session_counts(s)[0] == 1 and book(c, 26, patient=2).slot == 1


def test_rerelease_delay_is_drawn_when_min_differs_from_max(make):
    c = make(rerelease_min_ms=3, rerelease_max_ms=30)
    session(c, quotas=(2, 0, 0))
    b = book(c, 10, patient=0).booking
    c.cancel(b, 0, 20)
    delay = 3 + next(_splitmix(7)) % 28
    assert timers_of(c, RERELEASE) == [(20 + delay, 0)]
    assert c.dump()["rng"] == (7 + 0x9E3779B97F4A7C15) & _M64


def test_rerelease_skipped_when_a_waiter_takes_the_slot_and_stale_after_suspend(make):
    c = make(rerelease_min_ms=5, rerelease_max_ms=5)
    s = session(c, quotas=(2, 0, 0))
    b0 = book(c, 10, patient=0).booking
    b1 = book(c, 10, patient=1).booking
    join(c, 11, patient=2, sessions=[s])
    c.cancel(b0, 0, 20)  # the waiter takes it: no RETURNING
    assert c.dump()["returns"] == [] and c.session_counts(s)[7] == 0
    c.cancel(b1, 0, 21)
    assert c.dump()["returns"] == [(s, 1)]
    c.suspend(s, 22)  # RETURNING -> CANCELLED; the RERELEASE at 26 is stale
    assert c.session_counts(s) == (0, 0, 0, 0, 0, 2, 0, 0)
    c.drain_events()
    c.advance(26)
    assert c.drain_events() == []


def test_waitlist_expiry_and_cancel(make):
    c = make(wl_per_patient=1)
    s = session(c, quotas=(1, 0, 0))
    book(c, 10, patient=0)
    join(c, 11, patient=1, account=2, sessions=[s], deadline=50)  # request 0
    c.drain_events()
    c.advance(50)
    assert c.drain_events() == [ev(E.WAITLIST_EXPIRED, 50, -1, -1, 1, 2, 0)]
    assert c.waitlist_info(0)[4:9] == (EXPIRED, (s,), 11, 50, 50)
    assert c.session_waitlist(s) == []
    r = c.cancel_waitlist(0, 2, 51)
    assert (r.status, r.reason, r.request) == (Status.REJECTED, R.NOT_ACTIVE, 0)
    assert join(c, 52, patient=1, account=2, sessions=[s]).request == 1  # cap 1: free again
    assert join(c, 53, patient=1, account=2, sessions=[s]).reason == R.DUPLICATE_WAITLIST
    r = c.cancel_waitlist(1, 3, 54)
    assert (r.status, r.reason, r.request) == (Status.REJECTED, R.NOT_OWNER, 1)
    r = c.cancel_waitlist(1, 2, 55)
    assert (r.status, r.reason, r.request, r.session, r.booking) == \
        (Status.CANCELLED, R.NONE, 1, None, None)
    assert c.waitlist_info(1)[4:9] == (CANCELLED, (s,), 52, 1052, 55)
    assert c.session_waitlist(s) == [] and c.drain_events() == []
    c.advance(1052)  # its WL_EXPIRE is stale
    assert c.drain_events() == []


def test_suspend_moves_to_same_doctor_nearest_then_department_then_waitlist(make):
    c = make(suspend_action=1)
    s0 = session(c, quotas=(4, 0, 0), doctor=5)
    far = session(c, quotas=(1, 0, 0), doctor=5, department=1, starts_at=3000, end_at=3100)
    near = session(c, quotas=(1, 0, 0), doctor=5, department=2, starts_at=1500, end_at=1600)
    dept = session(c, quotas=(1, 0, 0), starts_at=1010, end_at=1110)  # same department, no doctor
    book(c, 5, patient=3, s=near, account=0)
    c.cancel(0, 0, 6)  # near has its slot back
    bs = [book(c, 10, patient=p, s=s0).booking for p in range(4)]  # bookings 1..4, slots 1..4
    c.drain_events()
    assert c.suspend(s0, 20) == 4
    assert c.drain_events() == [
        ev(E.BOOKING_MOVED, 20, near, 5, 0, 0, bs[0], slot=1),
        ev(E.BOOKING_MOVED, 20, far, 6, 1, 0, bs[1], slot=1),
        ev(E.BOOKING_MOVED, 20, dept, 7, 2, 0, bs[2], slot=1),
        ev(E.BOOKING_WAITLISTED, 20, s0, bs[3], 3, 0, 0, slot=4),
        ev(E.SESSION_SUSPENDED, 20, s0, detail=4),
    ]
    assert c.booking_info(bs[0])[6:] == (int(B.CANCELLED), 10, 20, 0, int(R.SESSION_SUSPENDED))
    assert c.booking_info(5) == (near, 1, 0, 0, PUB, PUB, int(B.BOOKED), 20, 20, 0, 0)
    assert c.booking_request(5) == -1
    # Patient 3 waits in class 0 for the related sessions, same doctor first, nearest first.
    assert c.waitlist_info(0) == (0, 3, PUB, 0, OPEN, (near, far, dept), 20, 3100, 20, -1, -1, 0)
    join(c, 21, patient=1, sessions=[dept], klass=1)
    assert c.session_waitlist(dept) == [0, 1]  # class 0 first
    c.cancel(7, 0, 22)  # patient 2 gives up the moved booking: patient 3 gets it
    assert c.drain_events() == [ev(E.WAITLIST_FILLED, 22, dept, 8, 3, 0, 0, slot=1)]


def test_suspend_waitlist_action_fills_at_once_and_cancels_without_candidates(make):
    c = make(suspend_action=2)
    s0 = session(c, quotas=(3, 0, 0), doctor=1)
    other = session(c, quotas=(2, 0, 0), doctor=1, department=1, starts_at=2000, end_at=2100)
    book(c, 10, patient=1, s=other)                 # booking 0: patient 1 is in `other` already
    b0 = book(c, 10, patient=0, s=s0).booking        # 1
    b1 = book(c, 10, patient=1, s=s0, hold=True).booking  # 2
    c.confirm(b1, 0, 11)
    h = book(c, 12, patient=2, s=s0, hold=True).booking   # 3: a hold is always cancelled
    c.drain_events()
    assert c.suspend(s0, 13) == 3
    assert c.drain_events() == [
        ev(E.BOOKING_WAITLISTED, 13, s0, b0, 0, 0, 0, slot=1),  # action 2: no move, wait
        ev(E.BOOKING_CANCELLED, 13, s0, b1, 1, 0, 101, slot=2, reason=R.SESSION_SUSPENDED),
        ev(E.BOOKING_CANCELLED, 13, s0, h, 2, 0, 101, slot=3, reason=R.SESSION_SUSPENDED),
        ev(E.SESSION_SUSPENDED, 13, s0, detail=3),
        ev(E.WAITLIST_FILLED, 13, other, 4, 0, 0, 0, slot=2),  # the recheck after it
    ]
    assert c.waitlist_info(0) == (0, 0, PUB, 0, FILLED, (other,), 13, 2100, 13, 4, other, 0)
    assert c.booking_request(4) == 0


def test_suspend_move_with_nowhere_to_go_cancels(make):
    c = make(suspend_action=1)
    s0 = session(c, quotas=(1, 0, 0), doctor=1)
    session(c, quotas=(1, 0, 0), department=1)  # unrelated: another doctor and department
    b = book(c, 10, s=s0).booking
    c.drain_events()
    assert c.suspend(s0, 11) == 1
    assert c.drain_events() == [
        ev(E.BOOKING_CANCELLED, 11, s0, b, 0, 0, 101, slot=1, reason=R.SESSION_SUSPENDED),
        ev(E.SESSION_SUSPENDED, 11, s0, detail=1),
    ]
    assert c.n_requests == 0


def test_noshow_grace_releases_the_slot_to_a_waiter(make):
    c = make(noshow_grace_ms=5)
    s = session(c, quotas=(2, 0, 0), starts_at=1000, end_at=1100, slot_ms=10)
    assert timers_of(c, NOSHOW_SCAN) == [(1005, s)]  # slot 1's window start + grace
    b0 = book(c, 10, patient=0).booking
    b1 = book(c, 10, patient=1).booking
    join(c, 11, patient=2, sessions=[s])
    c.check_in(b1, 1003)
    c.drain_events()
    c.advance(1005)
    assert c.drain_events() == [
        ev(E.NO_SHOW, 1005, s, b0, 0, 0, -1, slot=1, reason=R.SLOT_RELEASED),
        ev(E.PATIENT_BANNED, 1005, s, b0, 0, 0, 1, slot=1),
        ev(E.WAITLIST_FILLED, 1005, s, 2, 2, 2, 0, slot=1),
    ]
    assert c.booking_info(b0)[6:] == (int(B.NO_SHOW), 10, 1005, 0, int(R.SLOT_RELEASED))
    assert c.booking_info(b0)[1] == 1 and c.booking_info(2)[1] == 1  # b0 keeps its number
    d = c.dump()["sessions"][s]
    assert d["slot_bookings"] == [2, b1] and d["scan_k"] == 1
    assert timers_of(c, NOSHOW_SCAN) == [(1015, s)]
    c.advance(1015)  # slot 2 arrived: nothing; the scan has run out of slots
    assert c.drain_events() == [] and c.dump()["sessions"][s]["scan_k"] == 2
    assert timers_of(c, NOSHOW_SCAN) == []
    c.add_capacity(s, 1, PUB, 1016)  # ... so adding capacity restarts it for slot 3
    assert timers_of(c, NOSHOW_SCAN) == [(1025, s)]


def test_noshow_scan_stops_at_the_session_end(make):
    c = make(noshow_grace_ms=50)
    s = session(c, quotas=(3, 0, 0), starts_at=1000, end_at=1070, slot_ms=10)
    book(c, 10, patient=0)
    c.advance(1050)
    assert c.dump()["sessions"][s]["scan_k"] == 1
    assert timers_of(c, NOSHOW_SCAN) == [(1060, s)]
    c.advance(1060)
    assert timers_of(c, NOSHOW_SCAN) == [] and c.dump()["sessions"][s]["scan_k"] == 2  # 1070
    c.add_capacity(s, 1, PUB, 1061)  # the scan ran out of time, not of slots: no restart
    assert timers_of(c, NOSHOW_SCAN) == []


def test_events_carry_slot_and_reason(make):
    c = make(prequeue_ms=10, cohort_ms=5)
    s = session(c, quotas=(1, 0, 0))  # one slot, two tickets: one fails with FULL
    book(c, 1, patient=0)
    book(c, 2, patient=1)
    c.advance(5)
    events = c.drain_events()
    failed = [e for e in events if e[0] == E.TICKET_FAILED]
    served = [e for e in events if e[0] == E.TICKET_SERVED]
    assert len(failed) == len(served) == 1
    assert failed[0][7:] == (0, int(R.FULL)) and served[0][7:] == (1, 0)
    book(c, 6, patient=2, hold=True)  # FULL: no booking
    arr = c.drain_events_array()
    assert sorted(arr) == sorted(["kind", "at", "session", "booking", "patient", "account",
                                  "detail", "slot", "reason"])
    assert arr["slot"].dtype == np.int32 and arr["reason"].dtype == np.int16
    assert arr["kind"].dtype == np.int64 and len(arr["kind"]) == 0
    assert c.session_counts(s) == (0, 0, 1, 0, 0, 0, 0, 0)


def test_dump_layout_with_waitlist(make):
    c = make(rerelease_min_ms=5, rerelease_max_ms=5)
    s = session(c, quotas=(1, 0, 0), doctor=9)
    b = book(c, 10, patient=0).booking
    join(c, 11, patient=1, sessions=[s], deadline=400)
    c.cancel(b, 0, 12)  # filled
    b2 = c.n_bookings - 1
    c.cancel(b2, 1, 13)  # nobody else: RETURNING
    d = c.dump()
    sd = d["sessions"][s]
    assert (sd["doctor"], sd["waitlist"], sd["recheck_at"], sd["scan_k"]) == (9, [], -1, 0)
    assert d["requests"] == [(1, 1, PUB, 1, FILLED, (s,), 11, 400, 12, b2, s, 0)]
    assert type(d["requests"][0][5]) is tuple
    assert d["returns"] == [(s, 0)] and type(d["returns"][0]) is tuple
    assert (400, 2, WL_EXPIRE, 0) in d["timers"] and (18, 3, RERELEASE, 0) in d["timers"]


# -- credit and prepaid balances (issue 5) ------------------------------------------------

from slotengine.outcomes import BillState as BS  # noqa: E402
from slotengine.outcomes import LedgerAccount as LA  # noqa: E402
from slotengine.outcomes import LineState as LS  # noqa: E402
from slotengine.outcomes import MoveKind as MK  # noqa: E402

BILL_NOTICE, BILL_DUE = 11, 12
# Small terms (fen): outpatient starts at 300 within 100..600 by steps of 100.  Bills are
# due 100 ms after they are made, with a notice 20 ms before.
CREDIT = {"cover": True, "credit_terms": ((300, 100, 600, 100), (5000, 1000, 20000, 1000)),
          "credit_raise_after": 2, "bill_due_ms": 100, "bill_notice_ms": 20}
OUT, INP = 1, 2
REJ = int(Status.REJECTED)


@pytest.fixture
def money(make, backend):
    """``money(**policy_changes)``: ``make`` with CREDIT (cover on) under the changes."""
    if backend == "core" and not hasattr(FastCore, "settle"):
        pytest.skip("the compiled core has no credit commands yet")
    return lambda **changes: make(**{**CREDIT, **changes})


def move(seq, ncmd, at, p, kind, amount, b=-1, bill=-1):
    src, dst = {MK.TOP_UP: (LA.EXTERNAL, LA.BALANCE), MK.PAY_BALANCE: (LA.BALANCE, LA.HOSPITAL),
                MK.PAY_CREDIT: (LA.CREDIT, LA.HOSPITAL), MK.REPAY: (LA.EXTERNAL, LA.CREDIT),
                MK.REFUND: (LA.BALANCE, LA.EXTERNAL)}[kind]
    return (seq, ncmd, at, p, int(src), int(dst), amount, int(kind), b, bill)


def billed(c, t, x, patient=0, s=0):
    """Book (free session), check in and settle ``x`` at t; returns the bill id (-1 none)."""
    b = book(c, t, patient=patient, account=patient, s=s).booking
    c.check_in(b, t)
    code, _, _, bill = c.settle(b, x, t)
    assert code == int(Status.ARRIVED)
    return bill


def unchanged_but_clock(before, after, now):
    """``after`` is ``before`` with the clock at ``now`` and one more command counted."""
    before, after = dict(before), dict(after)
    assert after.pop("now") == now and after.pop("ncmd") == before.pop("ncmd") + 1
    before.pop("now")
    assert after == before


def test_cover_holds_balance_first_then_credit(money):
    c = money()
    session(c, fee=500, quotas=(3, 0, 0))
    assert c.top_up(0, 200, 1) == 200
    c.open_line(0, OUT, -1, 2)  # the kind's start: 300
    assert c.wallet(0) == (200, 0, OUT, int(LS.OPEN), 300, 0, 0, 0, 0)
    assert c.check_cover(0, 500) == (0, 200, 300)
    assert c.check_cover(0, 501) == (int(R.NO_COVER), 200, 301)  # the split is still shown
    r = book(c, 10, patient=0)
    assert (r.status, r.slot, r.booking) == (Status.BOOKED, 1, 0)
    assert c.booking_cover(0) == (200, 300, -1)
    assert c.wallet(0) == (200, 200, OUT, int(LS.OPEN), 300, 0, 300, 0, 0)
    assert c.check_cover(0, 1) == (int(R.NO_COVER), 0, 1)
    # Nothing is free any more: a booking elsewhere is refused and changes only the clock.
    s2 = session(c, fee=1, department=1)
    before = c.dump()
    r2 = book(c, 11, patient=0, s=s2)
    assert (r2.status, r2.reason, r2.session, r2.booking, r2.slot) == \
        (Status.REJECTED, R.NO_COVER, s2, None, None)
    unchanged_but_clock(before, c.dump(), 11)
    # No wallet at all: NO_COVER; a fee of 0 needs no cover and holds nothing.
    assert book(c, 12, patient=1).reason == R.NO_COVER
    s0 = session(c, fee=0, department=2)
    assert book(c, 13, patient=1, s=s0).status == Status.BOOKED
    assert c.booking_cover(c.n_bookings - 1) == (0, 0, -1)
    # Holds move no money: only the top-up is in the ledger.
    assert c.movements() == [move(0, 2, 1, 0, MK.TOP_UP, 200)]
    assert c.ledger_totals() == (-200, 0, 200, 0) and c.n_movements == 1


def test_cover_off_holds_nothing(money):
    c = money(cover=False)
    session(c, fee=500)
    r = book(c, 10, patient=0)
    assert r.status == Status.BOOKED and c.booking_cover(r.booking) == (0, 0, -1)
    assert c.wallet(0) == (0,) * 9
    c.check_in(r.booking, 11)  # holds nothing: not charged, stays unsettled
    assert c.booking_cover(r.booking) == (0, 0, -1) and c.n_movements == 0
    # ... and settle may still charge it (here: nothing to pay with)
    # refused: the split is what would have been taken
    assert c.settle(r.booking, 500, 12) == (REJ | int(R.NO_COVER) << 8, 0, 500, -1)
    assert c.settle(r.booking, 0, 13) == (int(Status.ARRIVED), 0, 0, -1)
    assert c.booking_cover(r.booking) == (0, 0, 0)


def test_overdue_bill_cuts_suspends_and_repaying_reinstates(money):
    c = money()
    s = session(c, fee=250, quotas=(3, 0, 0))
    c.open_line(0, OUT, -1, 1)
    b = book(c, 10, patient=0).booking  # holds (0, 250)
    c.drain_events()
    assert c.check_in(b, 20).status == Status.ARRIVED  # charges 250, all on credit: bill 0
    assert c.booking_cover(b) == (0, 0, 250)
    assert c.n_bills == 1 and c.patient_bills(0) == [0]
    assert c.bill_info(0) == (0, b, 250, 0, 20, 120, int(BS.OPEN), -1)
    assert c.wallet(0) == (0, 0, OUT, int(LS.OPEN), 300, 250, 0, 0, 0)
    assert c.drain_events() == [ev(E.BILLED, 20, s, b, 0, 0, 0, slot=1)]
    assert timers_of(c, BILL_NOTICE) == [(100, 0)] and timers_of(c, BILL_DUE) == [(120, 0)]
    c.advance(100)
    assert c.drain_events() == [ev(E.BILL_DUE_SOON, 100, s, b, 0, 0, 0, slot=1)]
    c.advance(120)
    assert c.drain_events() == [
        ev(E.BILL_OVERDUE, 120, s, b, 0, 0, 0, slot=1),
        ev(E.LIMIT_CHANGED, 120, p=0, detail=250),  # max(300 - 100, floor 100, used 250)
        ev(E.CREDIT_SUSPENDED, 120, p=0, detail=0),
    ]
    assert c.wallet(0) == (0, 0, OUT, int(LS.SUSPENDED), 250, 250, 0, 0, 1)
    assert c.bill_info(0)[6] == int(BS.OVERDUE)
    # A suspended line covers nothing: CREDIT_SUSPENDED; no line at all: NO_COVER.
    s2 = session(c, fee=50, department=1)
    assert c.check_cover(0, 50) == (int(R.CREDIT_SUSPENDED), 0, 50)
    assert book(c, 121, patient=0, s=s2).reason == R.CREDIT_SUSPENDED
    assert book(c, 121, patient=1, s=s2).reason == R.NO_COVER
    c.top_up(0, 50, 122)  # the balance alone covers it: the suspended line does not matter
    assert book(c, 123, patient=0, s=s2).status == Status.BOOKED
    assert c.booking_cover(c.n_bookings - 1) == (50, 0, -1)
    c.drain_events()
    assert c.repay(0, 250, 130) == 1
    assert c.drain_events() == [ev(E.BILL_PAID, 130, s, b, 0, 0, 0, slot=1),
                                ev(E.CREDIT_REINSTATED, 130, p=0)]
    assert c.bill_info(0) == (0, b, 250, 250, 20, 120, int(BS.PAID), 130)
    # a late bill does not count for the streak, and the cut stays
    assert c.wallet(0) == (50, 50, OUT, int(LS.OPEN), 250, 0, 0, 0, 0)
    assert c.movements()[-1] == move(2, c.ncmd, 130, 0, MK.REPAY, 250, -1, 0)  # with the bill


def test_bill_notice_only_while_unpaid_and_off_at_zero(money):
    c = money(cover=False)
    session(c, quotas=(4, 0, 0))
    c.open_line(0, OUT, -1, 1)
    k = billed(c, 10, 100)
    c.repay(0, 100, 50)
    c.drain_events()
    c.advance(200)  # notice at 90 and due at 110: both find the bill PAID
    assert c.drain_events() == []
    c2 = money(cover=False, bill_notice_ms=0)
    session(c2, quotas=(4, 0, 0))
    c2.open_line(0, OUT, -1, 1)
    k = billed(c2, 10, 100)
    assert timers_of(c2, BILL_NOTICE) == [] and timers_of(c2, BILL_DUE) == [(110, k)]


@pytest.mark.parametrize("path", ["cancel", "cancel_hold", "hold_expiry", "session_end_hold",
                                  "no_show", "grace_no_show", "suspend"])
def test_every_end_but_arrival_releases_the_hold(money, path):
    c = money(hold_ms=10 if path != "session_end_hold" else 5000,
              noshow_grace_ms=5 if path == "grace_no_show" else 0)
    s = session(c, fee=250)
    c.top_up(0, 100, 1)
    c.open_line(0, OUT, -1, 2)
    r = book(c, 10, patient=0, hold=path in ("cancel_hold", "hold_expiry", "session_end_hold"))
    assert c.booking_cover(r.booking) == (100, 150, -1)
    assert c.wallet(0)[:2] == (100, 100) and c.wallet(0)[6] == 150
    if path.startswith("cancel"):
        assert c.cancel(r.booking, 0, 11).status == Status.CANCELLED
    elif path == "hold_expiry":
        c.advance(20)
    elif path in ("session_end_hold", "no_show"):
        c.advance(1100)
    elif path == "grace_no_show":
        c.advance(1005)  # slot 1 opens at 1000, grace 5
        assert c.booking_info(r.booking)[10] == int(R.SLOT_RELEASED)
    else:
        c.suspend(s, 11)
    assert c.booking_info(r.booking)[6] != int(B.BOOKED)
    assert c.booking_cover(r.booking) == (0, 0, -1)
    assert c.wallet(0) == (100, 0, OUT, int(LS.OPEN), 300, 0, 0, 0, 0)
    assert c.n_movements == 1 and c.n_bills == 0


@pytest.mark.parametrize("target_fee, kept", [(300, (300, 0)), (800, (400, 100)), (0, (0, 0))])
def test_suspend_move_keeps_what_the_target_fee_needs(money, target_fee, kept):
    c = money(suspend_action=1)
    s0 = session(c, fee=500, doctor=1)
    session(c, fee=target_fee, doctor=1, department=1, starts_at=1500, end_at=1600)
    c.top_up(0, 400, 1)
    c.open_line(0, OUT, -1, 2)
    b = book(c, 10, patient=0, s=s0).booking  # holds (400, 100)
    assert c.suspend(s0, 20) == 1
    new = c.n_bookings - 1
    assert c.drain_events()[-2][0] == int(E.BOOKING_MOVED)
    assert c.booking_cover(b) == (0, 0, -1)
    assert c.booking_cover(new) == (*kept, -1)  # balance part first; no new cover asked
    assert c.wallet(0)[:2] == (400, kept[0]) and c.wallet(0)[6] == kept[1]


def test_suspend_waitlists_with_the_whole_hold_then_a_fill_keeps_its_fee(money):
    c = money(suspend_action=2)
    s0 = session(c, fee=500, doctor=1)
    s1 = session(c, fee=200, doctor=1, department=1, quotas=(1, 0, 0))
    c.block_slot(s1, 1, 1)  # s1 has no room: patient 0 must wait for it
    c.top_up(0, 400, 2)
    c.open_line(0, OUT, -1, 3)
    b = book(c, 10, patient=0, s=s0).booking  # holds (400, 100)
    c.suspend(s0, 20)
    assert c.waitlist_info(0)[:5] == (0, 0, PUB, 0, OPEN)
    assert c.booking_cover(b) == (0, 0, -1) and c.request_cover(0) == (400, 100)
    assert c.wallet(0)[:2] == (400, 400) and c.wallet(0)[6] == 100  # the hold passed whole
    c.unblock_slot(s1, 1, 30)  # the slot frees: the request fills it
    new = c.n_bookings - 1
    assert c.booking_request(new) == 0
    assert c.booking_cover(new) == (200, 0, -1) and c.request_cover(0) == (0, 0)
    assert c.wallet(0)[:2] == (400, 200) and c.wallet(0)[6] == 0


def test_join_holds_the_largest_candidate_fee_and_a_fill_passes_the_fee_on(money):
    c = money()
    cheap = session(c, fee=300, quotas=(1, 0, 0))
    dear = session(c, fee=500, quotas=(1, 0, 0), department=1)
    c.top_up(1, 800, 1)
    b_cheap = book(c, 2, patient=1, account=1, s=cheap).booking
    book(c, 2, patient=1, account=1, s=dear)
    c.top_up(0, 600, 3)
    # patient 2 has nothing: refused at the credit stage, after the allocate checks
    r = join(c, 4, patient=2, sessions=[cheap, dear])
    assert (r.status, r.reason, r.session, r.request) == (Status.REJECTED, R.NO_COVER, None, None)
    r = join(c, 5, patient=0, sessions=[cheap, dear])
    assert r.status == Status.WAITLISTED and c.request_cover(r.request) == (500, 0)
    assert c.wallet(0)[:2] == (600, 500)
    c.cancel(b_cheap, 1, 6)  # the fill keeps 300 of the 500, the rest goes back
    new = c.n_bookings - 1
    assert c.booking_request(new) == r.request and c.booking_info(new)[0] == cheap
    assert c.booking_cover(new) == (300, 0, -1) and c.request_cover(r.request) == (0, 0)
    assert c.wallet(0)[:2] == (600, 300)
    assert c.wallet(1)[:2] == (800, 500)  # patient 1's cancelled hold was released


def test_waitlist_expiry_and_cancel_release_the_hold(money):
    c = money()
    s = session(c, fee=300, quotas=(1, 0, 0))
    c.top_up(1, 300, 1)
    book(c, 2, patient=1, account=1, s=s)
    c.open_line(0, OUT, -1, 3)
    r1 = join(c, 4, patient=0, sessions=[s], deadline=50).request
    assert c.request_cover(r1) == (0, 300) and c.wallet(0)[6] == 300
    assert join(c, 5, patient=3, sessions=[s]).reason == R.NO_COVER
    c.advance(50)
    assert c.waitlist_info(r1)[4] == EXPIRED
    assert c.request_cover(r1) == (0, 0) and c.wallet(0)[6] == 0
    r2 = join(c, 51, patient=0, sessions=[s]).request
    assert c.wallet(0)[6] == 300
    assert c.cancel_waitlist(r2, 0, 52).status == Status.CANCELLED
    assert c.request_cover(r2) == (0, 0) and c.wallet(0)[6] == 0


def test_check_in_charges_what_the_booking_holds(money):
    c = money()
    s = session(c, fee=500)
    c.top_up(0, 200, 1)
    c.open_line(0, OUT, -1, 2)
    b = book(c, 10, patient=0).booking  # holds (200, 300)
    c.drain_events()
    assert c.check_in(b, 20).status == Status.ARRIVED  # command 5
    assert c.booking_cover(b) == (0, 0, 500)
    assert c.wallet(0) == (0, 0, OUT, int(LS.OPEN), 300, 300, 0, 0, 0)
    assert c.movements(1) == [move(1, 5, 20, 0, MK.PAY_BALANCE, 200, b),
                              move(2, 5, 20, 0, MK.PAY_CREDIT, 300, b, 0)]
    assert c.movements(3) == [] and c.movements(99) == []
    assert c.ledger_totals() == (-200, 500, 0, -300)
    assert c.bill_info(0) == (0, b, 300, 0, 20, 120, int(BS.OPEN), -1)
    assert c.drain_events() == [ev(E.BILLED, 20, s, b, 0, 0, 0, slot=1)]
    with pytest.raises(errors.InvalidState):
        c.settle(b, 0, 21)  # already settled at check-in


def test_check_in_charge_takes_a_later_top_up_first(money):
    c = money()
    session(c, fee=500)
    c.open_line(0, OUT, 500, 1)
    b = book(c, 10, patient=0).booking  # holds (0, 500)
    c.top_up(0, 120, 11)  # free balance now: the charge takes it before the credit hold
    c.check_in(b, 20)
    assert c.booking_cover(b) == (0, 0, 500) and c.bill_info(0)[2] == 380
    assert c.wallet(0) == (0, 0, OUT, int(LS.OPEN), 500, 380, 0, 0, 0)


def test_settle_at_the_visit_with_another_amount(money):
    c = money(settle_at_check_in=False)
    session(c, fee=500, quotas=(3, 0, 0))
    c.top_up(0, 200, 1)
    c.open_line(0, OUT, -1, 2)
    b = book(c, 10, patient=0).booking  # holds (200, 300)
    with pytest.raises(errors.InvalidState):
        c.settle(b, 100, 11)  # not arrived
    c.check_in(b, 20)
    assert c.booking_cover(b) == (200, 300, -1) and c.n_movements == 1  # held, not charged
    c.top_up(0, 100, 21)  # balance 300, 100 of it free
    # 350: the balance part is the free balance plus its own hold (300), the rest credit
    assert c.settle(b, 350, 22) == (int(Status.ARRIVED), 300, 50, 0)
    assert c.booking_cover(b) == (0, 0, 350)
    assert c.wallet(0) == (0, 0, OUT, int(LS.OPEN), 300, 50, 0, 0, 0)
    assert c.bill_info(0)[:3] == (0, b, 50)
    with pytest.raises(errors.InvalidState):
        c.settle(b, 1, 23)  # a double settlement
    # A charge that cannot be covered changes nothing, not even the hold.
    c.top_up(1, 500, 24)
    b1 = book(c, 25, patient=1, account=1).booking  # holds (500, 0)
    c.check_in(b1, 26)
    before = c.dump()
    assert c.settle(b1, 900, 27) == (REJ | int(R.NO_COVER) << 8, 500, 400, -1)
    unchanged_but_clock(before, c.dump(), 27)
    assert c.booking_cover(b1) == (500, 0, -1)
    assert c.settle(b1, 120, 28) == (int(Status.ARRIVED), 120, 0, -1)  # less than it held
    assert c.wallet(1)[:2] == (380, 0)


def test_settle_validation_order(money):
    c = money(settle_at_check_in=False)
    session(c, fee=0)
    b = book(c, 10).booking
    before = c.state_hash()
    for args, err in [((5, 0, 10), errors.UnknownBooking), ((b, 1.0, 10), errors.InvalidType),
                      ((b, -1, 10), errors.InvalidArgument),
                      ((b, 10**12 + 1, 10), errors.InvalidArgument),
                      ((b, 0, 9), errors.TimeWentBackwards),  # now before the state check
                      ((b, 0, 10), errors.InvalidState)]:
        with pytest.raises(err):
            c.settle(*args)
    assert c.state_hash() == before


def test_limit_rises_after_on_time_repayments_up_to_the_ceiling(money):
    c = money(cover=False)
    session(c, quotas=(9, 0, 0))
    c.open_line(0, OUT, -1, 1)
    billed(c, 10, 100), billed(c, 11, 100)
    c.drain_events()
    assert c.repay(0, 200, 12) == 2  # both on time: a streak of 2 raises one step
    assert [e[0] for e in c.drain_events()] == [int(E.BILL_PAID)] * 2 + [int(E.LIMIT_CHANGED)]
    assert c.wallet(0) == (0, 0, OUT, int(LS.OPEN), 400, 0, 0, 0, 0)
    assert c.set_limit(0, 550, 13) == 550
    billed(c, 14, 10), billed(c, 15, 10)
    c.repay(0, 20, 16)
    assert c.wallet(0)[4] == 600  # min(550 + 100, ceiling 600)
    billed(c, 17, 10)
    c.repay(0, 10, 18)
    assert c.wallet(0)[7] == 1  # streak 1 of 2
    billed(c, 19, 10)
    c.drain_events()
    c.repay(0, 10, 20)
    assert c.wallet(0)[4] == 600 and c.wallet(0)[7] == 0  # at the ceiling: no event
    assert [e[0] for e in c.drain_events()] == [int(E.BILL_PAID)]


def test_overdue_cuts_within_the_floor_and_never_below_used_plus_held(money):
    c = money(cover=False)
    session(c, quotas=(9, 0, 0))
    c.open_line(0, OUT, 150, 1)
    billed(c, 10, 10)
    c.advance(110)  # max(150 - 100, floor 100, used 10) = 100
    assert c.wallet(0)[3:6] == (int(LS.SUSPENDED), 100, 10)
    c.repay(0, 10, 111)
    assert c.wallet(0)[3:6] == (int(LS.OPEN), 100, 0)
    c2 = money(cover=False)
    session(c2, quotas=(9, 0, 0))
    c2.open_line(0, OUT, 150, 1)
    billed(c2, 10, 60), billed(c2, 11, 60)
    c2.drain_events()
    c2.advance(110)  # first due: max(50, 100, used 120) = 120
    assert [e[0] for e in c2.drain_events()] == [
        int(E.BILL_DUE_SOON), int(E.BILL_DUE_SOON), int(E.BILL_OVERDUE), int(E.LIMIT_CHANGED),
        int(E.CREDIT_SUSPENDED)]
    c2.advance(111)  # second due: still 120: no LIMIT_CHANGED, already suspended
    assert [e[0] for e in c2.drain_events()] == [int(E.BILL_OVERDUE)]
    assert c2.wallet(0) == (0, 0, OUT, int(LS.SUSPENDED), 120, 120, 0, 0, 2)
    assert c2.repay(0, 60, 112) == 1 and c2.wallet(0)[3] == int(LS.SUSPENDED)  # one still due
    assert c2.repay(0, 60, 113) == 1 and c2.wallet(0)[3] == int(LS.OPEN)


def test_repay_pays_the_oldest_bills_first(money):
    c = money(cover=False)
    session(c, quotas=(9, 0, 0))
    c.open_line(0, OUT, -1, 1)
    k0, k1 = billed(c, 10, 100), billed(c, 11, 200)
    b0, b1 = c.bill_info(k0)[1], c.bill_info(k1)[1]
    n = c.n_movements
    assert c.repay(0, 150, 12) == 1
    assert c.bill_info(k0) == (0, b0, 100, 100, 10, 110, int(BS.PAID), 12)
    assert c.bill_info(k1) == (0, b1, 200, 50, 11, 111, int(BS.OPEN), -1)
    assert c.movements(n) == [move(n, c.ncmd, 12, 0, MK.REPAY, 100, -1, k0),
                              move(n + 1, c.ncmd, 12, 0, MK.REPAY, 50, -1, k1)]
    assert c.wallet(0)[5:8] == (150, 0, 1)
    for amount, err in [(151, errors.InvalidArgument), (0, errors.InvalidArgument),
                        (1.0, errors.InvalidType)]:
        with pytest.raises(err):
            c.repay(0, amount, 13)
    with pytest.raises(errors.InvalidArgument):
        c.repay(1, 1, 13)  # owes nothing
    assert c.repay(0, 150, 13) == 1 and c.wallet(0)[5] == 0


def test_refund_only_the_free_balance_judged_after_timers(money):
    c = money()
    session(c, fee=100)
    c.top_up(0, 100, 1)
    book(c, 10, patient=0, hold=True)  # holds (100, 0) until 20
    before = c.dump()
    with pytest.raises(errors.InvalidArgument):
        c.refund(0, 101, 25)  # more than the balance: validation, before the timers
    assert c.dump() == before
    assert c.refund(0, 100, 19) == (int(R.NO_COVER), 100)  # still held: nothing refunded
    assert c.refund(0, 100, 20) == (0, 0)  # the hold expired in this command's timers
    assert c.movements()[-1] == move(1, c.ncmd, 20, 0, MK.REFUND, 100)
    assert c.ledger_totals() == (0, 0, 0, 0)
    with pytest.raises(errors.InvalidArgument):
        c.refund(0, 1, 27)
    with pytest.raises(errors.InvalidArgument):
        c.top_up(0, 10**12 + 1, 27)
    with pytest.raises(errors.InvalidType):
        c.top_up(0, 1.5, 27)
    with pytest.raises(errors.UnknownPatient):
        c.top_up(9, 1, 27)


def test_balance_never_passes_10_to_the_15(money):
    c = money()
    for t in range(1, 1001):
        c.top_up(0, 10**12, t)
    assert c.wallet(0)[0] == 10**15
    with pytest.raises(errors.InvalidArgument):
        c.top_up(0, 1, 1002)


def test_close_and_reopen_a_line(money):
    c = money(cover=False)
    session(c, quotas=(9, 0, 0))
    for call, err in [(lambda: c.close_line(0, 1), errors.InvalidState),
                      (lambda: c.set_limit(0, 5, 1), errors.InvalidState),
                      (lambda: c.open_line(0, 3, -1, 1), errors.InvalidArgument),
                      (lambda: c.open_line(0, OUT, -2, 1), errors.InvalidArgument),
                      (lambda: c.open_line(0, OUT, 1.0, 1), errors.InvalidType),
                      (lambda: c.set_limit(0, -1, 1), errors.InvalidArgument)]:
        with pytest.raises(err):
            call()
    assert c.ncmd == 1  # only add_session
    c.open_line(0, OUT, -1, 1)
    with pytest.raises(errors.InvalidState):
        c.open_line(0, INP, -1, 2)
    billed(c, 10, 100)
    with pytest.raises(errors.InvalidState):
        c.close_line(0, 11)  # 100 still used
    c.drain_events()
    assert c.set_limit(0, 50, 11) == 100  # never below used + held
    assert c.drain_events() == [ev(E.LIMIT_CHANGED, 11, p=0, detail=100)]
    assert c.set_limit(0, 100, 11) == 100 and c.drain_events() == []
    c.repay(0, 100, 12)
    c.close_line(0, 13)
    assert c.wallet(0) == (0, 0, OUT, int(LS.CLOSED), 100, 0, 0, 1, 0)
    assert c.check_cover(0, 1) == (int(R.NO_COVER), 0, 1)
    with pytest.raises(errors.InvalidState):
        c.set_limit(0, 5, 14)
    with pytest.raises(errors.InvalidState):
        c.close_line(0, 14)
    c.open_line(0, INP, -1, 15)  # reopened, as another kind
    assert c.wallet(0) == (0, 0, INP, int(LS.OPEN), 5000, 0, 0, 0, 0)


def test_a_served_ticket_needs_cover_too(money):
    c = money(prequeue_ms=5, cohort_ms=20)
    s = session(c, fee=100, release=(100, 100, 100))
    c.top_up(1, 100, 1)
    assert book(c, 100, patient=0).status == Status.QUEUED
    assert book(c, 101, patient=1, account=1).status == Status.QUEUED
    c.drain_events()
    c.advance(120)  # the cohort closes and is served
    evs = [e for e in c.drain_events() if e[0] in (E.TICKET_SERVED, E.TICKET_FAILED)]
    failed = [e for e in evs if e[0] == E.TICKET_FAILED]
    assert len(evs) == 2 and len(failed) == 1 and failed[0][4] == 0
    assert failed[0][8] == int(R.NO_COVER) and c.ticket_info(0)[12] == int(R.NO_COVER)
    served = c.ticket_info(1)[11]
    assert c.booking_cover(served) == (100, 0, -1) and c.booking_info(served)[0] == s


def test_book_many_rows_need_cover(money):
    c = money()
    session(c, fee=100, quotas=(3, 0, 0))
    c.top_up(0, 150, 1)
    out = c.book_many([0, 1, 2], [0, 1, 0], [0, 0, 0], [0, 0, 0], [5, 6, 7], False)
    assert out[1].tolist() == [0, int(R.NO_COVER), int(R.DUPLICATE_SESSION)]
    assert c.ncmd == 5  # add_session, top_up, one per row
    assert c.wallet(0)[:2] == (150, 100)


def test_ncmd_counts_commands_that_pass_validation(money):
    c = money(cover=False)
    assert c.ncmd == 0
    session(c)
    c.ensure_patients(6)
    c.ensure_accounts(6)
    assert c.ncmd == 1
    assert book(c, 10, patient=1).status == Status.BOOKED
    assert book(c, 10, patient=1).reason == R.DUPLICATE_SESSION  # a rejection counts
    with pytest.raises(errors.TimeWentBackwards):
        book(c, 5)  # an error does not
    assert c.ncmd == 3
    c.book_many([0, 1], [2, 3], [0, 0], [0, 0], [11, 12], False)
    c.book_many([], [], [], [], [], False)
    assert c.ncmd == 5
    c.wallet(0), c.dump(), c.check_cover(0, 1), c.booking_cover(0), c.movements()
    c.drain_events(), c.session_counts(0), c.state_hash()
    assert c.ncmd == 5
    c.advance(13)
    c.suspend(0, 14)
    assert c.suspend(0, 15) == 0  # does nothing, but counts
    with pytest.raises(errors.InvalidState):
        c.add_capacity(0, 1, 0, 16)
    assert c.ncmd == 8 and c.dump()["ncmd"] == 8
    c.top_up(0, 5, 17)
    assert c.movements()[0][1] == 9


def test_ledger_sums_to_zero_and_matches_wallets(money):
    c = money()
    session(c, fee=300, quotas=(4, 0, 0))
    c.top_up(0, 1000, 1)
    c.open_line(1, OUT, -1, 1)
    b0 = book(c, 2, patient=0).booking
    b1 = book(c, 2, patient=1, account=1).booking
    c.check_in(b0, 3)
    c.check_in(b1, 3)
    c.repay(1, 100, 4)
    c.refund(0, 50, 5)
    # EXTERNAL: -1000 + 100 (repay in) ... signs: the source loses, the target gains
    assert c.ledger_totals() == (-1000 - 100 + 50, 600, 1000 - 300 - 50, -300 + 100)
    assert sum(c.ledger_totals()) == 0
    assert c.wallet(0)[0] == 650 and c.wallet(1)[5] == 200


def test_dump_layout_with_credit(money):
    c = money(settle_at_check_in=False)
    s = session(c, fee=300, quotas=(1, 0, 0))
    c.top_up(0, 100, 1)
    c.open_line(0, OUT, -1, 2)
    b = book(c, 3, patient=0).booking  # (100, 200)
    c.top_up(1, 500, 4)
    r = join(c, 5, patient=1, sessions=[s]).request  # (300, 0)
    c.check_in(b, 6)
    c.settle(b, 250, 7)  # 100 from the balance, 150 billed
    d = c.dump()
    assert d["ncmd"] == 8
    assert d["wallets"] == [(0, 0, 0, OUT, int(LS.OPEN), 300, 150, 0, 0, 0),
                            (1, 500, 300, 0, 0, 0, 0, 0, 0, 0)]
    assert d["covers"] == [(b, 0, 0, 250)]
    assert d["request_covers"] == [(r, 300, 0)]
    assert d["bills"] == [(0, b, 150, 0, 7, 107, int(BS.OPEN), -1)]
    assert d["movements"] == [move(0, 2, 1, 0, MK.TOP_UP, 100), move(1, 5, 4, 1, MK.TOP_UP, 500),
                              move(2, 8, 7, 0, MK.PAY_BALANCE, 100, b),
                              move(3, 8, 7, 0, MK.PAY_CREDIT, 150, b, 0)]
    seq = d["seq"]
    assert (87, seq - 2, BILL_NOTICE, 0) in d["timers"] and (107, seq - 1, BILL_DUE, 0) in d["timers"]


def test_credit_stage_comes_after_allocate(money):
    c = money()
    s = session(c, fee=100, quotas=(1, 0, 0))
    assert book(c, 1, patient=0).reason == R.NO_COVER  # room, but no cover
    r = join(c, 2, patient=0, sessions=[s])
    assert (r.reason, r.session) == (R.SLOTS_LEFT, s)  # a free slot wins over NO_COVER
    c.top_up(1, 100, 3)
    book(c, 4, patient=1, account=1)
    assert book(c, 5, patient=0).reason == R.FULL  # FULL wins over NO_COVER
    r = join(c, 6, patient=0, sessions=[s])
    assert (r.reason, r.session) == (R.NO_COVER, None)


def test_limits_move_only_in_their_own_direction(money):
    """A host's limit outside the kind's bounds (100..600 here): a raise never lowers it
    and a cut never raises it."""
    c = money(cover=False, credit_raise_after=1)
    session(c, quotas=(9, 0, 0), end_at=10_000)
    c.open_line(0, OUT, -1, 1)
    assert c.set_limit(0, 1000, 2) == 1000  # above the ceiling: allowed
    billed(c, 3, 10)
    billed(c, 4, 700)
    c.repay(0, 10, 5)  # on time, a streak of 1: max(1000, min(1100, 600)) = 1000
    assert c.wallet(0)[4:6] == (1000, 700)
    c.repay(0, 700, 6)
    assert c.wallet(0)[4:6] == (1000, 0)
    assert c.set_limit(0, 50, 7) == 50  # below the floor: allowed
    billed(c, 8, 30, s=1 if c.n_sessions > 1 else 0)
    c.drain_events()
    c.advance(200)  # overdue: max(min(50, max(-50, 100)), used 30) = 50, unchanged
    assert c.wallet(0)[3:6] == (int(LS.SUSPENDED), 50, 30)
    assert [e[0] for e in c.drain_events()] == [E.BILL_DUE_SOON, E.BILL_OVERDUE, E.CREDIT_SUSPENDED]
