"""Behaviour tests: one focused test (or a few) per rule of docs/semantics.md.

Every test runs on both backends through the public ``Engine`` facade (the
``backend`` fixture), asserts exact slots, reasons, counts and events, and
checks the engine's invariants after each mutation.  Times are fixed int ms,
never the wall clock.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

import slotengine as se
from conftest import LEDGER_ONLY
from slotengine import BookingState as BS
from slotengine import EventKind as EK
from slotengine import Event
from slotengine import Reason as R
from slotengine import Status as St
from slotengine.times import DAY, HOUR, MINUTE

T0 = 1_800_000_000_000  # 2027-01-15 16:00 in UTC+8
DAY0 = T0 // DAY * DAY  # a UTC midnight = 08:00 local (UTC+8)
START = DAY0 + 10 * DAY  # 2027-01-25 08:00 local
END = START + 4 * HOUR  # Policy.session_minutes = 240
ROLL = START - DAY  # Policy.rollover_minutes = 1440
CUTOFF = START - 16 * HOUR  # 16:00 local the day before
FAR = DAY0 + 200 * DAY  # a session far enough away for month-long scenarios
T1 = T0 + HOUR  # a time after the test releases (T0)
HOLD = 10 * MINUTE
CST = timezone(timedelta(hours=8))
ALL_CHANNELS = ("app", "window", "kiosk", "phone", "referral", "followup")


# -- helpers -------------------------------------------------------------------

def make(backend: str, seed: int = 0, **policy: object) -> se.Engine:
    return se.Engine(policy=se.Policy(**{**LEDGER_ONLY, **policy}), seed=seed, backend=backend)


def add(e: se.Engine, name: str = "S1", *, start: int = START, capacity: int = 3,
        hospital: str = "H1", department: str = "Cardiology", tier: str = "general",
        quotas: dict | None = None, release: dict | None = None, slot_minutes: int = 10,
        now: object = None) -> None:
    e.add_session(name, hospital=hospital, department=department, doctor="Dr Li", tier=tier,
                  starts_at=start, slot_minutes=slot_minutes, capacity=capacity, fee=6000,
                  quotas=quotas, release={"app": T0} if release is None else release, now=now)
    e._check_invariants()


def book(e: se.Engine, patient: str, session: str = "S1", channel: str | None = None, *,
         now: object = T1, hold: bool = False, account: str | None = None):
    r = e.book(account or "A-" + patient, patient, session, channel, now=now, hold=hold)
    e._check_invariants()
    return r


def cancel(e: se.Engine, booking: int, account: str, now: int):
    r = e.cancel(booking, account=account, now=now)
    e._check_invariants()
    return r


def res(r) -> tuple:
    """(status, reason, slot, booking) of a Result."""
    return (r.status, r.reason, r.slot, r.booking)


def rejected(r, reason: R) -> None:
    assert (r.status, r.reason, r.slot, r.booking, r.window) == (St.REJECTED, reason, None, None, None)
    assert not r.ok
    assert r.as_tuple() == (int(St.REJECTED), int(reason), 0, -1)


def quota(e: se.Engine, session: str = "S1") -> dict:
    return {ch: n for ch, n in e.session(session).quota_left.items() if n}


def pinfo(e: se.Engine, patient: str) -> tuple:
    """(banned_until, strikes, cancels) of a patient, from dump()."""
    d = e.dump()
    banned, strikes, cancels = d["patients"][d["names"]["patients"].index(patient)][:3]
    return banned, tuple(strikes), tuple(cancels)


def ev(kind: EK, at: int, session: str | None, booking: int | None, patient: str | None,
       detail: int, account: str | None = None, *, slot: int | None = None,
       reason: se.Reason = se.Reason.NONE) -> Event:
    """An Event; a booking's event names its account, "A-" + patient unless given."""
    if account is None and booking is not None and patient is not None:
        account = "A-" + patient
    return Event(kind, at, session, booking, patient, account, detail, slot, reason)


def window(slot: int, minutes: int = 10, start: int = START) -> tuple[int, int]:
    return (start + (slot - 1) * minutes * MINUTE, start + slot * minutes * MINUTE)


# -- booking ---------------------------------------------------------------------

def test_book_takes_lowest_free_slot_with_its_window(backend):
    e = make(backend)
    add(e, capacity=3)
    r = book(e, "P1")
    assert res(r) == (St.BOOKED, R.NONE, 1, 0)
    assert r.window == window(1) and r.session == 0 and r.ticket is None and r.ok
    assert r.as_tuple() == (int(St.BOOKED), 0, 1, 0)
    assert type(r.status) is St and type(r.reason) is R
    r = book(e, "P2")
    assert res(r) == (St.BOOKED, R.NONE, 2, 1) and r.window == window(2)
    assert cancel(e, 0, "A-P1", T1 + 1).status == St.CANCELLED
    r = book(e, "P3", now=T1 + 2)  # slot 1 is free again and lowest
    assert res(r) == (St.BOOKED, R.NONE, 1, 2) and r.window == window(1)
    assert res(book(e, "P4", now=T1 + 3)) == (St.BOOKED, R.NONE, 3, 3)
    assert e.session_counts("S1") == (0, 0, 3, 0, 0, 0, 0, 0)


def test_slot_window_follows_slot_minutes(backend):
    e = make(backend)
    add(e, capacity=3, slot_minutes=9)
    book(e, "P1")
    r = book(e, "P2")
    assert r.slot == 2 and r.window == (START + 9 * MINUTE, START + 18 * MINUTE)
    assert e.booking(1).window == r.window


def test_hold_result(backend):
    e = make(backend)
    add(e)
    r = book(e, "P1", hold=True)
    assert res(r) == (St.HELD, R.NONE, 1, 0) and r.ok and r.window == window(1)
    assert r.as_tuple() == (int(St.HELD), 0, 1, 0)
    b = e.booking(0)
    assert (b.state, b.created_at, b.changed_at, b.hold_until) == (BS.HELD, T1, T1, T1 + HOLD)
    assert e.session_counts("S1") == (2, 1, 0, 0, 0, 0, 0, 0)
    assert e.booking(0).hold_until == T1 + HOLD
    assert book(e, "P2").slot == 2 and e.booking(1).hold_until == 0


def test_full_session_rejects(backend):
    e = make(backend)
    add(e, capacity=1)
    assert book(e, "P1").slot == 1
    before = e.state_hash()
    rejected(book(e, "P2"), R.FULL)
    # a rejection changes nothing but the clock and timers (and registers the ids)
    assert e.session_counts("S1") == (0, 0, 1, 0, 0, 0, 0, 0)
    assert e.state_hash() != before  # new account/patient ids were registered
    h = e.dump()
    rejected(book(e, "P2"), R.FULL)
    after = e.dump()
    assert after.pop("ncmd") == h.pop("ncmd") + 1  # the command counts, and nothing else changed
    assert after == h


# -- channels, releases, quotas --------------------------------------------------

def test_channel_release_and_fallback_to_public(backend):
    e = make(backend)
    add(e, capacity=3, quotas={"app": 1, "window": 2},
        release={"app": T0 + 2 * HOUR, "window": T0 + 4 * HOUR})
    for ch in (None, "app", "window", "kiosk"):
        rejected(book(e, "P1", channel=ch, now=T0 + HOUR), R.NOT_RELEASED)
    rejected(book(e, "P1", now=T0 + 2 * HOUR - 1), R.NOT_RELEASED)
    # the public pool is open, the window's quota is not: window draws the public quota
    r = book(e, "P1", "S1", "window", now=T0 + 2 * HOUR)
    assert res(r) == (St.BOOKED, R.NONE, 1, 0)
    assert (e.booking(0).channel, e.booking(0).quota) == ("window", "app")
    rejected(book(e, "P2", "S1", "window", now=T0 + 2 * HOUR), R.QUOTA_EXHAUSTED)
    rejected(book(e, "P2", "S1", "kiosk", now=T0 + 2 * HOUR), R.QUOTA_EXHAUSTED)
    rejected(book(e, "P2", now=T0 + 2 * HOUR), R.QUOTA_EXHAUSTED)
    # window opens: its own quota; the public channel may not draw it
    r = book(e, "P2", "S1", "window", now=T0 + 4 * HOUR)
    assert res(r) == (St.BOOKED, R.NONE, 2, 1)
    assert (e.booking(1).channel, e.booking(1).quota) == ("window", "window")
    rejected(book(e, "P3", now=T0 + 4 * HOUR), R.QUOTA_EXHAUSTED)
    assert quota(e) == {"window": 1}
    assert res(book(e, "P3", "S1", "window", now=T0 + 4 * HOUR)) == (St.BOOKED, R.NONE, 3, 2)
    rejected(book(e, "P4", "S1", "window", now=T0 + 4 * HOUR), R.FULL)
    assert quota(e) == {}


def test_channel_with_released_quota_prefers_its_own(backend):
    e = make(backend)
    add(e, capacity=2, quotas={"app": 1, "phone": 1}, release={"app": T0, "phone": T0})
    book(e, "P1", "S1", "phone")
    assert e.booking(0).quota == "phone"
    book(e, "P2", "S1", "phone")  # own quota spent: falls back to public
    assert e.booking(1).quota == "app"
    assert quota(e) == {}


def test_unclaimed_quota_rolls_into_public_pool(backend):
    e = make(backend)
    add(e, capacity=4, quotas={"app": 1, "window": 2, "phone": 1},
        release={"app": T0, "window": T0, "phone": T0})
    assert book(e, "P1", "S1", "window").slot == 1
    assert book(e, "P2").slot == 2
    rejected(book(e, "P3"), R.QUOTA_EXHAUSTED)
    assert quota(e) == {"window": 1, "phone": 1}
    assert e.advance(ROLL - 1) == []
    assert not e.session("S1").rolled
    assert e.advance(ROLL) == [ev(EK.QUOTA_ROLLED, ROLL, "S1", None, None, 2)]
    info = e.session("S1")
    assert info.rolled and info.rollover_at == ROLL
    assert quota(e) == {"app": 2}
    assert res(book(e, "P3", now=ROLL)) == (St.BOOKED, R.NONE, 3, 2)
    assert e.booking(2).quota == "app"
    r = book(e, "P4", "S1", "window", now=ROLL)
    assert res(r) == (St.BOOKED, R.NONE, 4, 3) and e.booking(3).quota == "app"
    rejected(book(e, "P5", now=ROLL), R.FULL)
    # cancelling a window-quota booking after the roll-over returns it to the public pool
    assert cancel(e, 0, "A-P1", ROLL + 1).status == St.CANCELLED
    assert quota(e) == {"app": 1}
    r = book(e, "P5", "S1", "phone", now=ROLL + 2)
    assert res(r) == (St.BOOKED, R.NONE, 1, 4) and e.booking(4).quota == "app"


def test_rollover_runs_before_a_command_and_is_silent_when_nothing_moves(backend):
    e = make(backend)
    add(e, "S1", capacity=2, quotas={"app": 1, "window": 1}, release={"app": T0, "window": T0})
    add(e, "S2", capacity=2, department="Neurology")  # all public: nothing to roll
    book(e, "P1")
    # no advance: the booking at ROLL runs the roll-over first and may take the moved quota
    r = book(e, "P2", now=ROLL + 5)
    assert res(r) == (St.BOOKED, R.NONE, 2, 1) and e.booking(1).quota == "app"
    assert e.events() == [ev(EK.QUOTA_ROLLED, ROLL, "S1", None, None, 1)]
    assert e.session("S2").rolled
    assert e.advance(ROLL + 6) == []


# -- hold, confirm, expiry -------------------------------------------------------

def test_hold_then_confirm(backend):
    e = make(backend)
    add(e)
    book(e, "P1", hold=True)
    e.intern_accounts(["A-other"])
    r = e.confirm(0, account="A-other", now=T1 + 1)
    assert res(r) == (St.REJECTED, R.NOT_OWNER, 1, 0) and r.window == window(1) and r.session == 0
    r = e.confirm(0, account="A-P1", now=T1 + 5 * MINUTE)
    e._check_invariants()
    assert res(r) == (St.BOOKED, R.NONE, 1, 0) and r.ok
    b = e.booking(0)
    assert (b.state, b.created_at, b.changed_at, b.hold_until) == (BS.BOOKED, T1, T1 + 5 * MINUTE, T1 + HOLD)
    assert e.session_counts("S1") == (2, 0, 1, 0, 0, 0, 0, 0)
    assert e.advance(T1 + HOLD) == []  # the hold timer is stale now
    assert e.booking(0).state == BS.BOOKED
    assert res(e.confirm(0, account="A-P1", now=T1 + HOLD)) == (St.REJECTED, R.NOT_HELD, 1, 0)


def test_hold_expiry_frees_the_slot(backend):
    e = make(backend)
    add(e, capacity=1)
    book(e, "P1", hold=True)
    rejected(book(e, "P2", now=T1 + 1), R.FULL)
    assert e.advance(T1 + HOLD - 1) == []
    assert e.advance(T1 + HOLD) == [ev(EK.HOLD_EXPIRED, T1 + HOLD, "S1", 0, "P1", -1, slot=1)]
    e._check_invariants()
    b = e.booking(0)
    assert (b.state, b.changed_at, b.end_reason) == (BS.EXPIRED, T1 + HOLD, R.NONE)
    assert e.session_counts("S1") == (1, 0, 0, 0, 0, 0, 0, 0)
    assert quota(e) == {"app": 1}
    assert e.live_bookings("P1") == []
    r = e.confirm(0, account="A-P1", now=T1 + HOLD + 1)
    assert res(r) == (St.REJECTED, R.HOLD_EXPIRED, 1, 0)
    assert res(book(e, "P2", now=T1 + HOLD + 2)) == (St.BOOKED, R.NONE, 1, 1)


def test_hold_expires_before_a_late_confirm_without_advance(backend):
    e = make(backend)
    add(e)
    book(e, "P1", hold=True)
    r = e.confirm(0, account="A-P1", now=T1 + HOLD)  # due exactly now: expiry runs first
    assert res(r) == (St.REJECTED, R.HOLD_EXPIRED, 1, 0)
    assert e.events() == [ev(EK.HOLD_EXPIRED, T1 + HOLD, "S1", 0, "P1", -1, slot=1)]
    assert res(e.cancel(0, account="A-P1", now=T1 + HOLD)) == (St.REJECTED, R.NOT_ACTIVE, 1, 0)


# -- cancel ----------------------------------------------------------------------

def test_cancel_owner_and_state(backend):
    e = make(backend)
    add(e)
    book(e, "P1")
    book(e, "P2", hold=True)
    e.intern_accounts(["A-other"])
    r = e.cancel(0, account="A-other", now=T1 + 1)
    assert res(r) == (St.REJECTED, R.NOT_OWNER, 1, 0) and r.window == window(1)
    assert e.booking(0).state == BS.BOOKED
    r = cancel(e, 0, "A-P1", T1 + 2)
    assert res(r) == (St.CANCELLED, R.NONE, 1, 0) and r.ok and r.window == window(1)
    b = e.booking(0)
    assert (b.state, b.changed_at, b.end_reason) == (BS.CANCELLED, T1 + 2, R.NONE)
    assert e.session_counts("S1") == (2, 1, 0, 0, 0, 0, 0, 0)
    assert e.live_bookings("P1") == []
    assert res(e.cancel(0, account="A-P1", now=T1 + 3)) == (St.REJECTED, R.NOT_ACTIVE, 1, 0)
    assert res(cancel(e, 1, "A-P2", T1 + 4)) == (St.CANCELLED, R.NONE, 2, 1)
    # a booked cancellation is recorded for the patient; a released hold is not
    assert pinfo(e, "P1") == (0, (), (T1 + 2,))
    assert pinfo(e, "P2") == (0, (), ())


def test_cancel_cutoff_applies_to_booked_not_to_holds(backend):
    e = make(backend)
    add(e)
    book(e, "P1")
    book(e, "P3")
    assert cancel(e, 1, "A-P3", CUTOFF - 1).status == St.CANCELLED
    r = e.cancel(0, account="A-P1", now=CUTOFF)
    assert res(r) == (St.REJECTED, R.CANCEL_CUTOFF, 1, 0)
    assert e.booking(0).state == BS.BOOKED
    assert e.session("S1").cancel_cutoff_at == CUTOFF
    r = book(e, "P2", now=CUTOFF, hold=True)
    assert res(r) == (St.HELD, R.NONE, 2, 2)
    assert res(cancel(e, 2, "A-P2", CUTOFF + 1)) == (St.CANCELLED, R.NONE, 2, 2)


# -- check-in ------------------------------------------------------------------------

def test_check_in(backend):
    e = make(backend, bar_first_visit_expert=True)
    add(e, capacity=3)
    add(e, "EX", tier="expert", department="Neurology", start=START + DAY)
    book(e, "P1", hold=True)
    r = e.check_in(0, now=T1 + 1)
    assert res(r) == (St.REJECTED, R.NOT_CONFIRMED, 1, 0)
    assert e.confirm(0, account="A-P1", now=T1 + 2).status == St.BOOKED
    rejected(book(e, "P1", "EX", now=T1 + 3), R.FIRST_VISIT_EXPERT)
    r = e.check_in(0, now=START)
    e._check_invariants()
    assert res(r) == (St.ARRIVED, R.NONE, 1, 0) and r.ok and r.window == window(1)
    b = e.booking(0)
    assert (b.state, b.changed_at) == (BS.ARRIVED, START)
    assert e.session_counts("S1") == (2, 0, 0, 1, 0, 0, 0, 0)
    assert e.live_bookings("P1") == []
    assert res(e.check_in(0, now=START + 1)) == (St.REJECTED, R.NOT_ACTIVE, 1, 0)
    # the patient is now known at H1: the expert session there is open to them
    assert res(book(e, "P1", "EX", now=START + 2)) == (St.BOOKED, R.NONE, 1, 1)
    book(e, "P2", now=START + 3)
    assert cancel(e, 2, "A-P2", START + 4).reason == R.CANCEL_CUTOFF
    assert e.advance(END) == [
        ev(EK.NO_SHOW, END, "S1", 2, "P2", -1, slot=2),
        ev(EK.PATIENT_BANNED, END, "S1", 2, "P2", 1, slot=2),
    ]  # arrived P1 is not a no-show
    assert e.booking(0).state == BS.ARRIVED


def test_check_in_of_cancelled_booking_is_not_active(backend):
    e = make(backend)
    add(e)
    book(e, "P1")
    cancel(e, 0, "A-P1", T1 + 1)
    assert res(e.check_in(0, now=T1 + 2)) == (St.REJECTED, R.NOT_ACTIVE, 1, 0)


# -- no-shows, strikes, bans ---------------------------------------------------

def test_no_show_strikes_escalate_bans(backend):
    e = make(backend)
    step = 100 * DAY
    for k in range(5):
        add(e, f"S{k}", start=START + k * step, capacity=2)
    ends = [START + k * step + 4 * HOUR for k in range(5)]
    bans = [30, 60, 90, 90]
    t = T1
    for k in range(4):
        if k:
            rejected(book(e, "P1", f"S{k}", now=t - 1), R.PATIENT_BANNED)
        r = book(e, "P1", f"S{k}", now=t)
        assert res(r) == (St.BOOKED, R.NONE, 1, k)
        assert e.advance(ends[k]) == [
            ev(EK.NO_SHOW, ends[k], f"S{k}", k, "P1", -1, slot=1),
            ev(EK.PATIENT_BANNED, ends[k], f"S{k}", k, "P1", min(k + 1, 3), slot=1),
        ]
        e._check_invariants()
        assert e.booking(k).state == BS.NO_SHOW and e.booking(k).changed_at == ends[k]
        assert e.session_counts(f"S{k}") == (1, 0, 0, 0, 1, 0, 0, 0)
        assert e.session(f"S{k}").closed
        t = ends[k] + bans[k] * DAY
        assert e.patient_banned_until("P1") == t
    # at most len(ban_days) strikes are kept, oldest dropped first
    assert pinfo(e, "P1") == (t, tuple(ends[1:4]), ())


def test_strikes_outside_the_window_do_not_escalate(backend):
    e = make(backend)
    add(e, "S0", capacity=1)
    add(e, "S1", start=START + 400 * DAY, capacity=1)
    book(e, "P1", "S0")
    e.advance(END)
    assert e.patient_banned_until("P1") == END + 30 * DAY
    book(e, "P1", "S1", now=START + 399 * DAY)
    end1 = START + 400 * DAY + 4 * HOUR
    events = e.advance(end1)
    assert events[-1] == ev(EK.PATIENT_BANNED, end1, "S1", 1, "P1", 1, slot=1)
    assert e.patient_banned_until("P1") == end1 + 30 * DAY


def test_session_end_expires_holds_without_strike(backend):
    e = make(backend)
    add(e, capacity=3)
    book(e, "P1")
    book(e, "P2", hold=True, now=END - 5 * MINUTE)
    assert e.advance(END) == [
        ev(EK.NO_SHOW, END, "S1", 0, "P1", -1, slot=1),
        ev(EK.PATIENT_BANNED, END, "S1", 0, "P1", 1, slot=1),
        ev(EK.HOLD_EXPIRED, END, "S1", 1, "P2", -1, slot=2),
    ]
    e._check_invariants()
    assert (e.booking(1).state, e.booking(1).changed_at) == (BS.EXPIRED, END)
    assert e.patient_banned_until("P2") == 0
    assert e.patient_banned_until("P1") == END + 30 * DAY
    assert e.session_counts("S1") == (2, 0, 0, 0, 1, 0, 0, 0)
    assert e.session("S1").closed
    assert e.advance(END + 5 * MINUTE) == []  # the hold's own timer is stale


def test_banned_patient_is_rejected_until_ban_ends(backend):
    e = make(backend)
    add(e, "S0", capacity=1)
    add(e, "S1", start=FAR, capacity=1)
    book(e, "P1", "S0")
    e.advance(END)
    rejected(book(e, "P1", "S1", now=END + 30 * DAY - 1), R.PATIENT_BANNED)
    assert book(e, "P1", "S1", now=END + 30 * DAY).status == St.BOOKED


def test_three_cancellations_within_30_days_are_a_strike(backend):
    e = make(backend)
    add(e, capacity=1)
    for i in range(3):
        assert res(book(e, "P1", now=T1 + 2 * i)) == (St.BOOKED, R.NONE, 1, i)
        cancel(e, i, "A-P1", T1 + 2 * i + 1)
    strike = T1 + 5
    assert e.events() == [ev(EK.PATIENT_BANNED, strike, "S1", 2, "P1", 1, slot=1)]
    assert pinfo(e, "P1") == (strike + 30 * DAY, (strike,), ())
    rejected(book(e, "P1", now=T1 + 6), R.PATIENT_BANNED)


def test_spread_out_cancellations_are_no_strike(backend):
    e = make(backend)
    add(e, start=FAR, capacity=1)
    times = [T1, T1 + 20 * DAY, T1 + 40 * DAY]
    for i, t in enumerate(times):
        book(e, "P1", now=t)
        cancel(e, i, "A-P1", t + 1)
    assert e.events() == []
    assert pinfo(e, "P1") == (0, (), tuple(t + 1 for t in times))
    t = T1 + 45 * DAY  # the last three now fall inside 30 days
    book(e, "P1", now=t)
    cancel(e, 3, "A-P1", t + 1)
    assert e.events() == [ev(EK.PATIENT_BANNED, t + 1, "S1", 3, "P1", 1, slot=1)]
    assert pinfo(e, "P1") == (t + 1 + 30 * DAY, (t + 1,), ())


def test_released_holds_are_no_cancellations(backend):
    e = make(backend)
    add(e, capacity=1)
    for i in range(4):
        book(e, "P1", now=T1 + 2 * i, hold=True)
        cancel(e, i, "A-P1", T1 + 2 * i + 1)
    assert e.events() == [] and pinfo(e, "P1") == (0, (), ())


def test_cancel_strikes_zero_disables_the_rule(backend):
    e = make(backend, cancel_strikes=0)
    add(e, capacity=1)
    for i in range(4):
        book(e, "P1", now=T1 + 2 * i)
        cancel(e, i, "A-P1", T1 + 2 * i + 1)
    assert e.events() == [] and pinfo(e, "P1") == (0, (), ())


# -- per-patient and per-account limits -----------------------------------------

def test_duplicate_session_and_department_day(backend):
    e = make(backend, patient_limits=())
    add(e, "S1")
    add(e, "PM", start=START + 4 * HOUR)  # same department, same local day
    add(e, "LATE", start=START + 15 * HOUR)  # 23:00 local: still the same day
    add(e, "NEXT", start=START + 16 * HOUR)  # 00:00 local: the next day (UTC+8)
    add(e, "NEURO", department="Neurology")
    add(e, "H2", hospital="H2")  # same department name, other hospital
    assert book(e, "P1").status == St.BOOKED
    rejected(book(e, "P1"), R.DUPLICATE_SESSION)
    rejected(book(e, "P1", "PM"), R.DUPLICATE_DEPARTMENT_DAY)
    rejected(book(e, "P1", "LATE"), R.DUPLICATE_DEPARTMENT_DAY)
    for s in ("NEXT", "NEURO", "H2"):
        assert book(e, "P1", s).status == St.BOOKED, s
    assert book(e, "P2", "PM").status == St.BOOKED  # another patient
    cancel(e, 0, "A-P1", T1 + 1)  # the live booking is gone: both rules lift
    assert res(book(e, "P1", "PM", now=T1 + 2)) == (St.BOOKED, R.NONE, 2, 5)
    rejected(book(e, "P1", "S1", now=T1 + 2), R.DUPLICATE_DEPARTMENT_DAY)


def test_one_per_department_day_can_be_switched_off(backend):
    e = make(backend, one_per_department_day=False)
    add(e, "S1")
    add(e, "PM", start=START + 4 * HOUR)
    assert book(e, "P1").status == St.BOOKED
    assert book(e, "P1", "PM").status == St.BOOKED
    rejected(book(e, "P1"), R.DUPLICATE_SESSION)


def _depts(e: se.Engine, n: int) -> None:
    for k in range(n):
        add(e, f"D{k}", start=FAR, department=f"Dept{k}")


def test_limit_two_per_day(backend):
    e = make(backend)
    _depts(e, 4)
    assert book(e, "P1", "D0", now=T1).status == St.BOOKED
    assert book(e, "P1", "D1", now=T1 + 1).status == St.BOOKED
    r = book(e, "P1", "D2", now=T1 + 2)
    rejected(r, R.PATIENT_LIMIT)
    assert "2 per 1 day(s)" in e.explain(r)
    rejected(book(e, "P1", "D2", now=T1 + DAY - 1), R.PATIENT_LIMIT)
    # created_at > now - window: the first booking drops out exactly one day later
    assert book(e, "P1", "D2", now=T1 + DAY).status == St.BOOKED


def test_limit_three_per_week(backend):
    e = make(backend)
    _depts(e, 5)
    for k in range(3):
        assert book(e, "P1", f"D{k}", now=T1 + k * DAY).status == St.BOOKED
    rejected(book(e, "P1", "D3", now=T1 + 3 * DAY), R.PATIENT_LIMIT)
    rejected(book(e, "P1", "D3", now=T1 + 7 * DAY - 1), R.PATIENT_LIMIT)
    assert book(e, "P1", "D3", now=T1 + 7 * DAY).status == St.BOOKED


def test_limit_five_per_90_days(backend):
    e = make(backend)
    _depts(e, 7)
    for k in range(5):
        assert book(e, "P1", f"D{k}", now=T1 + 3 * k * DAY).status == St.BOOKED, k
    rejected(book(e, "P1", "D5", now=T1 + 15 * DAY), R.PATIENT_LIMIT)
    rejected(book(e, "P1", "D5", now=T1 + 90 * DAY - 1), R.PATIENT_LIMIT)
    assert book(e, "P1", "D5", now=T1 + 90 * DAY).status == St.BOOKED


def test_cancelled_and_expired_bookings_do_not_count(backend):
    e = make(backend)
    _depts(e, 5)
    book(e, "P1", "D0")
    book(e, "P1", "D1", now=T1 + 1)
    cancel(e, 1, "A-P1", T1 + 2)
    book(e, "P1", "D2", now=T1 + 3, hold=True)
    e.advance(T1 + 3 + HOLD)
    assert e.booking(2).state == BS.EXPIRED
    assert res(book(e, "P1", "D3", now=T1 + 3 + HOLD)) == (St.BOOKED, R.NONE, 1, 3)
    rejected(book(e, "P1", "D4", now=T1 + 3 + HOLD), R.PATIENT_LIMIT)


def test_custom_limit_table(backend):
    e = make(backend, patient_limits=((1, 2),))
    _depts(e, 2)
    book(e, "P1", "D0")
    rejected(book(e, "P1", "D1", now=T1 + 2 * DAY - 1), R.PATIENT_LIMIT)
    assert book(e, "P1", "D1", now=T1 + 2 * DAY).status == St.BOOKED


def test_account_patient_limit(backend):
    e = make(backend, account_patients=2, account_window_days=30, patient_limits=())
    add(e, "S1", start=FAR, capacity=10)
    add(e, "S2", start=FAR, capacity=10, department="Neurology")
    assert book(e, "P1", account="A").status == St.BOOKED
    assert book(e, "P2", account="A").status == St.BOOKED
    rejected(book(e, "P3", account="A"), R.ACCOUNT_PATIENT_LIMIT)
    cancel(e, 1, "A", T1 + 1)  # bookings in any state count
    rejected(book(e, "P3", account="A", now=T1 + 2), R.ACCOUNT_PATIENT_LIMIT)
    assert book(e, "P1", "S2", account="A", now=T1 + DAY).status == St.BOOKED  # P1 is in the set
    assert book(e, "P3", account="B", now=T1 + DAY).status == St.BOOKED  # another account
    rejected(book(e, "P4", "S2", account="A", now=T1 + 30 * DAY - 1), R.ACCOUNT_PATIENT_LIMIT)
    assert book(e, "P4", "S2", account="A", now=T1 + 30 * DAY).status == St.BOOKED


def test_account_patients_zero_disables_the_rule(backend):
    e = make(backend, account_patients=0)
    add(e, capacity=10)
    for k in range(8):
        assert book(e, f"P{k}", account="A").status == St.BOOKED


def test_first_visit_expert(backend):
    e = make(backend, bar_first_visit_expert=True)
    add(e, "EX", tier="expert")
    add(e, "AS", tier="associate", department="Neurology")
    add(e, "EX2", tier="expert", hospital="H2")
    rejected(book(e, "P1", "EX"), R.FIRST_VISIT_EXPERT)
    assert book(e, "P1", "AS").status == St.BOOKED
    e.register_patient("P2", follow_up_at=["H1"], now=T1)
    assert res(book(e, "P2", "EX")) == (St.BOOKED, R.NONE, 1, 1)
    rejected(book(e, "P2", "EX2"), R.FIRST_VISIT_EXPERT)  # known at H1 only
    e.register_patient("P1", follow_up_at=("H2",))  # a hospital never seen
    rejected(book(e, "P1", "EX", now=T1 + 1), R.FIRST_VISIT_EXPERT)


def test_first_visit_expert_is_off_by_default(backend):
    e = make(backend)
    add(e, "EX", tier="expert")
    assert book(e, "P1", "EX").status == St.BOOKED


def test_eligibility_order(backend):
    # a banned patient with a live booking in the session is told PATIENT_BANNED first
    e = make(backend)
    add(e, "S0", capacity=2)
    add(e, "S1", start=FAR, capacity=1)
    book(e, "P1", "S0")
    book(e, "P1", "S1", now=T1 + 1)
    e.advance(END)
    rejected(book(e, "P1", "S1", now=END), R.PATIENT_BANNED)
    # request stage before eligibility: a closed session says so, even to a banned patient
    rejected(book(e, "P1", "S0", now=END), R.SESSION_CLOSED)


# -- host commands -----------------------------------------------------------------

def test_add_capacity(backend):
    e = make(backend)
    add(e, capacity=2, quotas={"app": 1, "window": 1}, release={"app": T0, "window": T0})
    book(e, "P1")
    book(e, "P2", "S1", "window")
    rejected(book(e, "P3", "S1", "window"), R.FULL)
    assert e.add_capacity("S1", 3, channel="window", now=T1 + 1) == 5
    e._check_invariants()
    assert e.events() == [ev(EK.CAPACITY_ADDED, T1 + 1, "S1", None, None, 3)]
    assert e.session("S1").capacity == 5
    assert quota(e) == {"window": 3}
    assert e.session_counts("S1") == (3, 0, 2, 0, 0, 0, 0, 0)
    assert res(book(e, "P3", "S1", "window", now=T1 + 2)) == (St.BOOKED, R.NONE, 3, 2)
    assert book(e, "P3", "S1", "window", now=T1 + 2).reason == R.DUPLICATE_SESSION
    rejected(book(e, "P4", now=T1 + 2), R.QUOTA_EXHAUSTED)
    assert e.add_capacity("S1", 1, now=T1 + 3) == 6  # default: the public channel
    r = book(e, "P4", now=T1 + 4)
    assert res(r) == (St.BOOKED, R.NONE, 4, 3) and r.window == window(4)


def test_add_capacity_after_rollover_goes_to_public(backend):
    e = make(backend)
    add(e, capacity=2, quotas={"app": 1, "window": 1}, release={"app": T0, "window": T0})
    e.advance(ROLL)
    assert quota(e) == {"app": 2}
    assert e.add_capacity("S1", 2, channel="window", now=ROLL + 1) == 4
    e._check_invariants()
    assert quota(e) == {"app": 4}
    assert e.events()[-1] == ev(EK.CAPACITY_ADDED, ROLL + 1, "S1", None, None, 2)


def test_add_capacity_refused_on_suspended_or_closed_session(backend):
    e = make(backend)
    add(e, "S1")
    add(e, "S2", start=START + DAY)
    e.suspend("S1", now=T1)
    h = e.state_hash()
    with pytest.raises(se.errors.InvalidState):
        e.add_capacity("S1", 1, now=T1 + 1)
    assert e.state_hash() == h
    e.advance(START + DAY + 4 * HOUR)
    h = e.state_hash()
    with pytest.raises(se.errors.InvalidState):
        e.add_capacity("S2", 1)
    assert e.state_hash() == h
    assert e.session("S2").capacity == 3


def test_suspend_cancels_every_live_booking(backend):
    e = make(backend)
    add(e, capacity=5, quotas={"app": 3, "window": 2}, release={"app": T0, "window": T0})
    book(e, "P1")  # slot 1: will arrive
    book(e, "P2", hold=True)  # slot 2: held
    book(e, "P3", "S1", "window")  # slot 3: booked
    assert e.block_slot("S1", 5, now=T1)
    e.check_in(0, now=T1 + 1)
    assert e.suspend("S1", now=T1 + 2) == 2
    e._check_invariants()
    sus = int(R.SESSION_SUSPENDED)
    assert e.events() == [
        ev(EK.BOOKING_CANCELLED, T1 + 2, "S1", 1, "P2", sus, slot=2, reason=R.SESSION_SUSPENDED),
        ev(EK.BOOKING_CANCELLED, T1 + 2, "S1", 2, "P3", sus, slot=3, reason=R.SESSION_SUSPENDED),
        ev(EK.SESSION_SUSPENDED, T1 + 2, "S1", None, None, 2),
    ]
    for b in (1, 2):
        info = e.booking(b)
        assert (info.state, info.end_reason, info.changed_at) == (BS.CANCELLED, R.SESSION_SUSPENDED, T1 + 2)
    assert e.booking(0).state == BS.ARRIVED
    assert e.session_counts("S1") == (0, 0, 0, 1, 0, 4, 0, 0)
    info = e.session("S1")
    assert info.suspended and not info.closed and quota(e) == {}
    assert e.live_bookings("P2") == [] and e.live_bookings("P3") == []
    assert pinfo(e, "P3") == (0, (), ())  # no cancellation record, no strike
    rejected(book(e, "P4", now=T1 + 3), R.SESSION_SUSPENDED)
    assert e.suspend("S1", now=T1 + 4) == 0
    assert e.events() == []
    assert not e.block_slot("S1", 4, now=T1 + 5)  # cancelled, not free
    assert not e.unblock_slot("S1", 5, now=T1 + 5)
    # suspended sessions neither roll over nor close with no-shows
    assert e.advance(END) == []
    assert not e.session("S1").rolled
    assert e.patient_banned_until("P3") == 0
    rejected(book(e, "P4", now=END), R.SESSION_SUSPENDED)


def test_block_and_unblock_slot(backend):
    e = make(backend)
    add(e, capacity=3)
    assert e.block_slot("S1", 1, now=T1) is True
    e._check_invariants()
    assert e.session_counts("S1") == (2, 0, 0, 0, 0, 0, 1, 0)
    assert quota(e) == {"app": 3}  # quotas are not touched
    assert book(e, "P1").slot == 2
    assert e.block_slot("S1", 2, now=T1) is False  # booked, not free
    assert e.block_slot("S1", 1, now=T1) is False  # already blocked
    assert e.block_slot("S1", 3, now=T1) is True
    rejected(book(e, "P2"), R.FULL)  # no FREE slot, although quota remains
    assert e.unblock_slot("S1", 1, now=T1 + 1) is True
    assert e.unblock_slot("S1", 1, now=T1 + 1) is False
    assert e.unblock_slot("S1", 2, now=T1 + 1) is False
    e._check_invariants()
    assert book(e, "P2", now=T1 + 2).slot == 1
    assert e.session_counts("S1") == (0, 0, 2, 0, 0, 0, 1, 0)


def test_session_closed_at_end(backend):
    e = make(backend)
    add(e, capacity=3)
    assert book(e, "P1", now=END - 1).status == St.BOOKED
    rejected(book(e, "P2", now=END), R.SESSION_CLOSED)
    assert e.session("S1").closed
    e2 = make(backend)
    add(e2)
    e2.advance(END + DAY)
    rejected(book(e2, "P1", now=END + DAY), R.SESSION_CLOSED)


# -- events, introspection, explain ------------------------------------------------

def test_advance_returns_events_with_string_ids(backend):
    e = make(backend)
    add(e, "心内科-上午", hospital="北京协和医院", department="心内科")
    r = e.book("账号一", "张三", "心内科-上午", now=T1, hold=True)
    assert r.status == St.HELD
    events = e.advance(T1 + HOLD)
    assert events == [ev(EK.HOLD_EXPIRED, T1 + HOLD, "心内科-上午", 0, "张三", -1, "账号一", slot=1)]
    (x,) = events
    assert type(x.kind) is EK and type(x.at) is int and type(x.session) is str
    assert type(x.patient) is str and type(x.booking) is int and type(x.detail) is int
    assert e.advance(T1 + HOLD) == []  # drained
    assert e.live_bookings("张三") == []


def test_session_info(backend):
    e = make(backend)
    add(e, capacity=4, quotas={"app": 3, "referral": 1}, tier="expert", slot_minutes=9)
    book(e, "P1")
    s = e.session("S1")
    assert (s.id, s.hospital, s.department, s.doctor, s.tier) == ("S1", "H1", "Cardiology", "Dr Li", "expert")
    assert (s.starts_at, s.ends_at, s.slot_minutes, s.capacity, s.fee) == (START, END, 9, 4, 6000)
    assert (s.cancel_cutoff_at, s.rollover_at) == (CUTOFF, ROLL)
    assert (s.rolled, s.suspended, s.closed) == (False, False, False)
    assert dict(s.quota_left) == {"app": 2, "window": 0, "kiosk": 0, "phone": 0, "referral": 1, "followup": 0}
    local_midnight = START - 8 * HOUR
    assert dict(s.release) == {
        "app": T0,
        "window": local_midnight - 7 * DAY + 510 * MINUTE,
        "kiosk": local_midnight - 7 * DAY + 510 * MINUTE,
        "phone": local_midnight - 7 * DAY + 510 * MINUTE,
        "referral": local_midnight - 28 * DAY + 510 * MINUTE,
        "followup": local_midnight - 14 * DAY + 510 * MINUTE,
    }
    assert e.session_counts("S1") == se.SlotCounts(3, 0, 1, 0, 0, 0, 0, 0)
    assert e.session_counts("S1").booked == 1


def test_booking_info_and_live_bookings(backend):
    e = make(backend, patient_limits=())
    add(e, "S1", quotas={"app": 2, "phone": 1}, release={"app": T0, "phone": T0})
    add(e, "S2", department="Neurology")
    add(e, "S3", department="Dermatology")
    book(e, "P1", "S1", "phone", account="A1")
    book(e, "P1", "S2", account="A1", now=T1 + 1, hold=True)
    book(e, "P1", "S3", account="A2", now=T1 + 2)
    b = e.booking(0)
    assert b == se.BookingInfo(0, "S1", 1, window(1), "P1", "A1", "phone", "phone", BS.BOOKED,
                               T1, T1, 0, R.NONE, None)
    assert [x.id for x in e.live_bookings("P1")] == [0, 1, 2]
    assert e.live_bookings("P1")[1].hold_until == T1 + 1 + HOLD
    cancel(e, 1, "A1", T1 + 3)
    assert [x.id for x in e.live_bookings("P1")] == [0, 2]
    assert e.booking(np.int64(2)).account == "A2"


def test_explain(backend):
    e = make(backend)
    add(e, capacity=1)
    r = book(e, "P1")
    text = e.explain(0)
    for part in ("booking 0", "'P1'", "'A-P1'", "'S1'", "slot 1", "BOOKED", "Dr Li", "6000 fen",
                 "2027-01-25 08:00:00+0800"):
        assert part in text, part
    assert e.explain(r).startswith("BOOKED\n") and "booking 0" in e.explain(r)
    full = book(e, "P2")
    text = e.explain(full)
    assert "REJECTED" in text and "FULL" in text and "allocate" in text
    e.suspend("S1", now=T1 + 1)
    assert "SESSION_SUSPENDED" in e.explain(book(e, "P3", now=T1 + 2))
    assert "ended because the session is suspended" in e.explain(0)
    c = e.cancel(0, account="A-P1", now=T1 + 3)
    assert "NOT_ACTIVE" in e.explain(c) and "lifecycle" in e.explain(c)


def test_explain_hold(backend):
    e = make(backend)
    add(e)
    book(e, "P1", hold=True)
    assert "as a hold until 2027-01-15 17:10:00+0800" in e.explain(0)
    r = e.confirm(0, account="A-P1", now=T1 + HOLD)
    assert "HOLD_EXPIRED" in e.explain(r) and "10 minutes" in e.explain(r)


# -- time forms, determinism, batch ------------------------------------------------

def _scenario(e: se.Engine, t=lambda ms: ms) -> list:
    """A mixed command script; ``t`` converts each int-ms time (e.g. to a datetime)."""
    out = []
    e.add_session("S1", hospital="H1", department="Cardiology", doctor="Dr Li",
                  starts_at=t(START), capacity=4, fee=6000, quotas={"app": 3, "window": 1},
                  release={"app": t(T0), "window": t(T0 + HOUR)}, now=t(T0))
    e.add_session("S2", hospital="H1", department="Neurology", doctor="Dr Wang", tier="expert",
                  starts_at=t(START + DAY), capacity=2, fee=10000, release={"app": t(T0)})
    out.append(e.book("A1", "P1", "S1", now=t(T1)).as_tuple())
    out.append(e.book("A1", "P2", "S1", "window", now=t(T1 + 1), hold=True).as_tuple())
    out.append(e.book("A2", "P3", "S1", "kiosk", now=t(T1 + 2)).as_tuple())
    out.append(e.book("A3", "P1", "S1", now=t(T1 + 3)).as_tuple())
    out.append(e.book("A3", "P4", "S2", now=t(T1 + 4)).as_tuple())
    out.append(e.confirm(1, account="A1", now=t(T1 + 5 * MINUTE)).as_tuple())
    out.append(e.cancel(0, account="A1", now=t(T1 + 6 * MINUTE)).as_tuple())
    out.append(e.book("A2", "P5", "S2", now=t(T1 + 7 * MINUTE), hold=True).as_tuple())
    out.append(e.add_capacity("S2", 2, now=t(T1 + 8 * MINUTE)))
    out.append(e.block_slot("S2", 4, now=t(T1 + 9 * MINUTE)))
    e.register_patient("P6", follow_up_at=["H1"], now=t(T1 + 10 * MINUTE))
    out.append(e.advance(t(ROLL)))
    out.append(e.book("A4", "P6", "S1", now=t(ROLL + 1)).as_tuple())
    out.append(e.check_in(1, now=t(START)).as_tuple())
    out.append(e.suspend("S2", now=t(START + 1)))
    out.append(e.advance(t(START + DAY + 5 * HOUR)))
    e._check_invariants()
    return out


def test_datetimes_and_int_ms_give_the_same_outcome(backend):
    e1, e2 = make(backend, seed=3), make(backend, seed=3)
    out1 = _scenario(e1)
    out2 = _scenario(e2, lambda ms: se.from_ms(ms, CST))
    assert out1 == out2
    assert e1.state_hash() == e2.state_hash()
    # any aware timezone names the same instant
    e3 = make(backend, seed=3)
    assert _scenario(e3, lambda ms: datetime.fromtimestamp(ms / 1000, timezone.utc)) == out1
    assert e3.state_hash() == e1.state_hash()
    assert se.to_ms(datetime(2027, 1, 25, 8, tzinfo=CST)) == START


def test_same_seed_and_commands_same_state_hash(backend):
    e1, e2, e3 = make(backend, seed=7), make(backend, seed=7), make(backend, seed=8)
    assert e1.state_hash() == e2.state_hash() != e3.state_hash()
    out = _scenario(e1)
    assert _scenario(e2) == out
    assert e1.state_hash() == e2.state_hash()
    assert e1.dump() == e2.dump()
    h = e1.state_hash()
    assert e1.state_hash() == h  # introspection changes nothing
    e1.session_counts("S1"), e1.session("S2"), e1.booking(0), e1.live_bookings("P1"), e1.explain(0)
    assert e1.state_hash() == h


def test_state_hash_equal_across_backends():
    core, ref = make("core", seed=11), make("reference", seed=11)
    assert core.state_hash() == ref.state_hash()
    assert _scenario(core) == _scenario(ref)
    assert core.dump() == ref.dump()
    assert core.state_hash() == ref.state_hash()


def _batch_setup(backend: str) -> se.Engine:
    e = make(backend, seed=5)
    add(e, "S1", capacity=3, quotas={"app": 2, "window": 1},
        release={"app": T0, "window": T0 + 2 * HOUR})
    add(e, "S2", capacity=2, department="Neurology", release={"app": T0 + 90 * MINUTE})
    add(e, "S3", capacity=1, department="Cardiology", start=START + 4 * HOUR)
    e.intern_accounts([f"A{i}" for i in range(6)])
    e.intern_patients([f"P{i}" for i in range(6)])
    return e


# (account, patient, session, channel, now)
_ROWS = [
    (0, 0, "S1", "window", T1),  # window not released: public quota
    (0, 0, "S1", "app", T1),  # duplicate session
    (1, 1, "S2", "app", T1),  # S2 not released
    (1, 1, "S1", "window", T1 + 1),  # public quota slot 2
    (2, 2, "S1", "window", T1 + 2),  # quota exhausted
    (0, 0, "S3", "app", T1 + 3),  # same department and day
    (2, 2, "S1", "window", T0 + 2 * HOUR),  # window open
    (3, 3, "S1", "app", T0 + 2 * HOUR),  # full
    (3, 3, "S2", "kiosk", T0 + 2 * HOUR),  # S2 open, kiosk draws public
    (4, 4, "S2", "app", T0 + 2 * HOUR + HOLD),  # after the first holds expire
    (5, 5, "S2", "app", T0 + 2 * HOUR + HOLD),
    (5, 0, "S2", "app", T0 + 2 * HOUR + HOLD + 1),
]


@pytest.mark.parametrize("hold", [False, True])
def test_book_many_matches_book_loop(backend, hold):
    e1, e2 = _batch_setup(backend), _batch_setup(backend)
    cols = list(zip(*_ROWS))
    out = e1.book_many(np.array(cols[0]), np.array(cols[1]), e1.session_ids(cols[2]),
                       e1.channel_ids(cols[3]), np.array(cols[4], dtype=np.int64), hold=hold)
    e1._check_invariants()
    assert (out.status.dtype, out.reason.dtype, out.slot.dtype, out.booking.dtype) == (
        np.int8, np.int16, np.int32, np.int64)
    loop = []
    for a, p, s, c, t in _ROWS:
        loop.append(e2.book(f"A{a}", f"P{p}", s, c, now=t, hold=hold).as_tuple())
        e2._check_invariants()
    batch = list(zip(out.status.tolist(), out.reason.tolist(), out.slot.tolist(), out.booking.tolist()))
    assert batch == loop
    assert e1.state_hash() == e2.state_hash()
    assert e1.events() == e2.events()
    # the script exercises what it says it does
    N, DS, NR, QE, DD, F = (R.NONE, R.DUPLICATE_SESSION, R.NOT_RELEASED, R.QUOTA_EXHAUSTED,
                            R.DUPLICATE_DEPARTMENT_DAY, R.FULL)
    if hold:  # the first holds have expired by T0+2h: slots come round again
        want = [(N, 1), (DS, 0), (NR, 0), (N, 2), (QE, 0), (DD, 0), (N, 1), (N, 2), (N, 1),
                (N, 1), (N, 2), (F, 0)]
    else:
        want = [(N, 1), (DS, 0), (NR, 0), (N, 2), (QE, 0), (DD, 0), (N, 3), (F, 0), (N, 1),
                (N, 2), (F, 0), (F, 0)]
    assert [(R(x[1]), x[2]) for x in loop] == want


def test_book_many_scalar_now_and_across_backends():
    outs, hashes = [], []
    for backend in ("core", "reference"):
        e = _batch_setup(backend)
        n = 4
        out = e.book_many(np.arange(n), np.arange(n), e.session_ids(["S1"] * n),
                          e.channel_ids(["app"] * n), T1)
        outs.append([a.tolist() for a in out])
        hashes.append(e.state_hash())
    assert outs[0] == outs[1]
    assert outs[0][2] == [1, 2, 0, 0]  # quota app=2, then QUOTA_EXHAUSTED
    assert outs[0][1] == [0, 0, int(R.QUOTA_EXHAUSTED), int(R.QUOTA_EXHAUSTED)]
    assert hashes[0] == hashes[1]


def test_book_many_empty_batch_and_numpy_ids(backend):
    e = _batch_setup(backend)
    h = e.state_hash()
    out = e.book_many([], [], [], [], T1)
    assert [len(a) for a in out] == [0] * 6
    assert (out.status.dtype, out.booking.dtype) == (np.int8, np.int64)
    assert e.state_hash() == h
    out = e.book_many([0], [0], e.session_ids(["S1"]), e.channel_ids([None]), T1)
    b = out.booking[0]  # a numpy int64 is a booking id everywhere
    assert e.booking(b).patient == "P0" and "booking 0" in e.explain(b)
    assert e.cancel(b, account="A0", now=T1 + 1).status == St.CANCELLED


def test_register_patient_interns_hospitals_in_a_fixed_order(backend):
    e = make(backend)
    add(e)
    e.register_patient("P1", follow_up_at={"H3", "H2", "H0"}, now=T1)
    assert e.dump()["names"]["hospitals"] == ["H1", "H0", "H2", "H3"]
    assert e.dump()["known"] == [(0, 1), (0, 2), (0, 3)]


def test_default_releases_referral_opens_before_public(backend):
    e = make(backend)
    # no explicit release: referral opens 28 days ahead, the public pool 7 days ahead (08:30)
    e.add_session("S1", hospital="H1", department="Cardiology", doctor="Dr Li", starts_at=START,
                  capacity=3, fee=6000, quotas={"app": 2, "referral": 1})
    app_release = START - 8 * HOUR - 7 * DAY + 510 * MINUTE
    assert e.session("S1").release["app"] == app_release
    r = book(e, "P1", "S1", "referral", now=T1)
    assert res(r) == (St.BOOKED, R.NONE, 1, 0) and e.booking(0).quota == "referral"
    rejected(book(e, "P2", "S1", "referral", now=T1), R.QUOTA_EXHAUSTED)
    rejected(book(e, "P2", now=T1), R.NOT_RELEASED)
    rejected(book(e, "P2", now=app_release - 1), R.NOT_RELEASED)
    assert res(book(e, "P2", now=app_release)) == (St.BOOKED, R.NONE, 2, 1)
    assert res(book(e, "P3", "S1", "referral", now=app_release)) == (St.BOOKED, R.NONE, 3, 2)
    assert e.booking(2).quota == "app"


def test_timers_due_together_run_in_push_order(backend):
    e = make(backend)
    add(e, capacity=3, quotas={"app": 1, "window": 2}, release={"app": T0, "window": T0})
    # the hold is pushed after the session's ROLLOVER timer and falls due at the same time
    book(e, "P1", "S1", "window", now=ROLL - HOLD, hold=True)
    assert e.advance(ROLL) == [
        ev(EK.QUOTA_ROLLED, ROLL, "S1", None, None, 1),  # the held slot's quota is not unclaimed
        ev(EK.HOLD_EXPIRED, ROLL, "S1", 0, "P1", -1, slot=1),
    ]
    e._check_invariants()
    assert quota(e) == {"app": 3}  # the expired hold's window quota went to the rolled pool


def test_suspend_and_no_show_go_in_slot_order(backend):
    e = make(backend, patient_limits=())
    for s in ("S1", "S2"):
        add(e, s, department=s)
        book(e, "P1", s)
        book(e, "P2", s)
    cancel(e, 0, "A-P1", T1 + 1)  # S1 slot 1 is free again ...
    assert book(e, "P3", "S1", now=T1 + 2).booking == 4  # ... and taken by a later booking
    cancel(e, 2, "A-P1", T1 + 3)
    assert book(e, "P3", "S2", now=T1 + 4).booking == 5
    assert e.suspend("S1", now=T1 + 5) == 2
    assert [(x.kind, x.booking) for x in e.events()] == [
        (EK.BOOKING_CANCELLED, 4), (EK.BOOKING_CANCELLED, 1), (EK.SESSION_SUSPENDED, None)]
    assert [(x.kind, x.booking, x.patient) for x in e.advance(END)] == [
        (EK.NO_SHOW, 5, "P3"), (EK.PATIENT_BANNED, 5, "P3"),
        (EK.NO_SHOW, 3, "P2"), (EK.PATIENT_BANNED, 3, "P2")]


def test_lifecycle_rejections_in_order(backend):
    e = make(backend)
    add(e)
    book(e, "P1", hold=True)
    rejected(book(e, "P1", now=T1 + 1), R.DUPLICATE_SESSION)  # a hold is live
    cancel(e, 0, "A-P1", T1 + 2)
    e.intern_accounts(["A-other"])
    # the owner check comes first, then the state
    assert res(e.cancel(0, account="A-other", now=T1 + 3)) == (St.REJECTED, R.NOT_OWNER, 1, 0)
    assert res(e.confirm(0, account="A-other", now=T1 + 3)) == (St.REJECTED, R.NOT_OWNER, 1, 0)
    assert res(e.confirm(0, account="A-P1", now=T1 + 3)) == (St.REJECTED, R.NOT_HELD, 1, 0)
    book(e, "P2", now=T1 + 4, hold=True)
    e.advance(T1 + 4 + HOLD)
    assert res(e.check_in(1, now=T1 + 4 + HOLD)) == (St.REJECTED, R.NOT_ACTIVE, 1, 1)
    assert res(e.confirm(1, account="A-other", now=T1 + 4 + HOLD)) == (St.REJECTED, R.NOT_OWNER, 1, 1)
    # a hold confirmed after the cut-off is a booking: no longer cancellable
    book(e, "P3", now=CUTOFF, hold=True)
    assert e.confirm(2, account="A-P3", now=CUTOFF + 1).status == St.BOOKED
    assert res(e.cancel(2, account="A-P3", now=CUTOFF + 2)) == (St.REJECTED, R.CANCEL_CUTOFF, 1, 2)


def test_arrived_and_no_show_bookings_count_towards_limits(backend):
    e = make(backend, patient_limits=((1, 40),))
    add(e, "S0", capacity=1)
    add(e, "S1", start=START + DAY, department="Neurology")
    add(e, "S2", start=FAR, department="Dermatology")
    book(e, "P1", "S0")
    e.check_in(0, now=START)
    rejected(book(e, "P1", "S1", now=START + 1), R.PATIENT_LIMIT)  # ARRIVED counts
    assert book(e, "P2", "S1", now=START + 2).status == St.BOOKED
    e.advance(START + DAY + 4 * HOUR)
    assert e.booking(1).state == BS.NO_SHOW
    e2_until = e.patient_banned_until("P2")
    assert e2_until == START + DAY + 4 * HOUR + 30 * DAY
    rejected(book(e, "P2", "S2", now=e2_until), R.PATIENT_LIMIT)  # NO_SHOW counts
    rejected(book(e, "P2", "S2", now=START + 2 + 40 * DAY - 1), R.PATIENT_LIMIT)
    assert book(e, "P2", "S2", now=START + 2 + 40 * DAY).status == St.BOOKED


@pytest.mark.parametrize("gap, n, ban", [(10 * DAY, 1, 30), (10 * DAY - 1, 2, 60)])
def test_strike_window_boundary(backend, gap, n, ban):
    e = make(backend, strike_window_days=10)
    add(e, "S0")
    add(e, "S1", start=START + gap)
    book(e, "P1", "S0")
    book(e, "P1", "S1")
    end1 = END + gap
    events = e.advance(end1)
    assert events[-1] == ev(EK.PATIENT_BANNED, end1, "S1", 1, "P1", n, slot=1)
    assert e.patient_banned_until("P1") == end1 + ban * DAY


def test_a_later_shorter_ban_does_not_shorten_the_current_one(backend):
    e = make(backend, cancel_strikes=1, ban_days=(60, 10))
    add(e, "S0")
    add(e, "S1", start=START + DAY)
    book(e, "P1", "S0")
    book(e, "P1", "S1")
    cancel(e, 1, "A-P1", T1 + 1)  # one cancellation is a strike under this policy
    assert e.events() == [ev(EK.PATIENT_BANNED, T1 + 1, "S1", 1, "P1", 1, slot=1)]
    assert e.advance(END)[-1] == ev(EK.PATIENT_BANNED, END, "S0", 0, "P1", 2, slot=1)
    assert pinfo(e, "P1") == (T1 + 1 + 60 * DAY, (T1 + 1, END), ())


def test_suspend_after_the_session_closed(backend):
    e = make(backend)
    add(e, capacity=3)
    book(e, "P1")
    e.advance(END)
    assert e.session("S1").closed
    assert e.suspend("S1", now=END + 1) == 0
    e._check_invariants()
    assert e.events() == [ev(EK.SESSION_SUSPENDED, END + 1, "S1", None, None, 0)]
    assert e.session_counts("S1") == (0, 0, 0, 0, 1, 2, 0, 0)
    assert e.booking(0).state == BS.NO_SHOW
    with pytest.raises(se.errors.InvalidState):
        e.add_capacity("S1", 1)


def test_suspended_session_never_closes(backend):
    e = make(backend)
    add(e)
    e.suspend("S1", now=T1)
    e.advance(END + DAY)
    info = e.session("S1")
    assert (info.suspended, info.closed, info.rolled) == (True, False, False)
    rejected(book(e, "P1", now=END + DAY), R.SESSION_SUSPENDED)
