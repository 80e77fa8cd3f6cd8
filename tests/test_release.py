"""Fair release cohorts, the slow lane and risk flags, through the public API.

Every test runs on both engines (the ``backend`` fixture).  Times are fixed
int ms: the app quota of every session releases at R.
"""
from __future__ import annotations

import gc
from datetime import datetime

import numpy as np
import pytest

import slotengine as se
from conftest import LEDGER_ONLY
from slotengine import EventKind as EK
from slotengine import FlagReason as FR
from slotengine import Reason as R
from slotengine import Status as S
from slotengine import TicketState as TS
from slotengine.errors import (
    InvalidArgument,
    InvalidType,
    SlotEngineError,
    TimeWentBackwards,
    UnknownAccount,
    UnknownPatient,
    UnknownTicket,
)
from slotengine.times import DAY, HOUR, MINUTE, SECOND

T0 = 1_800_000_000_000
REL = T0 + HOUR  # the app release of every session
START = T0 + 8 * DAY  # sessions start a week later
CLOSE = REL + 60 * SECOND  # default cohort window: pre-queue 5 min, 60 s after


def make(backend: str, seed: int = 1, **policy: object) -> se.Engine:
    e = se.Engine(policy=se.Policy(**policy), seed=seed, backend=backend)
    e.advance(T0)
    return e


def add(e: se.Engine, name: str = "S1", capacity: int = 2, dept: str = "D1") -> None:
    e.add_session(name, hospital="H1", department=dept, doctor="Dr Li", tier="expert",
                  starts_at=START, capacity=capacity, fee=6000, release={"app": REL})


def served(events: list[se.Event]) -> list[int]:
    return [ev.detail for ev in events if ev.kind == EK.TICKET_SERVED]


def failed(events: list[se.Event]) -> list[int]:
    return [ev.detail for ev in events if ev.kind == EK.TICKET_FAILED]


# -- cohorts -------------------------------------------------------------------

def test_requests_in_the_window_are_queued_then_drawn_by_lottery(backend):
    e = make(backend)
    add(e, capacity=2)
    times = [REL - 5 * MINUTE, REL - SECOND, REL, REL + 30 * SECOND, REL + 59 * SECOND]
    tickets = []
    for i, t in enumerate(times):
        r = e.book(f"A{i}", f"P{i}", "S1", now=t)
        assert (r.status, r.reason, r.slot, r.booking) == (S.QUEUED, R.NONE, None, None)
        tickets.append(r.ticket)
        pos = e.position(r.ticket)
        assert (pos.state, pos.ahead, pos.draw) == (TS.QUEUED, None, None)
    assert tickets == [0, 1, 2, 3, 4]
    assert e.session_counts("S1").free == 2  # nothing allocated before the draw

    events = e.advance(CLOSE)
    assert events[0].kind == EK.COHORT_DRAWN and events[0].detail == 5
    draws = {k: e.ticket(k).draw for k in tickets}
    assert sorted(draws.values()) == [0, 1, 2, 3, 4]
    winners = sorted(k for k in tickets if draws[k] < 2)
    assert sorted(served(events)) == winners
    assert sorted(failed(events)) == sorted(set(tickets) - set(winners))
    for k in tickets:
        info = e.ticket(k)
        assert info.cohort_size == 5 and info.lane == "fair"
        if k in winners:
            assert info.state == TS.SERVED and info.booking is not None
            assert e.booking(info.booking).patient == f"P{k}"
        else:
            assert (info.state, info.reason) == (TS.FAILED, R.FULL)
    assert e.session_counts("S1").booked == 2
    e._check_invariants()
    # After the window: served at once, in arrival order.
    r = e.book("A9", "P9", "S1", now=CLOSE + SECOND)
    assert (r.status, r.reason) == (S.REJECTED, R.FULL)


def test_the_draw_is_seeded_and_identical_on_both_engines(backend):
    def run(seed: int, be: str) -> tuple[list[int], str]:
        e = make(be, seed=seed)
        add(e, capacity=3)
        for i in range(12):
            e.book(f"A{i}", f"P{i}", "S1", now=REL + i)
        e.advance(CLOSE)
        return [e.ticket(k).draw for k in range(12)], e.state_hash()

    assert run(7, backend) == run(7, backend)
    assert run(7, backend) == run(7, "reference")
    assert run(7, backend)[0] != run(8, backend)[0]


def test_pre_queue_opens_five_minutes_before_release(backend):
    e = make(backend)
    add(e)
    r = e.book("A1", "P1", "S1", now=REL - 5 * MINUTE - 1)
    assert (r.status, r.reason) == (S.REJECTED, R.NOT_RELEASED)
    assert e.book("A1", "P1", "S1", now=REL - 5 * MINUTE).status == S.QUEUED


def test_one_queued_request_per_patient_per_session(backend):
    e = make(backend)
    add(e)
    assert e.book("A1", "P1", "S1", now=REL).status == S.QUEUED
    r = e.book("A2", "P1", "S1", now=REL + 1)
    assert (r.status, r.reason, r.ticket) == (S.REJECTED, R.DUPLICATE_TICKET, None)


def test_cancelled_ticket_is_not_served_and_others_move_up(backend):
    e = make(backend, outflow_per_second=10)  # one ticket per 100 ms
    add(e, capacity=5)
    ks = [e.book(f"A{i}", f"P{i}", "S1", now=REL + i).ticket for i in range(3)]
    assert e.cancel_ticket(ks[0], account="A1", now=REL + 10).reason == R.NOT_OWNER
    r = e.cancel_ticket(ks[0], account="A0", now=REL + 10)
    assert (r.status, r.reason) == (S.CANCELLED, R.NONE)
    assert e.cancel_ticket(ks[0], account="A0", now=REL + 11).reason == R.NOT_ACTIVE
    ev = e.advance(CLOSE)
    assert len(served(ev)) == 1  # outflow: the first live ticket at the close
    rest = [k for k in ks[1:] if e.ticket(k).state == TS.QUEUED]
    assert len(rest) == 1 and e.position(rest[0]).ahead == 0
    assert e.position(rest[0]).estimate_ms == 0
    ev = e.advance(CLOSE + 100)
    assert served(ev) == rest
    assert e.ticket(ks[0]).state == TS.CANCELLED
    e._check_invariants()


def test_outflow_serves_one_ticket_per_gap_and_positions_only_move_forward(backend):
    e = make(backend, outflow_per_second=10)
    add(e, capacity=10)
    ks = [e.book(f"A{i}", f"P{i}", "S1", now=REL + i).ticket for i in range(4)]
    e.advance(CLOSE)
    order = sorted(ks, key=lambda k: e.ticket(k).draw)
    last = {k: 10**9 for k in ks}
    for step in range(5):
        for k in ks:
            pos = e.position(k)
            if pos.ahead is not None:
                assert pos.ahead <= last[k]
                last[k] = pos.ahead
        e.advance(CLOSE + step * 100)
    assert [e.ticket(k).state for k in order] == [TS.SERVED] * 4
    assert [e.ticket(k).served_at for k in order] == [CLOSE, CLOSE + 100, CLOSE + 200, CLOSE + 300]
    assert [e.booking(e.ticket(k).booking).slot for k in order] == [1, 2, 3, 4]


def test_a_ticket_drawn_after_its_session_filled_fails_full_whoever_holds_it(backend):
    """Eligibility is checked only while the session has a free slot: P0 queues in
    three sessions of one department and day; the one it wins makes it ineligible
    for the other with a free slot (DUPLICATE_DEPARTMENT_DAY), but the full one
    (its only slot blocked) says FULL."""
    e = make(backend)
    for name in ("S1", "S2", "S3"):
        add(e, name, capacity=1)
    assert e.block_slot("S2", 1, now=T0)
    tickets = {name: e.book("A0", "P0", name, now=REL).ticket for name in ("S1", "S2", "S3")}
    assert None not in tickets.values()
    e.advance(CLOSE)
    ends = {name: (e.ticket(k).state, e.ticket(k).reason) for name, k in tickets.items()}
    assert ends["S2"] == (TS.FAILED, R.FULL)
    assert sorted([ends["S1"], ends["S3"]]) == [
        (TS.SERVED, R.NONE), (TS.FAILED, R.DUPLICATE_DEPARTMENT_DAY)]


def test_book_many_in_the_window_matches_per_call(backend):
    def world() -> se.Engine:
        e = make(backend, seed=3)
        add(e, "S1", capacity=2)
        add(e, "S2", capacity=1, dept="D2")
        return e

    a, b = world(), world()
    rows = [(f"A{i}", f"P{i}", "S1" if i % 2 else "S2") for i in range(8)]
    per_call = [a.book(x, p, s, now=REL + 5).as_tuple() for x, p, s in rows]
    out = b.book_many(b.intern_accounts([r[0] for r in rows]), b.intern_patients([r[1] for r in rows]),
                      b.session_ids([r[2] for r in rows]), b.channel_ids(["app"] * 8), REL + 5)
    assert [tuple(int(x) for x in t) for t in zip(out.status, out.reason, out.slot, out.booking)] == per_call
    assert list(out.ticket) == list(range(8))
    a.advance(CLOSE)
    b.advance(CLOSE)
    assert a.state_hash() == b.state_hash()


# -- slow lane -----------------------------------------------------------------

def test_flagged_accounts_are_served_after_the_fair_cohort(backend):
    e = make(backend)
    add(e, capacity=3)
    e.register_patient("Pbot")
    e.intern_accounts(["bot"])
    e.flag(account="bot", until=T0 + 30 * DAY, note="reported by a hospital", now=T0)
    kb = e.book("bot", "Pbot", "S1", now=REL - 5 * MINUTE).ticket  # first in line
    fair = [e.book(f"A{i}", f"P{i}", "S1", now=REL + 10 + i).ticket for i in range(3)]
    assert e.ticket(kb).lane == "slow" and e.ticket(fair[0]).lane == "fair"
    e.advance(CLOSE)
    assert e.ticket(kb).draw == 3  # after all three fair tickets
    assert (e.ticket(kb).state, e.ticket(kb).reason) == (TS.FAILED, R.FULL)
    assert all(e.ticket(k).state == TS.SERVED for k in fair)
    text = e.explain(ticket=kb)
    assert "slow lane" in text and "HOST" in text and "lottery draw 4 of 4" in text


def test_slow_lane_outside_a_cohort_is_delayed_and_rate_limited(backend):
    e = make(backend)
    add(e, capacity=5)
    e.intern_accounts(["bot"])
    e.flag(account="bot", until=T0 + 30 * DAY, now=T0)
    t = CLOSE + HOUR
    r1 = e.book("bot", "P1", "S1", now=t)
    r2 = e.book("bot", "P2", "S1", now=t)  # burst 2
    r3 = e.book("bot", "P3", "S1", now=t)
    assert (r1.status, r2.status) == (S.QUEUED, S.QUEUED)
    assert (r3.status, r3.reason, r3.retry_after) == (S.REJECTED, R.THROTTLED, 10 * SECOND)
    assert "retry after 10000 ms" in e.explain(r3)
    assert e.position(r1.ticket).estimate_ms == 30 * SECOND
    assert served(e.advance(t + 30 * SECOND - 1)) == []
    assert served(e.advance(t + 30 * SECOND)) == [r1.ticket, r2.ticket]
    r4 = e.book("bot", "P3", "S1", now=t + 10 * SECOND + 30 * SECOND)
    assert r4.status == S.QUEUED


def test_blocked_accounts_and_patients_are_refused(backend):
    e = make(backend)
    add(e)
    e.intern_accounts(["A1"])
    e.register_patient("P2")
    e.block(account="A1", until=T0 + DAY, now=T0)
    e.block(patient="P2", until=T0 + DAY, now=T0)
    assert e.book("A1", "P1", "S1", now=CLOSE + 1).reason == R.BLOCKED
    assert e.book("A2", "P2", "S1", now=CLOSE + 1).reason == R.BLOCKED
    assert e.unblock(account="A1", now=CLOSE + 2) is True
    assert e.unblock(account="A1", now=CLOSE + 2) is False
    assert e.book("A1", "P1", "S1", now=CLOSE + 3).status == S.BOOKED
    assert e.risk(patient="P2").blocked_until == T0 + DAY


def test_host_flags_are_auditable(backend):
    e = make(backend)
    e.flag(account="A1", until=T0 + DAY, note="scalper ring #7", now=T0)
    n = e.import_blacklist([("account", "A2", T0 + 2 * DAY), ("patient", "张三", T0 + 3 * DAY)],
                           now=T0 + 1)
    assert n == 2
    assert e.unflag(account="A1", now=T0 + 2) is True
    assert e.unflag(account="A1", now=T0 + 3) is False
    log = e.flag_log()
    assert [(f.at, f.kind, f.key, f.action, f.reason) for f in log] == [
        (T0, "account", "A1", "flag", FR.HOST),
        (T0 + 1, "account", "A2", "flag", FR.BLACKLIST),
        (T0 + 1, "patient", "张三", "flag", FR.BLACKLIST),
        (T0 + 2, "account", "A1", "unflag", None),
    ]
    assert log[0].note == "scalper ring #7"
    risk = e.risk(patient="张三")
    assert (risk.flag_reason, risk.flag_source, risk.flagged_until) == (FR.BLACKLIST, "host", T0 + 3 * DAY)
    kinds = [ev.kind for ev in e.events()]
    assert kinds == [EK.FLAGGED, EK.FLAGGED, EK.FLAGGED, EK.UNFLAGGED]


# -- risk signals ----------------------------------------------------------------

@pytest.mark.parametrize("count", [5, 9])  # 9: a ring longer than the account's row holds
def test_early_requests_flag_the_account(backend, count):
    e = make(backend, early_flag=(count, 1))
    for i in range(count):
        add(e, f"S{i}", dept=f"D{i}")
    for i in range(count - 1):
        assert e.ticket(e.book("bot", "P1", f"S{i}", now=REL + i).ticket).lane == "fair"
    early = e._core.account_info(e._accounts.ids["bot"])[5]
    assert early == tuple(REL + i for i in range(count - 1))
    last = REL + count - 1
    r = e.book("bot", "P1", f"S{count - 1}", now=last)
    assert e.ticket(r.ticket).lane == "slow"  # the count-th early request flags first
    risk = e.risk(account="bot")
    assert (risk.flag_reason, risk.flag_source, risk.flagged_since) == (FR.EARLY_REQUESTS, "rule", last)
    assert risk.flagged_until == last + 30 * DAY
    flagged = [ev for ev in e.events() if ev.kind == EK.FLAGGED]
    assert [(ev.account, ev.detail) for ev in flagged] == [("bot", FR.EARLY_REQUESTS)]


def test_many_patients_flag_the_account(backend):
    e = make(backend, **{**LEDGER_ONLY, "patients_flag": (3, 30)})
    add(e, capacity=5)
    for i in range(3):
        assert e.book("A1", f"P{i}", "S1", now=REL + i).status == S.BOOKED
    assert e.risk(account="A1").flag_reason == FR.MANY_PATIENTS


def test_cancellations_flag_the_account(backend):
    e = make(backend, **{**LEDGER_ONLY, "cancel_flag": (4, 30)})
    for i in range(4):
        add(e, f"S{i}", dept=f"D{i}")
    bookings = [e.book("A1", f"P{i % 2}", f"S{i}", now=REL + i).booking for i in range(4)]
    for j, b in enumerate(bookings[:3]):
        e.cancel(b, account="A1", now=REL + 10 + j)
    assert e.risk(account="A1").flag_reason is None
    e.cancel(bookings[3], account="A1", now=REL + 20)
    assert e.risk(account="A1").flag_reason == FR.CANCELLATIONS


def test_cancel_then_rebook_by_another_account_flags_both(backend):
    e = make(backend, **{**LEDGER_ONLY, "rebook_seconds": 10})
    add(e, capacity=1)
    b = e.book("seller", "P1", "S1", now=REL + 1).booking
    e.cancel(b, account="seller", now=REL + 100)
    assert e.book("buyer", "P2", "S1", now=REL + 100 + 5 * SECOND).status == S.BOOKED
    assert e.risk(account="seller").flag_reason == FR.CANCEL_REBOOK
    assert e.risk(account="buyer").flag_reason == FR.CANCEL_REBOOK
    flagged = [ev.account for ev in e.events() if ev.kind == EK.FLAGGED]
    assert flagged == ["seller", "buyer"]


def test_a_rebook_after_the_interval_flags_nobody(backend):
    e = make(backend, **{**LEDGER_ONLY, "rebook_seconds": 10})
    add(e, capacity=1)
    b = e.book("seller", "P1", "S1", now=REL + 1).booking
    e.cancel(b, account="seller", now=REL + 100)
    e.book("buyer", "P2", "S1", now=REL + 100 + 10 * SECOND + 1)
    assert e.risk(account="buyer").flag_reason is None


# -- bad input -------------------------------------------------------------------

def _snapshot(e: se.Engine) -> tuple:
    return e.state_hash(), len(e.dump()["names"]["accounts"]), len(e.dump()["names"]["patients"])


@pytest.fixture
def world(backend):
    e = make(backend)
    add(e)
    r = e.book("A1", "P1", "S1", now=REL)
    assert r.status == S.QUEUED
    return e


BAD_CALLS = [
    ("flag neither", lambda e: e.flag(until=T0 + DAY), InvalidArgument),
    ("flag both", lambda e: e.flag(account="A1", patient="P1", until=T0 + DAY), InvalidArgument),
    ("flag type", lambda e: e.flag(account=5, until=T0 + DAY), InvalidType),
    ("flag new but bad until", lambda e: e.flag(account="new1", until=REL - 1), InvalidArgument),
    ("flag past", lambda e: e.flag(account="A1", until=REL), InvalidArgument),
    ("flag naive", lambda e: e.flag(account="A1", until=datetime(2030, 1, 1)), InvalidType),
    ("flag float", lambda e: e.flag(account="A1", until=float(T0 + DAY)), InvalidType),
    ("flag reason", lambda e: e.flag(account="A1", until=T0 + DAY, reason="rule"), InvalidArgument),
    ("flag reason type", lambda e: e.flag(account="A1", until=T0 + DAY, reason=3), InvalidType),
    ("flag note", lambda e: e.flag(account="A1", until=T0 + DAY, note=5), InvalidType),
    ("flag backwards", lambda e: e.flag(account="A1", until=T0 + DAY, now=T0), TimeWentBackwards),
    ("flag empty", lambda e: e.flag(account="", until=T0 + DAY), InvalidArgument),
    ("unflag unknown", lambda e: e.unflag(patient="nobody"), UnknownPatient),
    ("unflag type", lambda e: e.unflag(patient=5), InvalidType),
    ("block huge", lambda e: e.block(account="A1", until=10**30), InvalidArgument),
    ("block neither", lambda e: e.block(until=T0 + DAY), InvalidArgument),
    ("unblock backwards", lambda e: e.unblock(account="A1", now=-1), InvalidArgument),
    ("blacklist str", lambda e: e.import_blacklist("A1"), InvalidType),
    ("blacklist row", lambda e: e.import_blacklist([("account", "new1", T0 + DAY), ("x",)]),
     InvalidArgument),
    ("blacklist kind", lambda e: e.import_blacklist([("account", "new1", T0 + DAY),
                                                     ("device", "d", T0 + DAY)]), InvalidArgument),
    ("blacklist id", lambda e: e.import_blacklist([("account", "new1", T0 + DAY),
                                                   ("patient", "P\x00", T0 + DAY)]), InvalidArgument),
    ("blacklist until", lambda e: e.import_blacklist([("account", "new1", T0)]), InvalidArgument),
    ("cancel_ticket unknown", lambda e: e.cancel_ticket(99, account="A1", now=REL + 1), UnknownTicket),
    ("cancel_ticket negative", lambda e: e.cancel_ticket(-1, account="A1", now=REL + 1), UnknownTicket),
    ("cancel_ticket float", lambda e: e.cancel_ticket(0.0, account="A1", now=REL + 1), InvalidType),
    ("cancel_ticket bool", lambda e: e.cancel_ticket(True, account="A1", now=REL + 1), InvalidType),
    ("cancel_ticket account", lambda e: e.cancel_ticket(0, account="zz", now=REL + 1), UnknownAccount),
    ("cancel_ticket backwards", lambda e: e.cancel_ticket(0, account="A1", now=REL - 1),
     TimeWentBackwards),
    ("ticket huge", lambda e: e.ticket(2**63), UnknownTicket),
    ("ticket str", lambda e: e.ticket("0"), InvalidType),
    ("position unknown", lambda e: e.position(1), UnknownTicket),
    ("risk unknown", lambda e: e.risk(account="张三"), UnknownAccount),
    ("risk neither", lambda e: e.risk(), InvalidArgument),
    ("explain ticket", lambda e: e.explain(ticket=5), UnknownTicket),
    ("explain both", lambda e: e.explain(0, ticket=0), InvalidArgument),
]


@pytest.mark.parametrize("name,call,err", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_changes_nothing(world, name, call, err):
    before = _snapshot(world)
    with pytest.raises(err) as info:
        call(world)
    assert isinstance(info.value, SlotEngineError)
    assert type(info.value) is err
    assert _snapshot(world) == before


def test_events_array_gives_dense_ids(backend):
    e = make(backend)
    add(e, capacity=1)
    e.events()
    e.book("A1", "P1", "S1", now=REL)
    e.book("A2", "P2", "S1", now=REL)
    # A command runs due timers first: the cohort is drawn and served here,
    # and the events wait in the buffer (advance would drain them as objects).
    assert e.book("A3", "P3", "S1", now=CLOSE).reason == R.FULL
    arr = e.events_array()
    assert set(arr) >= {"kind", "at", "session", "booking", "patient", "account", "detail"}
    kinds = list(arr["kind"])
    assert kinds[0] == EK.COHORT_DRAWN and sorted(kinds[1:]) == [EK.TICKET_SERVED, EK.TICKET_FAILED]
    assert all(isinstance(v, np.ndarray) for v in arr.values())
    assert len(e.events_array()["kind"]) == 0


def test_a_rule_leaves_a_flagged_account_as_it_is(backend):
    e = make(backend)
    for i in range(10):
        add(e, f"S{i}", dept=f"D{i}")
    e.flag(account="bot", reason="blacklist", until=T0 + 2 * DAY, now=T0)
    for i in range(10):  # twice the early-request threshold
        e.book("bot", f"P{i}", f"S{i}", now=REL + i)
    risk = e.risk(account="bot")
    assert (risk.flag_reason, risk.flag_source, risk.flagged_until) == (FR.BLACKLIST, "host", T0 + 2 * DAY)
    assert [(f.action, f.reason) for f in e.flag_log()] == [("flag", FR.BLACKLIST)]


def test_reserve_makes_room_and_changes_no_decision(backend):
    """Room for a rush, made before it: no state changes, and the rush decides the
    same as on an engine that made none."""
    def rush(room: int) -> tuple[list[se.Event], str]:
        e = make(backend)
        add(e, capacity=3)
        e.book("A0", "P0", "S1", now=REL - 10 * MINUTE)  # before the pre-queue: refused
        before = (e.state_hash(), e.dump())
        e.reserve(room)
        e.reserve(0)
        assert (e.state_hash(), e.dump()) == before
        if backend == "core":
            mem = e.memory_usage()
            assert mem["tickets"] >= room * 56 and mem["events"] >= room * 40
        for i in range(12):
            e.book(f"A{i % 5}", f"P{i}", "S1", now=REL - MINUTE + i * SECOND)
        return e.advance(CLOSE), e.state_hash()

    assert rush(0) == rush(1000) == rush(5)


def test_events_built_in_the_core_match_the_array_path():
    """Core.drain_events_list (Engine.events) builds what the column path builds;
    an id outside a names list drains nothing and returns None (the fallback)."""
    from slotengine import engine as eng

    def rush() -> se.Engine:
        e = make("core")
        add(e, capacity=2)
        for i in range(6):
            e.book(f"A{i % 4}", f"P{i}", "S1", now=REL + i)
        e.advance(CLOSE, drain=False)
        return e

    e = rush()
    args = (se.Event, eng._EVENT_KIND_LIST, eng._REASON_LIST, e._sessions.names,
            e._patients.names, e._accounts.names)
    with pytest.raises(InvalidType):
        e._core.drain_events_list(list, *args[1:])
    assert e._core.drain_events_list(*args[:4], e._patients.names[:2], args[5]) is None
    built = e.events()
    assert built and all(type(ev) is se.Event for ev in built)
    # untracked: a full collection need not walk a rush's million events
    assert not any(gc.is_tracked(ev) for ev in built)
    assert e.events() == []
    cols = rush().events_array()
    assert [ev.kind for ev in built] == [EK(k) for k in cols["kind"]]
    assert [ev.patient for ev in built] == [
        e._patients.names[p] if p >= 0 else None for p in cols["patient"]]
    assert [ev.booking for ev in built] == [b if b >= 0 else None for b in cols["booking"]]
    assert [ev.slot for ev in built] == [k if k > 0 else None for k in cols["slot"]]
    assert [ev.reason for ev in built] == [R(r) for r in cols["reason"]]
    assert [(ev.at, ev.detail) for ev in built] == list(zip(cols["at"], cols["detail"]))
    assert built == rush().advance(CLOSE) and len(built) == 7
