"""Waitlist backfill (候补), re-release of freed slots and suspension moves (issue 4).

Behaviour tests through the public ``Engine`` facade, each run on both
backends (the ``backend`` fixture), with exact results, records and events
(docs/semantics.md, "Waitlist backfill and suspension moves").  Every engine
is wrapped so that ``_check_invariants()`` (which includes the waitlist
invariant: no FREE slot while an eligible request waits for it) runs after
every call.  Times are fixed int ms, never the wall clock.
"""
from __future__ import annotations

import random
from typing import Any

import pytest

import slotengine as se
from conftest import LEDGER_ONLY
from slotengine import BookingInfo, Event, SlotCounts, WaitlistInfo
from slotengine import BookingState as BS
from slotengine import EventKind as EK
from slotengine import Reason as R
from slotengine import RequestState as RS
from slotengine import Status as St
from slotengine.errors import UnknownRequest
from slotengine.times import DAY, HOUR, MINUTE, SECOND

T0 = 1_800_000_000_000  # 2027-01-15 16:00 in UTC+8
DAY0 = T0 // DAY * DAY  # a UTC midnight = 08:00 local
START = DAY0 + 10 * DAY  # 2027-01-25 08:00 local
END = START + 4 * HOUR  # Policy.session_minutes = 240
ROLL = START - DAY  # Policy.rollover_minutes = 1440
CUTOFF = START - 16 * HOUR  # 16:00 local the day before
T1 = T0 + HOUR  # after the test releases (T0)
HOLD = 10 * MINUTE
FAR = DAY0 + 300 * DAY  # a deadline nothing in these tests reaches
BAN = 30 * DAY  # the first strike's ban
SUS = R.SESSION_SUSPENDED
MASK = 2**64 - 1

TIMER_WL_EXPIRE, TIMER_RERELEASE, TIMER_WL_RECHECK, TIMER_NOSHOW_SCAN = 7, 8, 9, 10


# -- helpers -------------------------------------------------------------------


class Checked:
    """An Engine whose invariants are checked after every public call."""

    def __init__(self, engine: se.Engine) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.engine, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            out = attr(*args, **kwargs)
            self.engine._check_invariants()
            return out

        return call


def make(backend: str, seed: int = 0, **policy: object) -> Any:
    """An engine with fair release and the risk signals off, freed slots FREE at once."""
    pol = {**LEDGER_ONLY, "rerelease_seconds": (0, 0), **policy}
    e = Checked(se.Engine(policy=se.Policy(**pol), seed=seed, backend=backend))
    e.advance(T0)
    return e


def add(e: Any, name: str = "S1", *, capacity: int = 1, start: int = START,
        hospital: str = "H1", department: str = "Cardiology", doctor: str = "Dr Li",
        quotas: dict | None = None, release: dict | None = None, slot_minutes: int = 10) -> None:
    e.add_session(name, hospital=hospital, department=department, doctor=doctor,
                  starts_at=start, slot_minutes=slot_minutes, capacity=capacity, fee=6000,
                  quotas=quotas, release={"app": T0} if release is None else release)


def book(e: Any, patient: str, session: str = "S1", *, now: int = T1, hold: bool = False,
         channel: str | None = None) -> int:
    r = e.book("A-" + patient, patient, session, channel, now=now, hold=hold)
    assert r.status == (St.HELD if hold else St.BOOKED), r
    return r.booking


def join(e: Any, patient: str, sessions: list[str], *, now: int = T1, deadline: int = FAR,
         channel: str | None = None, priority: str | None = None, account: str | None = None):
    return e.join_waitlist(account or "A-" + patient, patient, sessions, deadline=deadline,
                           channel=channel, priority=priority, now=now)


def waiting(e: Any, patient: str, sessions: list[str], **kw: Any) -> int:
    r = join(e, patient, sessions, **kw)
    assert (r.status, r.reason) == (St.WAITLISTED, R.NONE), r
    assert (r.slot, r.booking, r.session) == (None, None, None)
    assert r.as_tuple() == (int(St.WAITLISTED), 0, 0, -1)
    return r.request


def refused(r: Any, reason: R, session: int | None = None) -> None:
    """A REJECTED join: no request; ``session`` the candidate concerned (dense id), else None.

    (The contract's "-1 when not about one" is the backend's internal value; a
    Result's ``session`` is "int or None", as the compiled Result exposes it.)
    """
    assert (r.status, r.reason, r.request) == (St.REJECTED, reason, None), r
    assert (r.slot, r.booking, r.session) == (None, None, session)


_AUTO = object()


def ev(kind: EK, at: int, session: str | None = None, booking: int | None = None,
       patient: str | None = None, detail: int = -1, *, slot: int | None = None,
       reason: R = R.NONE, account: object = _AUTO) -> Event:
    """An Event; one about a patient names the account "A-" + patient unless given."""
    if account is _AUTO:
        account = None if patient is None else "A-" + patient
    return Event(kind, at, session, booking, patient, account, detail, slot, reason)


def filled(at: int, session: str, booking: int, patient: str, request: int, slot: int) -> Event:
    return ev(EK.WAITLIST_FILLED, at, session, booking, patient, request, slot=slot)


def skipped(at: int, session: str, patient: str, request: int, reason: R) -> Event:
    return ev(EK.WAITLIST_SKIPPED, at, session, None, patient, request, reason=reason)


def window(slot: int, start: int = START, minutes: int = 10) -> tuple[int, int]:
    return (start + (slot - 1) * minutes * MINUTE, start + slot * minutes * MINUTE)


def counts(free=0, held=0, booked=0, arrived=0, no_show=0, cancelled=0, blocked=0,
           returning=0) -> SlotCounts:
    return SlotCounts(free, held, booked, arrived, no_show, cancelled, blocked, returning)


def timers(e: Any, kind: int) -> list[tuple[int, int]]:
    """Pending timers of one kind as (due, id)."""
    return [(due, ident) for due, _seq, k, ident in e.dump()["timers"] if k == kind]


def splitmix(seed: int, n: int) -> list[int]:
    """The first n outputs of the engine's generator (docs/semantics.md, Randomness)."""
    out, state = [], seed
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        out.append(z ^ (z >> 31))
    return out


def ban(e: Any, patient: str, *, start: int = T0 + 2 * HOUR) -> int:
    """Ban ``patient`` by a no-show in a short session "S-ban"; returns banned_until.

    Leaves the clock at the end of that session (start + 4 h).
    """
    add(e, "S-ban", start=start, department="Dermatology", doctor="Dr Ban", capacity=1)
    book(e, patient, "S-ban", now=e.now)
    e.advance(start + 4 * HOUR)
    assert e.patient_banned_until(patient) == start + 4 * HOUR + BAN
    return start + 4 * HOUR + BAN


# -- joining -------------------------------------------------------------------


def test_join_a_full_session_is_waitlisted(backend):
    e = make(backend)
    add(e, capacity=1)
    book(e, "P1")
    e.events()
    r = join(e, "P2", ["S1"], now=T1 + 5, deadline=START)
    assert (r.status, r.reason, r.request, r.slot, r.booking, r.session) == (
        St.WAITLISTED, R.NONE, 0, None, None, None)
    assert r.as_tuple() == (int(St.WAITLISTED), 0, 0, -1)
    assert e.waitlist(0) == WaitlistInfo(0, "A-P2", "P2", "app", "public", RS.OPEN, ("S1",),
                                         T1 + 5, START, T1 + 5, None, None, R.NONE)
    assert e.session_waitlist("S1") == [0]
    assert e.session_counts("S1") == counts(booked=1)
    assert e.events() == []  # a join tells nobody anything
    assert timers(e, TIMER_WL_EXPIRE) == [(START, 0)]
    assert len(e.dump()["requests"]) == 1
    with pytest.raises(UnknownRequest):
        e.waitlist(1)


def test_join_with_a_free_slot_left_is_refused(backend):
    e = make(backend)
    add(e, "S1", capacity=2)
    add(e, "S2", capacity=1, start=START + DAY)
    book(e, "P1")
    book(e, "P9", "S2")
    before = e.dump()["requests"]
    refused(join(e, "P2", ["S1"]), R.SLOTS_LEFT, 0)
    refused(join(e, "P2", ["S2", "S1"]), R.SLOTS_LEFT, 0)  # the candidate with room
    assert e.dump()["requests"] == before == []
    assert e.session_waitlist("S1") == [] and e.session_waitlist("S2") == []
    assert e.book("A-P2", "P2", "S1", now=T1).slot == 2  # book it instead
    assert waiting(e, "P3", ["S2", "S1"]) == 0


def test_slots_left_needs_a_quota_the_channel_may_draw_from_and_roll_over_fills(backend):
    e = make(backend)
    add(e, capacity=2, quotas={"app": 1, "referral": 1}, release={"app": T0, "referral": T0})
    book(e, "P1")  # the app quota is used up; slot 2 is FREE for referrals only
    refused(join(e, "P3", ["S1"], channel="referral"), R.SLOTS_LEFT, 0)
    r = waiting(e, "P2", ["S1"])  # an app request cannot draw slot 2: it may wait
    assert e.session_counts("S1") == counts(free=1, booked=1)
    e.events()
    # The roll-over moves the referral quota into the public pool: P2 gets slot 2.
    assert e.advance(ROLL) == [
        ev(EK.QUOTA_ROLLED, ROLL, "S1", None, None, 1),
        filled(ROLL, "S1", 1, "P2", r, 2),
    ]
    assert e.booking(1) == BookingInfo(1, "S1", 2, window(2), "P2", "A-P2", "app", "app",
                                       BS.BOOKED, ROLL, ROLL, 0, R.NONE, r)
    assert e.waitlist(r).state == RS.FILLED
    assert e.session_counts("S1") == counts(booked=2)


def test_a_request_waiting_for_a_release_is_filled_when_it_opens(backend):
    # S1's only slot is FREE but not yet released to the public pool: a referral
    # request (no referral quota) may wait; when the pool opens, the waitlist
    # invariant says the slot is the request's before anyone can book it.
    e = make(backend)
    add(e, capacity=1, start=START + 3 * DAY, release={"app": START})
    r = waiting(e, "P1", ["S1"], channel="referral")
    assert e.session_counts("S1") == counts(free=1)
    e.events()
    assert e.advance(START - 1) == []
    assert e.advance(START) == [filled(START, "S1", 0, "P1", r, 1)]
    assert e.book("A-P2", "P2", "S1", now=START).reason == R.FULL


def test_join_request_stage(backend):
    e = make(backend)
    add(e, "S-full", capacity=1)  # 0
    add(e, "S-late", capacity=1, start=START + DAY, release={"app": START})  # 1: not released
    add(e, "S-past", capacity=1, start=T0 - 5 * HOUR)  # 2: ended at T0 - 1 h
    add(e, "S-susp", capacity=1, start=START + 2 * DAY)  # 3
    book(e, "P1", "S-full")
    e.suspend("S-susp", now=T1)
    refused(join(e, "P2", ["S-susp"]), R.SESSION_SUSPENDED, 3)
    refused(join(e, "P2", ["S-past"]), R.SESSION_CLOSED, 2)
    refused(join(e, "P2", ["S-late"]), R.NOT_RELEASED, 1)
    # candidates are checked in the order given, each through the whole stage
    refused(join(e, "P2", ["S-full", "S-late", "S-susp"]), R.NOT_RELEASED, 1)
    refused(join(e, "P2", ["S-full", "S-susp", "S-late"]), R.SESSION_SUSPENDED, 3)
    # the request stage comes before the risk and eligibility stages
    e.block(patient="P1", until=FAR, now=T1)
    refused(join(e, "P1", ["S-full", "S-past"]), R.SESSION_CLOSED, 2)
    # a referral request sees its own (earlier) release
    assert waiting(e, "P3", ["S-late"], channel="referral") == 0
    assert e.waitlist(0).sessions == ("S-late",)


def test_join_risk_stage(backend):
    e = make(backend)
    add(e, capacity=1)
    book(e, "P1")
    e.block(account="A-P2", until=T1 + DAY, now=T1)
    e.block(patient="P3", until=T1 + DAY, now=T1)
    refused(join(e, "P2", ["S1"]), R.BLOCKED)
    refused(join(e, "P3", ["S1"]), R.BLOCKED)
    refused(join(e, "P1", ["S1"], account="A-P3"), R.DUPLICATE_SESSION, 0)
    refused(join(e, "P3", ["S1"], account="A-P1"), R.BLOCKED)  # before eligibility
    # flagged accounts and patients may join (fills skip them while flagged)
    e.flag(account="A-P4", until=T1 + DAY, now=T1)
    e.flag(patient="P5", until=T1 + DAY, now=T1)
    assert waiting(e, "P4", ["S1"]) == 0
    assert waiting(e, "P5", ["S1"]) == 1
    # a block ends by the clock
    assert waiting(e, "P2", ["S1"], now=T1 + DAY) == 2


def test_join_eligibility_stage(backend):
    e = make(backend, waitlist_per_patient=2)
    for i, name in enumerate(["S1", "S2", "S3", "S4"]):
        add(e, name, capacity=1, start=START + i * DAY)
        book(e, f"Q{i}", name)
    add(e, "S5", capacity=2, start=START + 4 * DAY)
    book(e, "P1", "S5")
    book(e, "Q5", "S5")
    refused(join(e, "P1", ["S1", "S5"]), R.DUPLICATE_SESSION, 4)
    r0 = waiting(e, "P1", ["S1"])
    refused(join(e, "P1", ["S2", "S1"]), R.DUPLICATE_WAITLIST, 0)
    r1 = waiting(e, "P1", ["S2", "S3"])
    refused(join(e, "P1", ["S3"]), R.DUPLICATE_WAITLIST, 2)
    refused(join(e, "P1", ["S4"]), R.WAITLIST_PATIENT_CAP)
    refused(join(e, "P1", ["S1"]), R.DUPLICATE_WAITLIST, 0)  # before the cap
    e.cancel(0, account="A-Q0", now=T1 + 1)  # P1 is filled at once
    assert e.waitlist(r0).state == RS.FILLED
    # P1 now holds S1: a duplicate, and one open request (r1) under the cap
    t = T1 + 1
    refused(join(e, "P1", ["S1"], now=t), R.DUPLICATE_SESSION, 0)
    r2 = waiting(e, "P1", ["S4"], now=t)
    refused(join(e, "P1", ["S4"], now=t), R.DUPLICATE_WAITLIST, 3)
    add(e, "S6", capacity=1, start=START + 6 * DAY)  # free: but eligibility comes first
    refused(join(e, "P1", ["S6"], now=t), R.WAITLIST_PATIENT_CAP)
    assert e.cancel_waitlist(r1, account="A-P1", now=t + 1).status == St.CANCELLED
    refused(join(e, "P1", ["S6"], now=t + 1), R.SLOTS_LEFT, 5)
    assert waiting(e, "P1", ["S2"], now=t + 1) == r2 + 1


def test_join_banned_patient(backend):
    e = make(backend)
    far = START + 60 * DAY
    add(e, capacity=1, start=far)
    book(e, "P1")
    until = ban(e, "P2")
    refused(join(e, "P2", ["S1"], now=e.now), R.PATIENT_BANNED)
    e.block(patient="P2", until=FAR, now=e.now)
    refused(join(e, "P2", ["S1"], now=e.now), R.BLOCKED)  # risk before eligibility
    e.unblock(patient="P2", now=until - 1)
    refused(join(e, "P2", ["S1"], now=until - 1), R.PATIENT_BANNED)
    assert waiting(e, "P2", ["S1"], now=until) == 0  # the ban is over


def test_join_allocate_stage_and_the_per_session_cap(backend):
    e = make(backend, waitlist_per_session=2)
    add(e, "S1", capacity=1)
    add(e, "S2", capacity=1, start=START + DAY)
    b = book(e, "P1", "S1")
    book(e, "P9", "S2")
    r0 = waiting(e, "P2", ["S1"])
    r1 = waiting(e, "P3", ["S1", "S2"])
    refused(join(e, "P4", ["S1"]), R.WAITLIST_FULL, 0)
    refused(join(e, "P4", ["S2", "S1"]), R.WAITLIST_FULL, 0)
    assert waiting(e, "P4", ["S2"]) == 2
    refused(join(e, "P5", ["S2"]), R.WAITLIST_FULL, 1)
    # a filled request no longer counts
    e.cancel(b, account="A-P1", now=T1 + 1)
    assert e.waitlist(r0).state == RS.FILLED
    assert waiting(e, "P5", ["S1"], now=T1 + 1) == 3
    # nor does a cancelled one
    assert e.cancel_waitlist(r1, account="A-P3", now=T1 + 2).status == St.CANCELLED
    assert e.session_waitlist("S2") == [2]
    assert waiting(e, "P6", ["S2"], now=T1 + 2) == 4


# -- filling -------------------------------------------------------------------


def test_cancel_fills_the_first_waiting_request_in_the_same_call(backend):
    e = make(backend)
    add(e, capacity=1)
    b0 = book(e, "P1")
    r = waiting(e, "P2", ["S1"], now=T1 + 1)
    waiting(e, "P3", ["S1"], now=T1 + 2)
    e.events()
    t = T1 + HOUR
    c = e.cancel(b0, account="A-P1", now=t)
    assert (c.status, c.reason, c.slot, c.booking, c.window) == (St.CANCELLED, R.NONE, 1, b0,
                                                                 window(1))
    assert e.events() == [filled(t, "S1", 1, "P2", r, 1)]
    # the slot was never FREE to the public in between
    assert e.session_counts("S1") == counts(booked=1)
    assert e.book("A-P9", "P9", "S1", now=t).reason == R.FULL
    info = e.booking(1)
    assert info == BookingInfo(1, "S1", 1, window(1), "P2", "A-P2", "app", "app", BS.BOOKED,
                               t, t, 0, R.NONE, r)
    assert e.booking(b0).request is None
    assert e.waitlist(r) == WaitlistInfo(r, "A-P2", "P2", "app", "public", RS.FILLED, ("S1",),
                                         T1 + 1, FAR, t, 1, "S1", R.NONE)
    assert e.session_waitlist("S1") == [1]
    assert [x.id for x in e.live_bookings("P2")] == [1]
    # a filled booking is an ordinary booking: P2 may cancel it, and P3 moves up
    e.cancel(1, account="A-P2", now=t + 1)
    assert e.events() == [filled(t + 1, "S1", 2, "P3", 1, 1)]
    assert e.waitlist(r).state == RS.FILLED and e.booking(1).state == BS.CANCELLED


def test_priority_classes_then_arrival_order(backend):
    e = make(backend)
    add(e, capacity=6)
    bs = [book(e, f"P{i}") for i in range(6)]
    t = T1 + 10
    rs = {
        "pub1": waiting(e, "Qa", ["S1"], now=t),  # app: public
        "fol": waiting(e, "Qb", ["S1"], now=t + 1, channel="followup"),  # followup class
        "ref-explicit": waiting(e, "Qc", ["S1"], now=t + 2, priority="referral"),
        "ref": waiting(e, "Qd", ["S1"], now=t + 3, channel="referral"),  # referral class
        "pub2": waiting(e, "Qe", ["S1"], now=t + 4, channel="phone"),  # other channels: public
        "fol-explicit": waiting(e, "Qf", ["S1"], now=t + 5, channel="referral",
                                priority="followup"),
    }
    prio = {k: e.waitlist(r).priority for k, r in rs.items()}
    assert prio == {"pub1": "public", "fol": "followup", "ref-explicit": "referral",
                    "ref": "referral", "pub2": "public", "fol-explicit": "followup"}
    order = ["ref-explicit", "ref", "fol", "fol-explicit", "pub1", "pub2"]
    assert e.session_waitlist("S1") == [rs[k] for k in order]
    e.events()
    got = []
    for i, b in enumerate(bs):
        e.cancel(b, account=f"A-P{i}", now=t + 10 + i)
        evs = e.events()
        assert [x.kind for x in evs] == [EK.WAITLIST_FILLED] and evs[0].slot == i + 1
        got.append(evs[0].detail)
    assert got == [rs[k] for k in order]
    assert e.session_waitlist("S1") == []
    # channels are kept: a referral request's booking is a referral booking
    ref = e.waitlist(rs["ref"])
    assert (e.booking(ref.booking).channel, e.booking(ref.booking).quota) == ("referral", "app")


def test_one_request_is_filled_once_and_leaves_its_other_queues(backend):
    e = make(backend)
    add(e, "S1", capacity=1)
    add(e, "S2", capacity=1, start=START + DAY)
    add(e, "S3", capacity=1, start=START + 2 * DAY)
    b1, b2, b3 = book(e, "P1", "S1"), book(e, "P2", "S2"), book(e, "P3", "S3")
    r0 = waiting(e, "P9", ["S1", "S2", "S3"])
    r1 = waiting(e, "P8", ["S2"])
    r2 = waiting(e, "P7", ["S3", "S1"])
    assert [e.session_waitlist(s) for s in ("S1", "S2", "S3")] == [[r0, r2], [r0, r1], [r0, r2]]
    e.events()
    e.cancel(b2, account="A-P2", now=T1 + 1)  # a slot in its second candidate
    assert e.events() == [filled(T1 + 1, "S2", 3, "P9", r0, 1)]
    assert e.waitlist(r0).session == "S2" and e.waitlist(r0).booking == 3
    assert [e.session_waitlist(s) for s in ("S1", "S2", "S3")] == [[r2], [r1], [r2]]
    e.cancel(b1, account="A-P1", now=T1 + 2)
    assert e.events() == [filled(T1 + 2, "S1", 4, "P7", r2, 1)]
    assert [e.session_waitlist(s) for s in ("S1", "S2", "S3")] == [[], [r1], []]
    e.cancel(b3, account="A-P3", now=T1 + 3)  # nobody waits for S3 any more
    assert e.events() == []
    assert e.session_counts("S3") == counts(free=1)
    assert [e.waitlist(r).state for r in (r0, r1, r2)] == [RS.FILLED, RS.OPEN, RS.FILLED]


def test_hold_expiry_fills(backend):
    e = make(backend)
    add(e, capacity=1)
    b0 = book(e, "P1", hold=True)
    r = waiting(e, "P2", ["S1"])
    e.events()
    assert e.advance(T1 + HOLD - 1) == []
    events = e.advance(T1 + HOLD)
    assert sorted(events) == sorted([
        ev(EK.HOLD_EXPIRED, T1 + HOLD, "S1", b0, "P1", -1, slot=1),
        filled(T1 + HOLD, "S1", 1, "P2", r, 1),
    ])
    assert events[0].kind == EK.HOLD_EXPIRED  # the expiry, then what it caused
    assert e.booking(b0).state == BS.EXPIRED
    assert e.booking(1).request == r and e.booking(1).created_at == T1 + HOLD


def test_add_capacity_fills_and_extra_slots_stay_free(backend):
    e = make(backend, rerelease_seconds=(30, 300))
    add(e, capacity=1)
    book(e, "P1")
    r0 = waiting(e, "P2", ["S1"])
    r1 = waiting(e, "P3", ["S1"])
    e.events()
    assert e.add_capacity("S1", 1, now=T1 + 1) == 2
    assert e.events() == [ev(EK.CAPACITY_ADDED, T1 + 1, "S1", None, None, 1),
                          filled(T1 + 1, "S1", 1, "P2", r0, 2)]
    assert e.add_capacity("S1", 3, now=T1 + 2) == 5
    assert e.events() == [ev(EK.CAPACITY_ADDED, T1 + 2, "S1", None, None, 3),
                          filled(T1 + 2, "S1", 2, "P3", r1, 3)]
    # added slots nobody waits for are open at once (only freed slots return late)
    assert e.session_counts("S1") == counts(free=2, booked=3)
    assert e.book("A-P4", "P4", "S1", now=T1 + 3).slot == 4


def test_unblock_fills(backend):
    e = make(backend)
    add(e, capacity=2)
    assert e.block_slot("S1", 2, now=T1) is True
    book(e, "P1")
    r = waiting(e, "P2", ["S1"])
    e.events()
    assert e.unblock_slot("S1", 2, now=T1 + 1) is True
    assert e.events() == [filled(T1 + 1, "S1", 1, "P2", r, 2)]
    assert e.session_counts("S1") == counts(booked=2)


# -- ineligible requests are skipped and keep their place ----------------------


@pytest.mark.parametrize("how", ["flag", "block"])
def test_flagged_or_blocked_request_is_skipped_then_filled_when_lifted(backend, how):
    e = make(backend)
    add(e, capacity=1)
    b0 = book(e, "P1")
    r0 = waiting(e, "P2", ["S1"], now=T1 + 1)
    r1 = waiting(e, "P3", ["S1"], now=T1 + 2)
    r2 = waiting(e, "P4", ["S1"], now=T1 + 3)
    getattr(e, how)(account="A-P2", until=FAR, now=T1 + 4)
    reason = R.FLAGGED if how == "flag" else R.BLOCKED
    e.events()
    e.cancel(b0, account="A-P1", now=T1 + 5)
    assert e.events() == [skipped(T1 + 5, "S1", "P2", r0, reason),
                          filled(T1 + 5, "S1", 1, "P3", r1, 1)]
    assert e.session_waitlist("S1") == [r0, r2]  # it keeps its place
    w = e.waitlist(r0)
    assert (w.state, w.skip_reason) == (RS.OPEN, reason)
    # skipped again for the same reason: no second event
    e.cancel(1, account="A-P3", now=T1 + 6)
    assert e.events() == [filled(T1 + 6, "S1", 2, "P4", r2, 1)]
    e.cancel(2, account="A-P4", now=T1 + 7)
    assert e.events() == []
    assert e.session_counts("S1") == counts(free=1)  # rerelease (0, 0): FREE at once
    # lifting the flag or block rechecks the account's requests: filled at once
    lift = "unflag" if how == "flag" else "unblock"
    assert getattr(e, lift)(account="A-P2", now=T1 + 8) is True
    events = e.events()
    assert events[-1] == filled(T1 + 8, "S1", 3, "P2", r0, 1)
    assert [x.kind for x in events[:-1]] == [EK.UNFLAGGED if how == "flag" else EK.UNBLOCKED]
    assert e.waitlist(r0).skip_reason == reason  # the last reason it was passed over


def test_flagged_patient_is_filled_when_the_flag_runs_out(backend):
    e = make(backend)
    add(e, capacity=1)
    b0 = book(e, "P1")
    r = waiting(e, "P2", ["S1"])
    until = T1 + 3 * HOUR
    e.flag(patient="P2", until=until, now=T1)
    e.events()
    e.cancel(b0, account="A-P1", now=T1 + 1)
    assert e.events() == [skipped(T1 + 1, "S1", "P2", r, R.FLAGGED)]
    assert timers(e, TIMER_WL_RECHECK) == [(until, 0)]
    assert e.advance(until - 1) == []
    assert e.advance(until) == [filled(until, "S1", 1, "P2", r, 1)]


def test_banned_patient_is_skipped_until_the_ban_ends(backend):
    e = make(backend)
    far = START + 60 * DAY
    add(e, "S1", capacity=1, start=far)
    b0 = book(e, "P1", "S1")
    r = waiting(e, "P2", ["S1"], deadline=far)
    until = ban(e, "P2")  # after joining
    e.events()
    t = e.now + 1
    e.cancel(b0, account="A-P1", now=t)
    assert e.events() == [skipped(t, "S1", "P2", r, R.PATIENT_BANNED)]
    assert e.session_waitlist("S1") == [r]
    assert timers(e, TIMER_WL_RECHECK) == [(until, 0)]
    assert e.advance(until - 1) == []
    assert e.advance(until) == [filled(until, "S1", 2, "P2", r, 1)]


def test_department_day_conflict_is_skipped_until_the_other_booking_is_cancelled(backend):
    e = make(backend)
    add(e, "S1", capacity=1, doctor="Dr Li")
    add(e, "S2", capacity=1, start=START + 5 * HOUR, doctor="Dr Wang")  # same department, same day
    b0 = book(e, "P1", "S1")
    b1 = book(e, "P2", "S2")  # P2 would rather see Dr Li
    r = waiting(e, "P2", ["S1"])
    e.events()
    e.cancel(b0, account="A-P1", now=T1 + 1)
    assert e.events() == [skipped(T1 + 1, "S1", "P2", r, R.DUPLICATE_DEPARTMENT_DAY)]
    assert timers(e, TIMER_WL_RECHECK) == []  # only an event can clear it
    assert e.session_counts("S1") == counts(free=1)
    # cancelling the other booking rechecks the patient: S1 is filled in the same call
    e.cancel(b1, account="A-P2", now=T1 + 2)
    assert e.events() == [filled(T1 + 2, "S1", 2, "P2", r, 1)]
    assert [x.session for x in e.live_bookings("P2")] == ["S1"]
    assert e.session_counts("S2") == counts(free=1)


def test_patient_limit_and_first_visit_skips(backend):
    e = make(backend, patient_limits=((1, 1),), bar_first_visit_expert=True)
    add(e, "S1", capacity=1)
    e.add_session("S2", hospital="H2", department="Eyes", doctor="Dr Expert", tier="expert",
                  starts_at=START + DAY, capacity=1, fee=9000, release={"app": T0})
    e.register_patient("P1", follow_up_at=["H2"], now=T1)
    b0 = book(e, "P1", "S1")
    b1 = book(e, "P1", "S2", now=T1 + DAY)  # one booking a day
    r0 = waiting(e, "P2", ["S1"], now=T1 + DAY)
    r1 = waiting(e, "P3", ["S2"], now=T1 + DAY)
    e.add_session("S3", hospital="H3", department="Skin", doctor="Dr X", starts_at=START,
                  capacity=1, fee=0, release={"app": T0})
    book(e, "P2", "S3", now=T1 + DAY + 1)  # P2's booking of the day
    e.events()
    t = T1 + DAY + 2
    e.cancel(b0, account="A-P1", now=t)
    e.cancel(b1, account="A-P1", now=t)
    assert e.events() == [skipped(t, "S1", "P2", r0, R.PATIENT_LIMIT),
                          skipped(t, "S2", "P3", r1, R.FIRST_VISIT_EXPERT)]
    # the limit row runs out a day after P2's booking: rechecked then
    assert timers(e, TIMER_WL_RECHECK) == [(T1 + 2 * DAY + 1, 0)]
    assert e.advance(T1 + 2 * DAY + 1) == [filled(T1 + 2 * DAY + 1, "S1", 3, "P2", r0, 1)]
    # becoming known at the hospital rechecks the patient
    e.register_patient("P3", follow_up_at=["H2"], now=T1 + 2 * DAY + 2)
    assert e.events() == [filled(T1 + 2 * DAY + 2, "S2", 4, "P3", r1, 1)]


def test_account_patient_limit_skip_clears_with_the_window(backend):
    e = make(backend, account_patients=1, account_window_days=1)
    add(e, "S1", capacity=1)
    add(e, "S2", capacity=1, start=START + DAY)
    assert e.book("fam", "P1", "S2", now=T1).status == St.BOOKED
    b = book(e, "P9")
    r = waiting(e, "P2", ["S1"], account="fam", now=T1 + 1)  # joins are not limited by it
    e.events()
    e.cancel(b, account="A-P9", now=T1 + 2)
    assert e.events() == [skipped(T1 + 2, "S1", "P2", r, R.ACCOUNT_PATIENT_LIMIT)._replace(
        account="fam")]
    assert timers(e, TIMER_WL_RECHECK) == [(T1 + DAY, 0)]
    assert e.advance(T1 + DAY) == [filled(T1 + DAY, "S1", 2, "P2", r, 1)._replace(account="fam")]


def test_quota_exhausted_skip_then_roll_over(backend):
    e = make(backend)
    add(e, capacity=1)
    book(e, "P1")
    r = waiting(e, "P2", ["S1"])
    e.events()
    # 加号 into the referral quota: an app request may not draw from it
    assert e.add_capacity("S1", 1, channel="referral", now=T1 + 1) == 2
    assert e.events() == [ev(EK.CAPACITY_ADDED, T1 + 1, "S1", None, None, 1),
                          skipped(T1 + 1, "S1", "P2", r, R.QUOTA_EXHAUSTED)]
    assert timers(e, TIMER_WL_RECHECK) == []  # both quotas released: only the roll-over helps
    assert e.session_counts("S1") == counts(free=1, booked=1)
    assert e.advance(ROLL) == [ev(EK.QUOTA_ROLLED, ROLL, "S1", None, None, 1),
                               filled(ROLL, "S1", 1, "P2", r, 2)]


def test_one_recheck_timer_per_session_at_the_earliest_clear_time(backend):
    e = make(backend)
    add(e, capacity=2)
    b0, b1 = book(e, "P1"), book(e, "P2")
    u1, u2 = T1 + 2 * HOUR, T1 + 5 * HOUR
    r0 = waiting(e, "Pa", ["S1"])
    r1 = waiting(e, "Pb", ["S1"])
    e.flag(patient="Pa", until=u2, now=T1)
    e.flag(patient="Pb", until=u1, now=T1)
    e.events()
    e.cancel(b0, account="A-P1", now=T1 + 1)
    assert e.events() == [skipped(T1 + 1, "S1", "Pa", r0, R.FLAGGED),
                          skipped(T1 + 1, "S1", "Pb", r1, R.FLAGGED)]
    assert timers(e, TIMER_WL_RECHECK) == [(u1, 0)]
    e.cancel(b1, account="A-P2", now=T1 + 2)
    assert e.events() == []
    assert timers(e, TIMER_WL_RECHECK) == [(u1, 0)]  # one pending, at the earliest
    assert e.advance(u1) == [filled(u1, "S1", 2, "Pb", r1, 1)]
    assert timers(e, TIMER_WL_RECHECK) == [(u2, 0)]  # Pa is still waiting for a free slot
    assert e.dump()["sessions"][0]["recheck_at"] == u2
    assert e.advance(u2) == [filled(u2, "S1", 3, "Pa", r0, 2)]
    assert e.dump()["sessions"][0]["recheck_at"] == -1


def test_check_in_elsewhere_rechecks_the_patient(backend):
    e = make(backend)
    add(e, "S2", capacity=1)  # morning
    add(e, "S1", capacity=1, start=START + 5 * HOUR, doctor="Dr Wang")  # afternoon, same department
    b2 = book(e, "P2", "S2")
    b1 = book(e, "P1", "S1")
    r = waiting(e, "P2", ["S1"])
    e.cancel(b1, account="A-P1", now=T1 + 1)
    assert e.waitlist(r).skip_reason == R.DUPLICATE_DEPARTMENT_DAY
    e.events()
    e.check_in(b2, now=START)  # no longer a live booking that day
    assert e.events() == [filled(START, "S1", 2, "P2", r, 1)]


def test_a_fill_runs_the_many_patients_signal_but_not_the_rebook_signal(backend):
    e = make(backend, patients_flag=(2, 30), rebook_seconds=10)
    add(e, "S1", capacity=1)
    add(e, "S2", capacity=1, start=START + DAY)
    assert e.book("fam", "P1", "S2", now=T1).status == St.BOOKED
    b = e.book("seller", "Px", "S1", now=T1).booking
    r = waiting(e, "P2", ["S1"], account="fam", now=T1 + 1)
    e.events()
    e.cancel(b, account="seller", now=T1 + 2)  # and the fill for fam right after it
    events = e.events()
    assert events[0] == filled(T1 + 2, "S1", 2, "P2", r, 1)._replace(account="fam")
    assert [(x.kind, x.account, x.detail) for x in events[1:]] == [
        (EK.FLAGGED, "fam", se.FlagReason.MANY_PATIENTS)]
    assert e.risk(account="seller").flag_reason is None
    # the seller's cancel is still the session's last one: a public re-book within 10 s flags
    e.add_capacity("S1", 1, now=T1 + 3)
    assert e.book("buyer", "Py", "S1", now=T1 + 4).status == St.BOOKED
    assert e.risk(account="seller").flag_reason == se.FlagReason.CANCEL_REBOOK
    assert e.risk(account="buyer").flag_reason == se.FlagReason.CANCEL_REBOOK


def test_events_array_has_slot_and_reason_columns(backend):
    e = make(backend)
    add(e, capacity=1)
    b = book(e, "P1")
    r = waiting(e, "P2", ["S1"])
    e.flag(account="A-P2", until=T1 + HOUR, now=T1)
    e.events()
    e.cancel(b, account="A-P1", now=T1 + 1)
    e.advance(T1 + HOUR, drain=False)
    arr = e.events_array()
    assert [int(k) for k in arr["kind"]] == [EK.WAITLIST_SKIPPED, EK.WAITLIST_FILLED]
    assert arr["slot"].tolist() == [0, 1] and arr["reason"].tolist() == [int(R.FLAGGED), 0]
    assert arr["detail"].tolist() == [r, r] and arr["booking"].tolist() == [-1, 1]
    assert arr["slot"].dtype.itemsize == 4 and arr["reason"].dtype.itemsize == 2


# -- re-release of freed slots nobody could take --------------------------------


def test_a_freed_slot_nobody_waits_for_returns_after_a_random_delay(backend):
    seed = 12345
    e = make(backend, seed=seed, rerelease_seconds=(30, 300))
    add(e, capacity=2)
    b0 = book(e, "P1")
    book(e, "P2")
    e.events()
    t = T1 + 1
    e.cancel(b0, account="A-P1", now=t)
    assert e.events() == []
    assert e.session_counts("S1") == counts(booked=1, returning=1)
    delay = 30 * SECOND + splitmix(seed, 1)[0] % (270 * SECOND + 1)
    due = t + delay
    assert timers(e, TIMER_RERELEASE) == [(due, 0)]
    assert e.session_counts("S1").returning == 1
    # hidden from open booking: a cancel-then-rebook hand-off cannot work
    assert e.book("A-P3", "P3", "S1", now=t).reason == R.FULL
    assert e.book("A-P3", "P3", "S1", now=due - 1).reason == R.FULL
    assert e.block_slot("S1", 1, now=due - 1) is False  # block leaves it alone
    assert e.advance(due - 1) == []
    assert e.advance(due) == [ev(EK.SLOT_RERELEASED, due, "S1", None, None, -1, slot=1)]
    assert e.session_counts("S1") == counts(free=1, booked=1)
    r = e.book("A-P3", "P3", "S1", now=due)
    assert (r.status, r.slot) == (St.BOOKED, 1)


def test_rerelease_zero_frees_at_once_and_equal_bounds_draw_nothing(backend):
    e = make(backend, seed=5, rerelease_seconds=(0, 0))
    add(e, capacity=1)
    b0 = book(e, "P1")
    e.cancel(b0, account="A-P1", now=T1 + 1)
    assert e.session_counts("S1") == counts(free=1)
    assert timers(e, TIMER_RERELEASE) == []
    assert e.book("A-P2", "P2", "S1", now=T1 + 1).slot == 1

    f = make(backend, seed=5, rerelease_seconds=(60, 60))
    add(f, capacity=1)
    b0 = book(f, "P1")
    f.cancel(b0, account="A-P1", now=T1 + 1)
    assert f.dump()["rng"] == 5  # min == max: no draw
    assert timers(f, TIMER_RERELEASE) == [(T1 + 1 + 60 * SECOND, 0)]
    assert f.session_counts("S1") == counts(returning=1)


def test_a_request_that_joins_while_a_slot_is_returning_gets_it_at_the_rerelease(backend):
    e = make(backend, rerelease_seconds=(30, 30))
    add(e, capacity=1)
    b0 = book(e, "P1")
    e.cancel(b0, account="A-P1", now=T1)
    r = waiting(e, "P2", ["S1"], now=T1 + 1)  # RETURNING is not a free slot
    e.events()
    due = T1 + 30 * SECOND
    assert e.advance(due) == [ev(EK.SLOT_RERELEASED, due, "S1", None, None, -1, slot=1),
                              filled(due, "S1", 1, "P2", r, 1)]
    assert e.session_counts("S1") == counts(booked=1)


def test_a_slot_only_ineligible_requests_wait_for_returns_late(backend):
    e = make(backend, rerelease_seconds=(40, 40))
    add(e, "S1", capacity=1, doctor="Dr Li")
    add(e, "S2", capacity=1, start=START + 5 * HOUR, doctor="Dr Wang")
    b0 = book(e, "P1", "S1")
    b1 = book(e, "P2", "S2")
    r = waiting(e, "P2", ["S1"])
    e.events()
    e.cancel(b0, account="A-P1", now=T1 + 1)
    assert e.events() == [skipped(T1 + 1, "S1", "P2", r, R.DUPLICATE_DEPARTMENT_DAY)]
    assert e.session_counts("S1") == counts(returning=1)
    # P2 frees S2's slot: that one is RETURNING too; S1's slot is not FREE, so no fill yet
    e.cancel(b1, account="A-P2", now=T1 + 2)
    assert e.events() == []
    assert e.session_counts("S2") == counts(returning=1)
    due = T1 + 1 + 40 * SECOND
    assert e.advance(due) == [ev(EK.SLOT_RERELEASED, due, "S1", None, None, -1, slot=1),
                              filled(due, "S1", 2, "P2", r, 1)]
    assert e.advance(due + 1) == [ev(EK.SLOT_RERELEASED, due + 1, "S2", None, None, -1, slot=1)]


# -- deadline, withdrawal ------------------------------------------------------


def test_an_unfilled_request_expires_at_its_deadline(backend):
    e = make(backend)
    add(e, capacity=1)
    b0 = book(e, "P1")
    r = waiting(e, "P2", ["S1"], deadline=T1 + DAY)
    e.events()
    assert e.advance(T1 + DAY - 1) == []
    assert e.advance(T1 + DAY) == [ev(EK.WAITLIST_EXPIRED, T1 + DAY, None, None, "P2", r)]
    assert e.waitlist(r) == WaitlistInfo(r, "A-P2", "P2", "app", "public", RS.EXPIRED, ("S1",),
                                         T1, T1 + DAY, T1 + DAY, None, None, R.NONE)
    assert e.session_waitlist("S1") == []
    e.cancel(b0, account="A-P1", now=T1 + DAY + 1)
    assert e.events() == []
    assert e.session_counts("S1") == counts(free=1)
    c = e.cancel_waitlist(r, account="A-P2", now=T1 + DAY + 2)
    assert (c.status, c.reason) == (St.REJECTED, R.NOT_ACTIVE)
    # the expiry timer of a filled request is stale
    b = book(e, "P3", now=T1 + DAY + 3)
    r2 = waiting(e, "P4", ["S1"], now=T1 + DAY + 3, deadline=T1 + 2 * DAY)
    e.cancel(b, account="A-P3", now=T1 + DAY + 4)
    e.events()
    assert e.advance(T1 + 2 * DAY) == []
    assert e.waitlist(r2).state == RS.FILLED


def test_a_request_due_to_expire_at_the_cancel_is_expired_first(backend):
    e = make(backend)
    add(e, capacity=1)
    b = book(e, "P1")
    r0 = waiting(e, "P2", ["S1"], deadline=T1 + HOUR)
    r1 = waiting(e, "P3", ["S1"], deadline=T1 + 2 * HOUR)
    e.events()
    e.cancel(b, account="A-P1", now=T1 + HOUR)  # timers run before the command acts
    assert e.events() == [ev(EK.WAITLIST_EXPIRED, T1 + HOUR, None, None, "P2", r0),
                          filled(T1 + HOUR, "S1", 1, "P3", r1, 1)]


def test_a_hold_expiring_at_the_session_end_only_frees(backend):
    e = make(backend, rerelease_seconds=(30, 300))
    add(e, capacity=1)
    b = book(e, "P1", hold=True, now=END - 5 * MINUTE)
    r = waiting(e, "P2", ["S1"], now=END - 4 * MINUTE)
    e.events()
    assert e.advance(END) == [ev(EK.HOLD_EXPIRED, END, "S1", b, "P1", -1, slot=1)]
    assert e.session_counts("S1") == counts(free=1)
    assert timers(e, TIMER_RERELEASE) == []
    assert e.waitlist(r).state == RS.OPEN  # until its deadline
    refused(join(e, "P3", ["S1"], now=END), R.SESSION_CLOSED, 0)


def test_custom_priority_classes(backend):
    e = make(backend, waitlist_classes=("vip", "all"), waitlist_class_of_channel={"phone": "vip"})
    add(e, capacity=1)
    b = book(e, "P1")
    r0 = waiting(e, "P2", ["S1"])
    r1 = waiting(e, "P3", ["S1"], channel="phone")
    r2 = waiting(e, "P4", ["S1"], priority="vip", channel="referral")
    assert [e.waitlist(r).priority for r in (r0, r1, r2)] == ["all", "vip", "vip"]
    assert e.session_waitlist("S1") == [r1, r2, r0]
    with pytest.raises(se.errors.InvalidArgument):
        join(e, "P5", ["S1"], priority="public")
    e.cancel(b, account="A-P1", now=T1 + 1)
    assert e.waitlist(r1).state == RS.FILLED


def test_cancel_waitlist(backend):
    e = make(backend)
    add(e, capacity=1)
    b0 = book(e, "P1")
    r0 = waiting(e, "P2", ["S1"])
    r1 = waiting(e, "P3", ["S1"])
    c = e.cancel_waitlist(r0, account="A-P3", now=T1 + 1)
    assert (c.status, c.reason) == (St.REJECTED, R.NOT_OWNER)
    assert e.waitlist(r0).state == RS.OPEN
    c = e.cancel_waitlist(r0, account="A-P2", now=T1 + 2)
    assert (c.status, c.reason, c.request, c.booking, c.slot) == (St.CANCELLED, R.NONE, r0,
                                                                  None, None)
    assert e.waitlist(r0) == WaitlistInfo(r0, "A-P2", "P2", "app", "public", RS.CANCELLED,
                                          ("S1",), T1, FAR, T1 + 2, None, None, R.NONE)
    assert e.session_waitlist("S1") == [r1]
    c = e.cancel_waitlist(r0, account="A-P2", now=T1 + 3)
    assert (c.status, c.reason) == (St.REJECTED, R.NOT_ACTIVE)
    assert e.events() == []
    e.cancel(b0, account="A-P1", now=T1 + 4)
    assert e.events() == [filled(T1 + 4, "S1", 1, "P3", r1, 1)]
    c = e.cancel_waitlist(r1, account="A-P3", now=T1 + 5)  # filled: too late
    assert (c.status, c.reason) == (St.REJECTED, R.NOT_ACTIVE)
    assert e.booking(1).state == BS.BOOKED


# -- suspension ----------------------------------------------------------------


def _suspension_world(backend: str, **policy: object) -> Any:
    """S1 (Dr Li, Cardiology, H1) with six bookings; the other sessions it might move to."""
    e = make(backend, waitlist_candidates=4, **policy)
    add(e, "S1", capacity=6)  # 0
    add(e, "S2", start=START + 7 * DAY, release={"app": START + 6 * DAY})  # 1 same doctor, far, not released
    add(e, "S3", start=START + DAY, doctor="Dr Wang")  # 2 same department
    add(e, "S4", start=START + 2 * DAY)  # 3 same doctor, near
    add(e, "S5", start=START, department="Neurology", doctor="Dr Zhao", capacity=5)  # 4
    add(e, "S6", start=START + HOUR, hospital="H2", capacity=5)  # 5 Dr Li at another hospital
    add(e, "S7", start=START - 2 * DAY)  # 6 same doctor, as near as S4
    for i in range(1, 7):
        book(e, f"P{i}", hold=(i == 2))
    e.events()
    return e


def test_suspend_moves_to_the_nearest_session_of_the_same_doctor_else_department(backend):
    e = _suspension_world(backend, on_suspend="move")
    t = T1 + 10
    assert e.suspend("S1", now=t) == 6
    s2_end = START + 7 * DAY + 4 * HOUR
    assert e.events() == [
        ev(EK.BOOKING_MOVED, t, "S4", 6, "P1", 0, slot=1),  # S4 and S7 tie: lower id
        ev(EK.BOOKING_CANCELLED, t, "S1", 1, "P2", int(SUS), slot=2, reason=SUS),  # a hold
        ev(EK.BOOKING_MOVED, t, "S7", 7, "P3", 2, slot=1),
        ev(EK.BOOKING_MOVED, t, "S2", 8, "P4", 3, slot=1),  # moves ignore release times
        ev(EK.BOOKING_MOVED, t, "S3", 9, "P5", 4, slot=1),  # no doctor's session left
        ev(EK.BOOKING_WAITLISTED, t, "S1", 5, "P6", 0, slot=6),
        ev(EK.SESSION_SUSPENDED, t, "S1", None, None, 6),
    ]
    moved = e.booking(6)
    assert moved == BookingInfo(6, "S4", 1, window(1, START + 2 * DAY), "P1", "A-P1", "app",
                                "app", BS.BOOKED, t, t, 0, R.NONE, None)
    assert [x.id for x in e.live_bookings("P1")] == [6]
    old = e.booking(0)
    assert (old.state, old.end_reason, old.changed_at) == (BS.CANCELLED, SUS, t)
    assert e.waitlist(0) == WaitlistInfo(0, "A-P6", "P6", "app", "moved", RS.OPEN,
                                         ("S4", "S7", "S2", "S3"), t, s2_end, t, None, None,
                                         R.NONE)
    assert e.session_counts("S1") == counts(cancelled=6)
    assert e.session("S1").suspended and e.session("S1").quota_left["app"] == 0
    for s in ("S5", "S6"):
        assert e.session_counts(s) == counts(free=5)
    # the moved patient is live in the target: cancelling it there frees the slot for P6
    e.cancel(6, account="A-P1", now=t + 1)
    assert e.events() == [filled(t + 1, "S4", 10, "P6", 0, 1)]


def test_suspend_move_skips_sessions_the_patient_is_already_booked_in(backend):
    e = make(backend, on_suspend="move")
    add(e, "S1", capacity=1)
    add(e, "S4", capacity=2, start=START + 2 * DAY)
    add(e, "S2", capacity=1, start=START + 7 * DAY)
    book(e, "P1")
    book(e, "P1", "S4")
    e.events()
    assert e.suspend("S1", now=T1 + 1) == 1
    assert e.events() == [ev(EK.BOOKING_MOVED, T1 + 1, "S2", 2, "P1", 0, slot=1),
                          ev(EK.SESSION_SUSPENDED, T1 + 1, "S1", None, None, 1)]


def test_suspend_move_with_nowhere_to_go_cancels(backend):
    e = make(backend, on_suspend="move")
    add(e, "S1", capacity=2)
    add(e, "S5", department="Neurology", doctor="Dr Zhao", capacity=5)
    book(e, "P1")
    e.events()
    assert e.suspend("S1", now=T1 + 1) == 1
    assert e.events() == [
        ev(EK.BOOKING_CANCELLED, T1 + 1, "S1", 0, "P1", int(SUS), slot=1, reason=SUS),
        ev(EK.SESSION_SUSPENDED, T1 + 1, "S1", None, None, 1),
    ]
    assert e.dump()["requests"] == []


def test_suspend_to_waitlist_ranks_moved_patients_ahead_of_every_class(backend):
    e = make(backend, on_suspend="waitlist", waitlist_per_session=1, waitlist_per_patient=1)
    add(e, "S1", capacity=2)
    add(e, "S2", capacity=1, start=START + DAY)
    add(e, "S3", capacity=1, start=START + 2 * DAY, department="Neurology", doctor="Dr Zhao")
    b1 = book(e, "P1")
    b2 = book(e, "P2")
    book(e, "P7", "S2")
    book(e, "P8", "S3")
    r0 = waiting(e, "P9", ["S2"], priority="referral")  # S2's cap is reached
    r1 = waiting(e, "P1", ["S3"])  # P1's cap is reached
    e.events()
    t = T1 + 10
    assert e.suspend("S1", now=t) == 2
    s2_end = START + DAY + 4 * HOUR
    assert e.events() == [
        ev(EK.BOOKING_WAITLISTED, t, "S1", b1, "P1", 2, slot=1),
        ev(EK.BOOKING_WAITLISTED, t, "S1", b2, "P2", 3, slot=2),
        ev(EK.SESSION_SUSPENDED, t, "S1", None, None, 2),
    ]
    # exempt from both caps, and ahead of the referral request that joined first
    assert e.session_waitlist("S2") == [2, 3, r0]
    w = e.waitlist(2)
    assert (w.priority, w.channel, w.account, w.sessions, w.deadline) == (
        "moved", "app", "A-P1", ("S2",), s2_end)
    assert e.waitlist(r1).state == RS.OPEN
    # they count for later joins' caps
    refused(join(e, "P2", ["S3"], now=t + 1), R.WAITLIST_PATIENT_CAP)
    add(e, "S8", capacity=1, start=START + DAY + HOUR)
    book(e, "P10", "S8", now=t + 1)
    refused(join(e, "P11", ["S2", "S8"], now=t + 1), R.WAITLIST_FULL, 1)
    e.cancel(2, account="A-P7", now=t + 2)
    assert e.events() == [filled(t + 2, "S2", 5, "P1", 2, 1)]
    assert "moved here when its session was suspended" in e.explain(request=3)


def test_suspend_to_waitlist_with_room_is_filled_in_the_same_call(backend):
    e = make(backend, on_suspend="waitlist")
    add(e, "S1", capacity=1)
    add(e, "S2", capacity=1, start=START + DAY)
    b = book(e, "P1")
    e.events()
    t = T1 + 1
    assert e.suspend("S1", now=t) == 1
    assert e.events() == [
        ev(EK.BOOKING_WAITLISTED, t, "S1", b, "P1", 0, slot=1),
        ev(EK.SESSION_SUSPENDED, t, "S1", None, None, 1),
        filled(t, "S2", 1, "P1", 0, 1),
    ]
    assert [x.session for x in e.live_bookings("P1")] == ["S2"]


def test_suspend_cancel_cancels_everyone(backend):
    e = make(backend, on_suspend="cancel", rerelease_seconds=(30, 30))
    add(e, "S1", capacity=3)
    add(e, "S2", capacity=1, start=START + DAY)
    b0, b1, b2 = book(e, "P1"), book(e, "P2", hold=True), book(e, "P3")
    book(e, "P8", "S2")
    e.cancel(b2, account="A-P3", now=T1 + 1)  # slot 3 RETURNING
    r = waiting(e, "P9", ["S1", "S2"], now=T1 + 1)
    e.events()
    t = T1 + 2
    assert e.suspend("S1", now=t) == 2
    assert e.events() == [
        ev(EK.BOOKING_CANCELLED, t, "S1", b0, "P1", int(SUS), slot=1, reason=SUS),
        ev(EK.BOOKING_CANCELLED, t, "S1", b1, "P2", int(SUS), slot=2, reason=SUS),
        ev(EK.SESSION_SUSPENDED, t, "S1", None, None, 2),
    ]
    assert e.session_counts("S1") == counts(cancelled=3)
    assert e.session_counts("S2") == counts(booked=1)
    assert timers(e, TIMER_RERELEASE) == [(T1 + 1 + 30 * SECOND, 0)]
    assert e.advance(T1 + HOUR) == []  # the return record is stale
    # requests listing a suspended session stay open for their other candidates
    assert e.waitlist(r).state == RS.OPEN
    assert e.suspend("S1", now=T1 + HOUR) == 0


def test_suspend_leaves_requests_open_for_their_other_candidates(backend):
    e = make(backend, on_suspend="cancel")
    add(e, "S1", capacity=1)
    add(e, "S2", capacity=1, start=START + DAY)
    book(e, "P1")
    b = book(e, "P2", "S2")
    r = waiting(e, "P9", ["S1", "S2"])
    e.suspend("S1", now=T1 + 1)
    assert e.waitlist(r).state == RS.OPEN
    e.events()
    e.cancel(b, account="A-P2", now=T1 + 2)
    assert e.events() == [filled(T1 + 2, "S2", 2, "P9", r, 1)]


# -- no-show grace release -------------------------------------------------------


def test_a_patient_not_checked_in_by_the_grace_time_loses_the_slot(backend):
    e = make(backend, noshow_release_minutes=15)
    add(e, capacity=2)
    b0, b1 = book(e, "P1"), book(e, "P2")
    r = waiting(e, "P3", ["S1"])
    assert timers(e, TIMER_NOSHOW_SCAN) == [(START + 15 * MINUTE, 0)]
    e.check_in(b0, now=START + 5 * MINUTE)
    e.events()
    assert e.advance(START + 15 * MINUTE) == []  # slot 1 arrived
    at = START + 25 * MINUTE  # slot 2's window opens at +10 min
    assert e.advance(at - 1) == []
    assert e.advance(at) == [
        ev(EK.NO_SHOW, at, "S1", b1, "P2", -1, slot=2, reason=R.SLOT_RELEASED),
        ev(EK.PATIENT_BANNED, at, "S1", b1, "P2", 1, slot=2),
        filled(at, "S1", 2, "P3", r, 2),
    ]
    info = e.booking(b1)
    assert (info.state, info.end_reason, info.slot, info.changed_at) == (
        BS.NO_SHOW, R.SLOT_RELEASED, 2, at)
    assert e.patient_banned_until("P2") == at + BAN
    assert e.session_counts("S1") == counts(booked=1, arrived=1)
    assert e.live_bookings("P2") == []
    assert "not arrived by the grace time" in e.explain(b1)
    assert timers(e, TIMER_NOSHOW_SCAN) == []  # no slot left to scan


def test_session_end_rechecks_the_no_show_patients_after_closing_the_session(backend):
    # "Passes run inside the command or timer ..., after that command's own bookkeeping
    # (strikes, ...)": the SESSION_END timer marks every no-show (with its strike) first,
    # then rechecks their patients in slot order, as suspend does.
    e = make(backend, bar_first_visit_expert=True)
    add(e, "S1", capacity=2)
    e.add_session("S9", hospital="H1", department="Cardiology", doctor="Dr Li", tier="expert",
                  starts_at=START + 2 * DAY, capacity=1, fee=9000, release={"app": T0})
    e.register_patient("Q", follow_up_at=["H1"], now=T1)
    b1, b2 = book(e, "P1"), book(e, "P2")
    q = book(e, "Q", "S9")
    r = waiting(e, "P1", ["S9"])
    e.cancel(q, account="A-Q", now=T1 + 1)
    assert e.waitlist(r).skip_reason == R.FIRST_VISIT_EXPERT
    e.events()
    assert e.advance(END) == [
        ev(EK.NO_SHOW, END, "S1", b1, "P1", -1, slot=1),
        ev(EK.PATIENT_BANNED, END, "S1", b1, "P1", 1, slot=1),
        ev(EK.NO_SHOW, END, "S1", b2, "P2", -1, slot=2),
        ev(EK.PATIENT_BANNED, END, "S1", b2, "P2", 1, slot=2),
        skipped(END, "S9", "P1", r, R.PATIENT_BANNED),
    ]


def test_grace_scan_continues_over_added_slots(backend):
    e = make(backend, noshow_release_minutes=15)
    add(e, capacity=1)
    b0 = book(e, "P1")
    e.check_in(b0, now=START)
    e.advance(START + 15 * MINUTE)  # the scan ran out of slots, not of time
    assert timers(e, TIMER_NOSHOW_SCAN) == []
    e.add_capacity("S1", 1, now=START + 16 * MINUTE)
    assert timers(e, TIMER_NOSHOW_SCAN) == [(START + 25 * MINUTE, 0)]
    b1 = book(e, "P2", now=START + 16 * MINUTE)
    r = waiting(e, "P3", ["S1"], now=START + 17 * MINUTE)
    e.events()
    at = START + 25 * MINUTE
    assert e.advance(at) == [
        ev(EK.NO_SHOW, at, "S1", b1, "P2", -1, slot=2, reason=R.SLOT_RELEASED),
        ev(EK.PATIENT_BANNED, at, "S1", b1, "P2", 1, slot=2),
        filled(at, "S1", 2, "P3", r, 2),
    ]
    # no scan due at or after the session's end
    f = make(backend, noshow_release_minutes=15)
    add(f, capacity=30)  # slot 24 opens at +230 min; +245 is past the end (+240)
    f.add_capacity("S1", 1, now=T1)
    due = sorted(d for d, _ in timers(f, TIMER_NOSHOW_SCAN))
    assert due == [START + 15 * MINUTE]
    f.advance(END)
    assert timers(f, TIMER_NOSHOW_SCAN) == []
    assert f.dump()["sessions"][0]["scan_k"] == 23


def test_no_grace_release_frees_at_session_end_as_before(backend):
    e = make(backend)
    add(e, capacity=1)
    b0 = book(e, "P1")
    waiting(e, "P3", ["S1"])
    assert timers(e, TIMER_NOSHOW_SCAN) == []
    e.events()
    events = e.advance(END)
    assert [x.kind for x in events] == [EK.NO_SHOW, EK.PATIENT_BANNED]
    assert events[0].reason == R.NONE and e.booking(b0).end_reason == R.NONE


# -- explain -----------------------------------------------------------------------


def test_explain_waitlist_requests_and_filled_bookings(backend):
    e = make(backend)
    add(e, "S1", capacity=1)
    add(e, "S2", capacity=1, start=START + DAY)
    b0 = book(e, "P1")
    res = join(e, "P2", ["S1"], now=T1 + 1)
    r1 = waiting(e, "P3", ["S1"], now=T1 + 2, channel="referral")
    r2 = waiting(e, "P4", ["S1"], now=T1 + 3)
    e.flag(account="A-P2", until=FAR, now=T1 + 4)
    text = e.explain(res)
    assert text.startswith("WAITLISTED\nwaitlist request 0: patient 'P2' via account 'A-P2'")
    assert "priority 'public'" in text and "'S1': 1 ahead of it" in text
    assert "'S1': 0 ahead of it" in e.explain(request=r1)
    assert "priority 'referral'" in e.explain(request=r1)
    e.cancel(b0, account="A-P1", now=T1 + 5)  # r1 filled
    e.cancel(1, account="A-P3", now=T1 + 6)  # r0 skipped (flagged), r2 filled
    text = e.explain(request=0)
    assert "'S1': 0 ahead of it" in text
    assert "last passed over: FLAGGED" in text and "keeps its place" in text
    text = e.explain(request=r2)
    assert "in 'S1': booking 2" in text
    text = e.explain(2)
    assert f"filled from waitlist request {r2} (public, joined" in text
    assert "filled from waitlist" not in e.explain(b0)
    refusal = join(e, "P1", ["S2"], now=T1 + 7)
    assert e.explain(refusal).startswith("REJECTED at the allocate stage: SLOTS_LEFT")
    dup = join(e, "P4", ["S1"], now=T1 + 7)
    assert e.explain(dup).startswith("REJECTED at the eligibility stage: DUPLICATE_SESSION")
    e.cancel_waitlist(0, account="A-P2", now=T1 + 8)
    assert "withdrawn" in e.explain(request=0)
    r3 = waiting(e, "P5", ["S1"], now=T1 + 9, deadline=T1 + 10)
    again = join(e, "P5", ["S1"], now=T1 + 9)
    assert "DUPLICATE_WAITLIST" in e.explain(again)
    e.advance(T1 + 10)
    assert "expired" in e.explain(request=r3)


def test_explain_patient_cap(backend):
    e = make(backend, waitlist_per_patient=1)
    add(e, "S1", capacity=1)
    add(e, "S2", capacity=1, start=START + DAY)
    book(e, "P1", "S1")
    book(e, "P2", "S2")
    waiting(e, "P3", ["S1"])
    r = join(e, "P3", ["S2"])
    refused(r, R.WAITLIST_PATIENT_CAP)
    assert "(at most 1 open requests per patient)" in e.explain(r)


# -- determinism and a bigger scenario ----------------------------------------------


def _scenario(backend: str, seed: int) -> tuple[list, list, str]:
    """Cancels, joins, expiry, re-releases (random delays), a suspension move, no-shows."""
    e = make(backend, seed=seed, rerelease_seconds=(30, 300), on_suspend="move",
             noshow_release_minutes=20)
    add(e, "S1", capacity=4)
    add(e, "S2", capacity=2, start=START + DAY)
    add(e, "S3", capacity=2, start=START + DAY, doctor="Dr Wang")
    add(e, "S4", capacity=3, start=START + 3 * DAY, department="Neurology")
    out: list = []
    bs = {}
    for i, s in enumerate(["S1"] * 4 + ["S2"] * 2 + ["S3"] * 2 + ["S4"] * 3):
        bs[i] = book(e, f"P{i}", s, now=T1 + i)
    out.append(waiting(e, "W1", ["S1", "S2"], now=T1 + 20))
    out.append(waiting(e, "W2", ["S2"], now=T1 + 21, channel="referral"))
    out.append(waiting(e, "W3", ["S4"], now=T1 + 22, deadline=T1 + HOUR))
    t = T1 + 2 * HOUR
    for i in (5, 0, 1, 8, 9):  # S2, S1 (x2), S4 (x2): the last three nobody waits for
        out.append(e.cancel(bs[i], account=f"A-P{i}", now=t).as_tuple())
        t += 7 * SECOND
    out.append(e.events())
    out.append(sorted(due for due, _id in timers(e, TIMER_RERELEASE)))
    out.append(e.advance(t + 10 * MINUTE))
    out.append(e.suspend("S2", now=t + 11 * MINUTE))
    out.append(e.events())
    out.append(e.advance(START + 3 * DAY + 5 * HOUR))
    out.append([e.session_counts(s) for s in ("S1", "S2", "S3", "S4")])
    out.append([e.waitlist(r) for r in range(3)])
    return out, e.dump()["timers"], e.state_hash()


def test_same_commands_and_seed_give_the_same_state_on_both_backends(backend):
    a = _scenario(backend, 99)
    assert a == _scenario(backend, 99)
    assert a == _scenario("reference", 99)
    b = _scenario("reference", 100)
    assert a[2] != b[2]
    # three freed slots nobody waited for, each back after a delay drawn from the generator
    t = T1 + 2 * HOUR + 14 * SECOND
    draws = splitmix(99, 3)
    assert a[0][9] == sorted(t + k * 7 * SECOND + 30 * SECOND + x % (270 * SECOND + 1)
                             for k, x in enumerate(draws))
    assert a[0][9] != b[0][9]
    kinds = [x.kind for x in a[0][8]]
    assert kinds == [EK.WAITLIST_EXPIRED, EK.WAITLIST_FILLED, EK.WAITLIST_FILLED]
    assert [x.kind for x in a[0][10]] == [EK.SLOT_RERELEASED] * 3
    assert [x.kind for x in a[0][12]] == [EK.BOOKING_MOVED, EK.BOOKING_MOVED,
                                          EK.SESSION_SUSPENDED]


def _random_run(backend: str, seed: int, steps: int = 300) -> list:
    """Random commands on a few small sessions; invariants are checked after each call."""
    rnd = random.Random(seed)
    e = make(backend, seed=seed, rerelease_seconds=rnd.choice([(0, 0), (0, 120), (30, 30)]),
             noshow_release_minutes=rnd.choice([0, 30]),
             on_suspend=rnd.choice(["move", "waitlist", "cancel"]), waitlist_per_session=4,
             waitlist_per_patient=2, bar_first_visit_expert=True,
             patients_flag=(rnd.choice([0, 3]), 30), rebook_seconds=rnd.choice([0, 10]))
    names = [f"S{i}" for i in range(5)]
    for i, name in enumerate(names):
        cap = rnd.randint(1, 3)
        ref = rnd.randint(0, cap)
        e.add_session(name, hospital=rnd.choice(["H1", "H2"]),
                      department=rnd.choice(["Cardiology", "Neurology"]),
                      doctor=rnd.choice(["Dr Li", "Dr Wang"]),
                      tier=rnd.choice(["general", "expert"]),
                      starts_at=START + (i // 2) * DAY + (i % 2) * 5 * HOUR, capacity=cap,
                      fee=0, quotas={"app": cap - ref, "referral": ref},
                      release={"app": T0, "referral": T0})
    patients = [f"P{i}" for i in range(8)]
    accounts = ["A1", "A2", "A3"]
    core = e.engine._core
    t = T1
    log: list = []
    for _ in range(steps):
        t += rnd.choice([1, 10 * SECOND, 5 * MINUTE, HOUR, 6 * HOUR])
        op = rnd.random()
        p = rnd.choice(patients)
        acc = rnd.choice(accounts) if rnd.random() < 0.3 else "A-" + p
        chan = rnd.choice([None, None, "referral", "followup"])
        out: Any = None
        try:
            if op < 0.25:
                out = e.book(acc, p, rnd.choice(names), chan, now=t,
                             hold=rnd.random() < 0.3).as_tuple()
            elif op < 0.45:
                r = join(e, p, rnd.sample(names, rnd.randint(1, 2)), now=t, account=acc,
                         channel=chan, deadline=t + rnd.choice([HOUR, DAY, 30 * DAY]),
                         priority=rnd.choice([None, None, "referral", "public"]))
                out = (r.as_tuple(), r.request, r.session)
            elif op < 0.6:
                if core.n_bookings:
                    b = rnd.randrange(core.n_bookings)
                    out = e.cancel(b, account=e.booking(b).account, now=t).as_tuple()
            elif op < 0.65:
                if core.n_bookings:
                    b = rnd.randrange(core.n_bookings)
                    out = e.confirm(b, account=e.booking(b).account, now=t).as_tuple()
            elif op < 0.7:
                if core.n_requests:
                    r = rnd.randrange(core.n_requests)
                    out = e.cancel_waitlist(r, account=e.waitlist(r).account, now=t).as_tuple()
            elif op < 0.74:
                if rnd.random() < 0.5:
                    e.flag(patient=p, until=t + HOUR, now=t)
                else:
                    e.block(account=acc, until=t + HOUR, now=t)
            elif op < 0.78:
                if p in e.dump()["names"]["patients"]:
                    out = (e.unflag(patient=p, now=t), e.unblock(patient=p, now=t))
                if acc in e.dump()["names"]["accounts"]:
                    out = (out, e.unflag(account=acc, now=t), e.unblock(account=acc, now=t))
            elif op < 0.82:
                out = e.add_capacity(rnd.choice(names), rnd.randint(1, 2), channel=chan, now=t)
            elif op < 0.86:
                name = rnd.choice(names)
                k = rnd.randint(1, e.session(name).capacity)
                out = getattr(e, rnd.choice(["block_slot", "unblock_slot"]))(name, k, now=t)
            elif op < 0.87:
                out = e.suspend(rnd.choice(names), now=t)
            elif op < 0.92:
                if core.n_bookings:
                    out = e.check_in(rnd.randrange(core.n_bookings), now=t).as_tuple()
            elif op < 0.95:
                e.register_patient(p, follow_up_at=[rnd.choice(["H1", "H2"])], now=t)
            else:
                e.advance(t)
        except se.errors.InvalidState as exc:  # add_capacity to a suspended or closed session
            out = type(exc).__name__
        log.append((out, e.events()))
    log.append([e.waitlist(r) for r in range(core.n_requests)])
    log.append(e.state_hash())
    return log


@pytest.mark.parametrize("seed", range(12))
def test_random_commands_agree_with_the_reference(backend, seed):
    got = _random_run(backend, seed)
    assert got == _random_run(backend, seed)
    if backend != "reference":
        assert got == _random_run("reference", seed)


def test_random_commands_exercise_the_waitlist():
    kinds: set = set()
    for seed in range(12):
        for _out, evs in _random_run("reference", seed)[:-2]:
            kinds.update(x.kind for x in evs)
    assert {EK.WAITLIST_FILLED, EK.WAITLIST_SKIPPED, EK.WAITLIST_EXPIRED,
            EK.SLOT_RERELEASED} <= kinds
