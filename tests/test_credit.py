"""Credit lines (先看病后付费) and prepaid balances (储值): issue 5.

Behaviour tests through the public ``Engine`` facade and ``engine.credit``,
each run on both backends (the ``backend`` fixture), with exact fen amounts,
records, movements and events (docs/semantics.md, "Credit and prepaid
balances").  Every engine is wrapped so that ``_check_invariants()`` (which
includes the wallet and ledger invariants) runs after every call, also after
a call that raised.  Times are fixed int ms, never the wall clock.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import slotengine as se
from conftest import BACKENDS, LEDGER_ONLY
from slotengine import Bill, Cover, Event, Line, Movement, Settlement, Statement
from slotengine import BillState as BSt
from slotengine import BookingState as BS
from slotengine import EventKind as EK
from slotengine import LedgerAccount as LA
from slotengine import LineState as LS
from slotengine import MoveKind as MK
from slotengine import Reason as R
from slotengine import RequestState as RS
from slotengine import Status as St
from slotengine import TicketState as TS
from slotengine.errors import InvalidArgument, InvalidState, UnknownBill
from slotengine.times import DAY, HOUR, MINUTE, SECOND

T0 = 1_800_000_000_000  # 2027-01-15 16:00 in UTC+8
DAY0 = T0 // DAY * DAY  # a UTC midnight = 08:00 local
START = DAY0 + 10 * DAY  # 2027-01-25 08:00 local
END = START + 4 * HOUR  # Policy.session_minutes = 240
T1 = T0 + HOUR  # after the test releases (T0)
HOLD = 10 * MINUTE
FAR = DAY0 + 300 * DAY
DUE = 10 * DAY  # bill_due_days in these tests
NOTICE = 2 * DAY  # bill_notice_days in these tests
SUS = R.SESSION_SUSPENDED
MAX_FEN = 10**12
TIMER_BILL_NOTICE, TIMER_BILL_DUE = 11, 12
#: (source, target) of each movement kind
FLOW = {
    MK.TOP_UP: (LA.EXTERNAL, LA.BALANCE),
    MK.PAY_BALANCE: (LA.BALANCE, LA.HOSPITAL),
    MK.PAY_CREDIT: (LA.CREDIT, LA.HOSPITAL),
    MK.REPAY: (LA.EXTERNAL, LA.CREDIT),
    MK.REFUND: (LA.BALANCE, LA.EXTERNAL),
}
NO_LINE = Line(None, LS.NONE, 0, 0, 0, 0, 0, 0)


# -- helpers -------------------------------------------------------------------


class Checked:
    """An Engine (or its ``credit``) whose invariants are checked after every public call."""

    def __init__(self, target: Any, engine: Any = None) -> None:
        self._target = target
        self._engine = target if engine is None else engine

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name == "credit":
            return Checked(attr, self._engine)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            finally:
                self._engine._check_invariants()

        return call


def make(backend: str, seed: int = 0, **policy: object) -> Any:
    """Fair release, risk signals and per-patient limits off; bills due in 10 days."""
    pol = {**LEDGER_ONLY, "require_cover": True, "patient_limits": (),
           "one_per_department_day": False, "account_patients": 0, "cancel_strikes": 0,
           "bill_due_days": 10, "bill_notice_days": 2, **policy}
    e = Checked(se.Engine(policy=se.Policy(**pol), seed=seed, backend=backend))
    e.advance(T0)
    return e


def add(e: Any, name: str = "S1", *, fee: int = 6000, capacity: int = 1, start: int = START,
        department: str = "Cardiology", doctor: str = "Dr Li", release: dict | None = None) -> None:
    e.add_session(name, hospital="H1", department=department, doctor=doctor, starts_at=start,
                  capacity=capacity, fee=fee, release={"app": T0} if release is None else release)


def book(e: Any, patient: str, session: str = "S1", *, now: int = T1, hold: bool = False) -> int:
    r = e.book("A-" + patient, patient, session, now=now, hold=hold)
    assert (r.status, r.reason) == (St.HELD if hold else St.BOOKED, R.NONE), r
    return r.booking


def rejected(r: Any, reason: R) -> None:
    assert (r.status, r.reason, r.slot, r.booking, r.window) == (
        St.REJECTED, reason, None, None, None), r
    assert not r.ok


def cover(e: Any, b: int) -> tuple[int, int, int | None]:
    """(held_balance, held_credit, charged) of a booking."""
    i = e.booking(b)
    return (i.held_balance, i.held_credit, i.charged)


def money(e: Any, patient: str) -> tuple[int, int, LS, int, int, int]:
    """(balance, balance_held, line state, limit, used, line held) of a patient."""
    s = e.credit.statement(patient)
    return (s.balance, s.balance_held, s.line.state, s.line.limit, s.line.used, s.line.held)


def ev(kind: EK, at: int, session: str | None, booking: int | None, patient: str | None,
       detail: int = -1, *, slot: int | None = None, reason: R = R.NONE,
       account: str | None = "") -> Event:
    """An Event; one about a booking names the account "A-" + patient unless given."""
    if account == "":
        account = None if patient is None else "A-" + patient
    return Event(kind, at, session, booking, patient, account, detail, slot, reason)


def line_ev(kind: EK, at: int, patient: str, detail: int = -1) -> Event:
    """A line event: only the patient is set (session, booking, account none)."""
    return Event(kind, at, None, None, patient, None, detail, None, R.NONE)


def strip(e: Any) -> dict:
    """The dump without the clock and the command counter."""
    d = dict(e.dump())
    del d["now"], d["ncmd"]
    return d


def frozen(e: Any) -> tuple:
    """Everything a raised error must leave alone."""
    return (e.state_hash(), e.dump()["names"], e.now, e.commands)


def charge(e: Any, patient: str, fee: int, session: str, at: int) -> int:
    """Bill ``fee`` to ``patient``: a one-slot session at ``at``, booked and checked in then."""
    add(e, session, fee=fee, start=at)
    b = book(e, patient, session, now=at)
    assert e.check_in(b, now=at).status == St.ARRIVED
    return b


def audit(e: Any) -> None:
    """The ledger's books: every movement's accounts, totals zero, per-patient sums."""
    ms = e.credit.movements()
    assert [m.seq for m in ms] == list(range(len(ms)))
    tot = {a: 0 for a in LA}
    bal: dict[str, int] = {}
    cred: dict[str, int] = {}
    for m in ms:
        assert m.amount > 0 and (m.source, m.target) == FLOW[m.kind], m
        tot[m.source] -= m.amount
        tot[m.target] += m.amount
        for acc, book_ in ((LA.BALANCE, bal), (LA.CREDIT, cred)):
            book_[m.patient] = (book_.get(m.patient, 0) + m.amount * (m.target == acc)
                                - m.amount * (m.source == acc))
        assert (m.bill is not None) == (m.kind in (MK.PAY_CREDIT, MK.REPAY)), m
        assert (m.booking is not None) >= (m.kind in (MK.PAY_BALANCE, MK.PAY_CREDIT)), m
    totals = e.credit.totals()
    assert totals == {"external": tot[LA.EXTERNAL], "hospital": tot[LA.HOSPITAL],
                      "balance": tot[LA.BALANCE], "credit": tot[LA.CREDIT]}
    assert sum(totals.values()) == 0
    d = e.dump()
    for p in d["names"]["patients"]:
        s = e.credit.statement(p)
        assert s.balance == bal.get(p, 0), p
        assert s.line.used == -cred.get(p, 0) == s.owed == sum(b.amount - b.paid for b in s.bills)
        assert s.available == s.balance - s.balance_held + s.line.available
    charged = [e.booking(b).charged for b in range(len(d["bookings"]))]
    assert totals["hospital"] == sum(x for x in charged if x is not None)


# -- cover on booking ------------------------------------------------------------


def test_cover_holds_the_balance_first_then_credit(backend):
    e = make(backend)
    add(e, "S1", capacity=4)
    add(e, "S0", fee=0, capacity=1, start=START + DAY)
    assert e.credit.top_up("P1", 4000, now=T1) == 4000
    assert e.credit.open_line("P1", now=T1) == Line("outpatient", LS.OPEN, 30000, 0, 0, 30000, 0, 0)
    assert e.credit.available("P1") == 34000
    assert e.credit.check("P1", 6000) == Cover(True, R.NONE, 4000, 2000)
    b = book(e, "P1")
    assert cover(e, b) == (4000, 2000, None)
    assert e.credit.statement("P1") == Statement(
        "P1", 4000, 4000, Line("outpatient", LS.OPEN, 30000, 0, 2000, 28000, 0, 0), (), 0, 28000)
    assert e.credit.available("P1") == 28000
    assert e.credit.check("P1", 28000) == Cover(True, R.NONE, 0, 28000)
    c = e.credit.check("P1", 28001)
    assert (c.ok, c.reason) == (False, R.NO_COVER)
    # balance only, no line
    e.credit.top_up("P2", 10000, now=T1)
    assert cover(e, book(e, "P2")) == (6000, 0, None)
    assert e.credit.statement("P2") == Statement("P2", 10000, 6000, NO_LINE, (), 0, 4000)
    # credit only
    e.credit.open_line("P3", kind="inpatient", now=T1)
    assert cover(e, book(e, "P3")) == (0, 6000, None)
    assert e.credit.line("P3") == Line("inpatient", LS.OPEN, 500000, 0, 6000, 494000, 0, 0)
    # a free session needs no cover and holds nothing
    b4 = book(e, "P4", "S0")
    assert cover(e, b4) == (0, 0, None)
    assert e.credit.statement("P4") == Statement("P4", 0, 0, NO_LINE, (), 0, 0)
    # holds move no money: the ledger has the top-ups only
    c1 = e.credit.movements()
    assert [(m.seq, m.patient, m.source, m.target, m.amount, m.kind, m.booking, m.bill)
            for m in c1] == [
        (0, "P1", LA.EXTERNAL, LA.BALANCE, 4000, MK.TOP_UP, None, None),
        (1, "P2", LA.EXTERNAL, LA.BALANCE, 10000, MK.TOP_UP, None, None),
    ]
    assert e.credit.movements("P2") == [c1[1]]
    assert e.credit.movements(start=1) == [c1[1]]
    assert e.credit.movements("P3") == []
    assert e.credit.totals() == {"external": -14000, "hospital": 0, "balance": 14000, "credit": 0}
    d = e.dump()
    assert [w[0] for w in d["wallets"]] == [0, 1, 2]  # P4's wallet is all zero
    assert d["covers"] == [(0, 4000, 2000, -1), (1, 6000, 0, -1), (2, 0, 6000, -1)]
    audit(e)


def test_no_cover_rejects_and_changes_nothing_but_the_clock(backend):
    e = make(backend)
    add(e, "S1", capacity=2)
    e.credit.top_up("P1", 5999, now=T1)
    rejected(e.book("A-P1", "P1", "S1", now=T1), R.NO_COVER)  # registers A-P1
    before, n = strip(e), e.commands
    rejected(e.book("A-P1", "P1", "S1", now=T1 + 5), R.NO_COVER)
    rejected(e.book("A-P1", "P1", "S1", now=T1 + 6, hold=True), R.NO_COVER)
    assert strip(e) == before
    assert (e.now, e.commands) == (T1 + 6, n + 2)
    assert e.session_counts("S1").free == 2
    assert e.events() == []
    # an open line with no free credit does not help
    e.credit.open_line("P1", limit=0, now=T1 + 7)
    rejected(e.book("A-P1", "P1", "S1", now=T1 + 7), R.NO_COVER)
    assert e.credit.set_limit("P1", 1, now=T1 + 8) == 1
    assert e.events() == [line_ev(EK.LIMIT_CHANGED, T1 + 8, "P1", 1)]
    assert cover(e, book(e, "P1", now=T1 + 8)) == (5999, 1, None)
    assert e.credit.available("P1") == 0
    audit(e)


def test_the_credit_stage_comes_after_allocate(backend):
    e = make(backend)
    add(e, "S1", capacity=1)
    add(e, "S2", capacity=2, release={"app": START - DAY})
    add(e, "S3", capacity=2)
    e.credit.top_up("P1", 6000, now=T1)
    book(e, "P1")
    rejected(e.book("A-P2", "P2", "S1", now=T1), R.FULL)
    rejected(e.book("A-P2", "P2", "S2", now=T1), R.NOT_RELEASED)
    rejected(e.book("A-P2", "P2", "S3", now=T1), R.NO_COVER)
    e.suspend("S3", now=T1)
    rejected(e.book("A-P2", "P2", "S3", now=T1), R.SESSION_SUSPENDED)
    # P1 has no free money left: a duplicate is still a duplicate
    rejected(e.book("A-P1", "P1", "S1", now=T1), R.DUPLICATE_SESSION)


def test_book_many_rows_need_cover(backend):
    e = make(backend)
    add(e, "S1", capacity=3)
    e.credit.top_up("P1", 6000, now=T1)
    e.credit.open_line("P3", now=T1)
    acc = e.intern_accounts(["A-P1", "A-P2", "A-P3"])
    pat = e.intern_patients(["P1", "P2", "P3"])
    n = e.commands
    out = e.book_many(acc, pat, e.session_ids(["S1"] * 3), e.channel_ids(["app"] * 3),
                      np.array([T1 + 1, T1 + 2, T1 + 3]))
    assert out.status.tolist() == [St.BOOKED, St.REJECTED, St.BOOKED]
    assert out.reason.tolist() == [0, 501, 0]
    assert out.slot.tolist() == [1, 0, 2]
    assert e.commands == n + 3
    assert [cover(e, b) for b in (0, 1)] == [(6000, 0, None), (0, 6000, None)]


def test_a_queued_ticket_holds_nothing_and_fails_without_cover(backend):
    e = make(backend, prequeue_minutes=5, cohort_seconds=60)
    rel = T0 + 2 * HOUR
    add(e, "S1", capacity=2, release={"app": rel})
    e.credit.top_up("P2", 6000, now=T1)
    r1 = e.book("A-P1", "P1", "S1", now=rel - MINUTE)
    r2 = e.book("A-P2", "P2", "S1", now=rel - MINUTE)
    assert (r1.status, r2.status) == (St.QUEUED, St.QUEUED)
    assert money(e, "P2") == (6000, 0, LS.NONE, 0, 0, 0)  # queued: nothing held yet
    e.events()
    evs = [x for x in e.advance(rel + 60 * SECOND) if x.kind == EK.TICKET_FAILED]
    t1, t2 = e.ticket(r1.ticket), e.ticket(r2.ticket)
    assert (t1.state, t1.reason, t1.booking) == (TS.FAILED, R.NO_COVER, None)
    assert (t2.state, t2.reason) == (TS.SERVED, R.NONE)
    assert cover(e, t2.booking) == (6000, 0, None)
    assert money(e, "P2") == (6000, 6000, LS.NONE, 0, 0, 0)
    assert [(x.detail, x.reason, x.patient) for x in evs] == [(r1.ticket, R.NO_COVER, "P1")]


# -- releasing holds --------------------------------------------------------------


def test_holds_are_released_on_cancel_expiry_and_no_show(backend):
    e = make(backend)
    add(e, "S1", capacity=5)
    for p in ("P1", "P2", "P3", "P4", "P5"):
        e.credit.top_up(p, 4000, now=T1)
        e.credit.open_line(p, now=T1)
    b1 = book(e, "P1")
    b2 = book(e, "P2", hold=True)
    b3 = book(e, "P3")
    b5 = book(e, "P5")
    for b in (b1, b2, b3, b5):
        assert cover(e, b) == (4000, 2000, None)
    e.events()
    # cancel
    assert e.cancel(b1, account="A-P1", now=T1 + 1).status == St.CANCELLED
    assert cover(e, b1) == (0, 0, None)
    assert money(e, "P1") == (4000, 0, LS.OPEN, 30000, 0, 0)
    assert e.credit.available("P1") == 34000
    # hold expiry (timer)
    assert e.advance(T1 + HOLD) == [ev(EK.HOLD_EXPIRED, T1 + HOLD, "S1", b2, "P2", slot=2)]
    assert cover(e, b2) == (0, 0, None)
    assert money(e, "P2") == (4000, 0, LS.OPEN, 30000, 0, 0)
    # a check-in charges: P5's hold is not released but spent
    e.check_in(b5, now=START)
    assert cover(e, b5) == (0, 0, 6000)
    b4 = book(e, "P4", hold=True, now=END - HOLD // 2)  # still held at the session's end
    assert cover(e, b4) == (4000, 2000, None)
    # SESSION_END: a no-show and an expired hold
    e.events()
    evs = e.advance(END)
    assert sorted((x.kind, x.booking) for x in evs if x.kind in (EK.NO_SHOW, EK.HOLD_EXPIRED)) == [
        (EK.HOLD_EXPIRED, b4), (EK.NO_SHOW, b3)]
    assert e.booking(b3).state == BS.NO_SHOW and e.booking(b4).state == BS.EXPIRED
    for b, p in ((b3, "P3"), (b4, "P4")):
        assert cover(e, b) == (0, 0, None)
        assert money(e, p) == (4000, 0, LS.OPEN, 30000, 0, 0)
    # releases move no money: top-ups and P5's charge only
    assert [(m.patient, m.kind, m.amount) for m in e.credit.movements()] == [
        *[(p, MK.TOP_UP, 4000) for p in ("P1", "P2", "P3", "P4", "P5")],
        ("P5", MK.PAY_BALANCE, 4000), ("P5", MK.PAY_CREDIT, 2000)]
    audit(e)


def test_a_no_show_by_the_grace_scan_releases_the_hold(backend):
    e = make(backend, noshow_release_minutes=15)
    add(e, "S1", capacity=2)
    e.credit.open_line("P1", now=T1)
    b = book(e, "P1")
    assert money(e, "P1") == (0, 0, LS.OPEN, 30000, 0, 6000)
    e.advance(START + 15 * MINUTE)
    assert (e.booking(b).state, e.booking(b).end_reason) == (BS.NO_SHOW, R.SLOT_RELEASED)
    assert cover(e, b) == (0, 0, None)
    assert money(e, "P1") == (0, 0, LS.OPEN, 30000, 0, 0)


def test_suspension_cancel_releases_the_hold(backend):
    e = make(backend, on_suspend="cancel")
    add(e, "S1", capacity=2)
    e.credit.top_up("P1", 1000, now=T1)
    e.credit.open_line("P1", now=T1)
    e.credit.top_up("P2", 9000, now=T1)
    b1, b2 = book(e, "P1"), book(e, "P2", hold=True)
    assert e.suspend("S1", now=T1 + 1) == 2
    assert [(x.kind, x.booking) for x in e.events()][-3:] == [
        (EK.BOOKING_CANCELLED, b1), (EK.BOOKING_CANCELLED, b2), (EK.SESSION_SUSPENDED, None)]
    assert cover(e, b1) == cover(e, b2) == (0, 0, None)
    assert money(e, "P1") == (1000, 0, LS.OPEN, 30000, 0, 0)
    assert money(e, "P2") == (9000, 0, LS.NONE, 0, 0, 0)


def test_suspension_move_carries_the_hold_up_to_the_target_fee(backend):
    e = make(backend, on_suspend="move")
    add(e, "S1", capacity=3)
    add(e, "S2", fee=4000, start=START + DAY)
    add(e, "S3", fee=9000, start=START + 2 * DAY)
    add(e, "S4", fee=3000, start=START + 3 * DAY)
    for p, bal in (("P1", 5000), ("P2", 2000), ("P3", 1000)):
        e.credit.top_up(p, bal, now=T1)
        e.credit.open_line(p, now=T1)
    b1, b2, b3 = book(e, "P1"), book(e, "P2"), book(e, "P3")
    assert [cover(e, b) for b in (b1, b2, b3)] == [
        (5000, 1000, None), (2000, 4000, None), (1000, 5000, None)]
    e.events()
    t = T1 + 10
    assert e.suspend("S1", now=t) == 3
    assert e.events() == [
        ev(EK.BOOKING_MOVED, t, "S2", 3, "P1", b1, slot=1),
        ev(EK.BOOKING_MOVED, t, "S3", 4, "P2", b2, slot=1),
        ev(EK.BOOKING_MOVED, t, "S4", 5, "P3", b3, slot=1),
        ev(EK.SESSION_SUSPENDED, t, "S1", None, None, 3, account=None),
    ]
    for b in (b1, b2, b3):
        assert cover(e, b) == (0, 0, None)
    # min(old total, target fee), the balance part first; the rest released
    assert cover(e, 3) == (4000, 0, None)  # 6000 -> 4000: 1000 balance and 1000 credit released
    assert cover(e, 4) == (2000, 4000, None)  # 9000 > 6000: no new cover is asked
    assert cover(e, 5) == (1000, 2000, None)  # 6000 -> 3000
    assert money(e, "P1") == (5000, 4000, LS.OPEN, 30000, 0, 0)
    assert money(e, "P2") == (2000, 2000, LS.OPEN, 30000, 0, 4000)
    assert money(e, "P3") == (1000, 1000, LS.OPEN, 30000, 0, 2000)
    # the moved hold is charged at check-in like any other
    e.check_in(4, now=START + 2 * DAY)
    assert cover(e, 4) == (0, 0, 6000)
    assert money(e, "P2") == (0, 0, LS.OPEN, 30000, 4000, 0)
    audit(e)


def test_suspension_waitlist_passes_the_hold_to_the_request_and_the_fill(backend):
    e = make(backend, on_suspend="waitlist")
    add(e, "S1", capacity=1)
    add(e, "S2", fee=4000, start=START + DAY)
    e.credit.top_up("P1", 2000, now=T1)
    e.credit.open_line("P1", now=T1)
    e.credit.top_up("P9", 4000, now=T1)
    b1 = book(e, "P1")
    b9 = book(e, "P9", "S2")
    assert cover(e, b1) == (2000, 4000, None)
    e.events()
    t = T1 + 10
    assert e.suspend("S1", now=t) == 1
    assert e.events() == [
        ev(EK.BOOKING_WAITLISTED, t, "S1", b1, "P1", 0, slot=1),
        ev(EK.SESSION_SUSPENDED, t, "S1", None, None, 1, account=None),
    ]
    assert cover(e, b1) == (0, 0, None)
    w = e.waitlist(0)
    assert (w.priority, w.state, w.sessions, w.held) == ("moved", RS.OPEN, ("S2",), 6000)
    assert e.dump()["request_covers"] == [(0, 2000, 4000)]
    assert money(e, "P1") == (2000, 2000, LS.OPEN, 30000, 0, 4000)
    # the fill keeps min(6000, 4000), the balance part first, and releases the rest
    e.cancel(b9, account="A-P9", now=t + 1)
    assert [(x.kind, x.booking, x.detail) for x in e.events()] == [
        (EK.WAITLIST_FILLED, 2, 0)]
    assert cover(e, 2) == (2000, 2000, None)
    assert e.waitlist(0).held == 0
    assert e.dump()["request_covers"] == []
    assert money(e, "P1") == (2000, 2000, LS.OPEN, 30000, 0, 2000)
    assert money(e, "P9") == (4000, 0, LS.NONE, 0, 0, 0)


# -- waitlist holds ----------------------------------------------------------------------


def _two_full(e: Any) -> None:
    add(e, "S2", fee=4000, start=START + DAY)
    add(e, "S3", fee=9000, start=START + 2 * DAY)
    for p, s in (("P8", "S2"), ("P9", "S3")):
        e.credit.top_up(p, 9000, now=T1)
        book(e, p, s)


def test_join_holds_the_largest_candidate_fee_and_a_fill_keeps_its_own(backend):
    e = make(backend)
    _two_full(e)
    e.credit.top_up("P1", 5000, now=T1)
    e.credit.open_line("P1", now=T1)
    r = e.join_waitlist("A-P1", "P1", ["S2", "S3"], deadline=FAR, now=T1 + 1)
    assert (r.status, r.reason, r.request) == (St.WAITLISTED, R.NONE, 0)
    assert e.waitlist(0).held == 9000
    assert e.dump()["request_covers"] == [(0, 5000, 4000)]
    assert money(e, "P1") == (5000, 5000, LS.OPEN, 30000, 0, 4000)
    assert e.credit.available("P1") == 26000
    # S2 frees: the booking holds S2's fee (4000, balance first), the rest is released
    e.events()
    e.cancel(0, account="A-P8", now=T1 + 2)
    assert [(x.kind, x.session, x.booking, x.detail) for x in e.events()] == [
        (EK.WAITLIST_FILLED, "S2", 2, 0)]
    assert cover(e, 2) == (4000, 0, None)
    w = e.waitlist(0)
    assert (w.state, w.held, w.booking) == (RS.FILLED, 0, 2)
    assert money(e, "P1") == (5000, 4000, LS.OPEN, 30000, 0, 0)
    assert e.dump()["request_covers"] == []
    audit(e)


def test_join_without_cover_is_rejected_and_changes_nothing(backend):
    e = make(backend)
    _two_full(e)
    e.credit.top_up("P2", 8999, now=T1)
    r = e.join_waitlist("A-P2", "P2", ["S2", "S3"], deadline=FAR, now=T1)
    assert (r.status, r.reason, r.request, r.session) == (St.REJECTED, R.NO_COVER, None, None)
    before = strip(e)
    r = e.join_waitlist("A-P2", "P2", ["S3", "S2"], deadline=FAR, now=T1 + 1)
    assert (r.status, r.reason, r.request, r.session) == (St.REJECTED, R.NO_COVER, None, None)
    assert strip(e) == before
    # S2 alone (4000) is covered
    r = e.join_waitlist("A-P2", "P2", ["S2"], deadline=FAR, now=T1 + 2)
    assert (r.status, r.request) == (St.WAITLISTED, 0)
    assert money(e, "P2") == (8999, 4000, LS.NONE, 0, 0, 0)
    # allocate checks come first: a session with room is SLOTS_LEFT even without money
    add(e, "S4", fee=7000, start=START + 3 * DAY)
    r = e.join_waitlist("A-P3", "P3", ["S4"], deadline=FAR, now=T1 + 3)
    assert (r.status, r.reason) == (St.REJECTED, R.SLOTS_LEFT)


def test_expiry_and_cancel_release_a_request_hold(backend):
    e = make(backend)
    _two_full(e)
    for p in ("P1", "P2"):
        e.credit.top_up(p, 3000, now=T1)
        e.credit.open_line(p, now=T1)
    r1 = e.join_waitlist("A-P1", "P1", ["S3"], deadline=T1 + DAY, now=T1).request
    r2 = e.join_waitlist("A-P2", "P2", ["S2", "S3"], deadline=FAR, now=T1).request
    assert money(e, "P1") == money(e, "P2") == (3000, 3000, LS.OPEN, 30000, 0, 6000)
    e.events()
    assert e.advance(T1 + DAY) == [ev(EK.WAITLIST_EXPIRED, T1 + DAY, None, None, "P1", r1)]
    assert e.waitlist(r1).held == 0
    assert money(e, "P1") == (3000, 0, LS.OPEN, 30000, 0, 0)
    assert e.cancel_waitlist(r2, account="A-P2", now=T1 + DAY).status == St.CANCELLED
    assert e.waitlist(r2).held == 0
    assert money(e, "P2") == (3000, 0, LS.OPEN, 30000, 0, 0)
    assert e.dump()["request_covers"] == []


# -- charging ------------------------------------------------------------------------------


def test_check_in_charges_the_hold(backend):
    e = make(backend)
    add(e, "S1", capacity=3)
    add(e, "S0", fee=0, start=START)
    e.credit.top_up("P1", 4000, now=T1)
    e.credit.open_line("P1", now=T1)
    e.credit.top_up("P2", 7000, now=T1)
    b1, b2 = book(e, "P1"), book(e, "P2")
    b0 = book(e, "P3", "S0")
    e.events()
    n = e.commands
    r = e.check_in(b1, now=START)
    assert (r.status, r.reason, r.booking, r.slot) == (St.ARRIVED, R.NONE, b1, 1)
    assert e.commands == n + 1
    assert cover(e, b1) == (0, 0, 6000)
    assert e.events() == [ev(EK.BILLED, START, "S1", b1, "P1", 0, slot=1)]
    bill = Bill(0, "P1", b1, 2000, 0, START, START + DUE, BSt.OPEN, None)
    assert e.credit.bill(0) == bill
    assert e.credit.bills("P1") == [bill]
    assert e.credit.statement("P1") == Statement(
        "P1", 0, 0, Line("outpatient", LS.OPEN, 30000, 2000, 0, 28000, 0, 0), (bill,), 2000, 28000)
    assert e.credit.movements(start=2) == [
        Movement(2, n + 1, START, "P1", LA.BALANCE, LA.HOSPITAL, 4000, MK.PAY_BALANCE, b1, None),
        Movement(3, n + 1, START, "P1", LA.CREDIT, LA.HOSPITAL, 2000, MK.PAY_CREDIT, b1, 0),
    ]
    timers = [(due, k, i) for due, _seq, k, i in e.dump()["timers"] if k in (11, 12)]
    assert timers == [(START + DUE - NOTICE, TIMER_BILL_NOTICE, 0),
                      (START + DUE, TIMER_BILL_DUE, 0)]
    # balance only: no bill, no event
    e.check_in(b2, now=START + 1)
    assert cover(e, b2) == (0, 0, 6000)
    assert e.events() == []
    assert money(e, "P2") == (1000, 0, LS.NONE, 0, 0, 0)
    assert e.credit.movements("P2")[-1] == Movement(
        4, n + 2, START + 1, "P2", LA.BALANCE, LA.HOSPITAL, 6000, MK.PAY_BALANCE, b2, None)
    # holding nothing: not charged, stays unsettled (settle may bill it later)
    e.check_in(b0, now=START + 2)
    assert cover(e, b0) == (0, 0, None)
    assert len(e.credit.movements()) == 5
    assert e.credit.totals() == {"external": -11000, "hospital": 12000, "balance": 1000,
                                 "credit": -2000}
    assert len(e.dump()["bills"]) == 1 and len(e.dump()["movements"]) == 5
    # a second charge is a double settlement
    before = frozen(e)
    for b in (b1, b2):
        with pytest.raises(InvalidState):
            e.credit.settle(b, 100, now=START + 3)
    assert frozen(e) == before
    # the unsettled free visit can be settled once
    s = e.credit.settle(b0, 0, now=START + 3)
    assert s == Settlement(True, R.NONE, b0, 0, 0, 0, None)
    assert cover(e, b0) == (0, 0, 0)
    with pytest.raises(InvalidState):
        e.credit.settle(b0, 0, now=START + 4)
    audit(e)


def test_settle_after_the_visit(backend):
    e = make(backend, settle_at="visit")
    add(e, "S1", capacity=4)
    e.credit.top_up("P1", 5000, now=T1)
    e.credit.open_line("P1", now=T1)
    e.credit.top_up("P2", 10000, now=T1)
    e.credit.top_up("P3", 1000, now=T1)
    e.credit.open_line("P3", now=T1)
    e.credit.top_up("P4", 6000, now=T1)
    b1, b2, b3, b4 = (book(e, p) for p in ("P1", "P2", "P3", "P4"))
    for b in (b1, b2, b3, b4):
        assert e.check_in(b, now=START).status == St.ARRIVED
    # arrived but unsettled: the hold stays
    assert cover(e, b1) == (5000, 1000, None)
    assert money(e, "P1") == (5000, 5000, LS.OPEN, 30000, 0, 1000)
    assert len(e.credit.movements()) == 4  # the top-ups
    e.events()
    # a larger bill: the whole balance, then credit
    t = START + HOUR
    n = e.commands
    assert e.credit.settle(b1, 8000, now=t) == Settlement(True, R.NONE, b1, 8000, 5000, 3000, 0)
    assert e.commands == n + 1
    assert cover(e, b1) == (0, 0, 8000)
    assert money(e, "P1") == (0, 0, LS.OPEN, 30000, 3000, 0)
    assert e.credit.bill(0) == Bill(0, "P1", b1, 3000, 0, t, t + DUE, BSt.OPEN, None)
    assert e.events() == [ev(EK.BILLED, t, "S1", b1, "P1", 0, slot=1)]
    assert [(m.command, m.kind, m.amount, m.bill) for m in e.credit.movements(start=4)] == [
        (n + 1, MK.PAY_BALANCE, 5000, None), (n + 1, MK.PAY_CREDIT, 3000, 0)]
    # a smaller bill: the rest of the hold is released
    assert e.credit.settle(b2, 2500, now=t) == Settlement(True, R.NONE, b2, 2500, 2500, 0, None)
    assert money(e, "P2") == (7500, 0, LS.NONE, 0, 0, 0)
    # the default amount is what the booking holds
    assert e.credit.settle(b3, now=t) == Settlement(True, R.NONE, b3, 6000, 1000, 5000, 1)
    assert money(e, "P3") == (0, 0, LS.OPEN, 30000, 5000, 0)
    # no cover: refused, nothing changes (not even the hold)
    before = strip(e)
    s = e.credit.settle(b4, 7000, now=t + 1)
    assert (s.ok, s.reason, s.booking, s.amount, s.bill) == (False, R.NO_COVER, b4, 7000, None)
    assert strip(e) == before
    assert e.now == t + 1
    assert cover(e, b4) == (6000, 0, None)
    e.credit.top_up("P4", 1000, now=t + 2)
    assert e.credit.settle(b4, 7000, now=t + 2) == Settlement(True, R.NONE, b4, 7000, 7000, 0, None)
    assert money(e, "P4") == (0, 0, LS.NONE, 0, 0, 0)
    # a settled booking cannot be settled again
    before = frozen(e)
    with pytest.raises(InvalidState):
        e.credit.settle(b1, 1, now=t + 3)
    with pytest.raises(InvalidState):
        e.credit.settle(b1, now=t + 3)
    assert frozen(e) == before
    audit(e)


def test_settle_needs_an_arrived_booking(backend):
    e = make(backend, settle_at="visit")
    add(e, "S1", capacity=4)
    e.credit.top_up("P1", 50000, now=T1)
    booked = book(e, "P1")
    add(e, "S2", capacity=2, start=START + DAY)
    held = book(e, "P1", "S2", hold=True)
    add(e, "S3", capacity=1, start=START + 2 * DAY)
    gone = book(e, "P1", "S3")
    e.cancel(gone, account="A-P1", now=T1 + 1)
    before = frozen(e)
    for b in (booked, held, gone):
        with pytest.raises(InvalidState):
            e.credit.settle(b, 100, now=T1 + 2)
        with pytest.raises(InvalidState):
            e.credit.settle(b, now=T1 + 2)
    assert frozen(e) == before
    # a no-show is not arrived either
    e.advance(END)
    assert e.booking(booked).state == BS.NO_SHOW
    before = frozen(e)
    with pytest.raises(InvalidState):
        e.credit.settle(booked, 100, now=END)
    assert frozen(e) == before


def test_settle_checks_the_state_before_timers(backend):
    # the booking is BOOKED before the command; SESSION_END (due at `now`) would not make
    # it ARRIVED anyway, and the refusal must not run that timer
    e = make(backend, settle_at="visit")
    add(e, "S1", capacity=1)
    e.credit.top_up("P1", 6000, now=T1)
    b = book(e, "P1")
    before = frozen(e)
    with pytest.raises(InvalidState):
        e.credit.settle(b, 1, now=END)
    assert frozen(e) == before
    assert e.booking(b).state == BS.BOOKED


def test_a_suspended_line_still_pays_what_it_held(backend):
    e = make(backend, settle_at="visit")
    e.credit.open_line("P1", now=T1)
    later = START + 5 * DAY
    add(e, "S1", capacity=1, start=later)
    b = book(e, "P1")  # holds (0, 6000) on credit
    # an overdue bill of another visit suspends the line
    add(e, "V1", fee=3000, start=T1 + HOUR)
    v = book(e, "P1", "V1", now=T1 + HOUR)
    e.check_in(v, now=T1 + HOUR)
    assert e.credit.settle(v, now=T1 + HOUR) == Settlement(True, R.NONE, v, 3000, 0, 3000, 0)
    e.advance(T1 + HOUR + DUE)
    assert e.credit.line("P1") == Line("outpatient", LS.SUSPENDED, 20000, 3000, 6000, 0, 0, 1)
    e.check_in(b, now=later)
    # more than the hold: the suspended line has no free credit
    s = e.credit.settle(b, 6001, now=later)
    assert (s.ok, s.reason, s.bill) == (False, R.CREDIT_SUSPENDED, None)
    assert cover(e, b) == (0, 6000, None)
    # the held amount is still paid by the suspended line
    assert e.credit.settle(b, 6000, now=later) == Settlement(True, R.NONE, b, 6000, 0, 6000, 1)
    assert e.credit.line("P1") == Line("outpatient", LS.SUSPENDED, 20000, 9000, 0, 0, 0, 1)
    audit(e)


# -- bills ---------------------------------------------------------------------------------


def test_bills_notice_overdue_suspend_and_cut_the_limit(backend):
    e = make(backend)
    for p in ("P1", "P2", "P3"):
        e.credit.open_line(p, now=T1)
    e.credit.set_limit("P2", 10000, now=T1)  # at the floor
    add(e, "S1", fee=25000)
    add(e, "S2", fee=2000)
    add(e, "S3", fee=6000)
    b1, b2, b3 = book(e, "P1", "S1"), book(e, "P2", "S2"), book(e, "P3", "S3")
    e.events()
    for b in (b1, b2, b3):
        e.check_in(b, now=START)
    assert e.events() == [ev(EK.BILLED, START, "S1", b1, "P1", 0, slot=1),
                          ev(EK.BILLED, START, "S2", b2, "P2", 1, slot=1),
                          ev(EK.BILLED, START, "S3", b3, "P3", 2, slot=1)]
    # P3 pays on time: no notice, no overdue for a paid bill
    paid = e.credit.repay("P3", 6000, now=START + 1)
    assert paid == [Bill(2, "P3", b3, 6000, 6000, START, START + DUE, BSt.PAID, START + 1)]
    assert e.events() == [ev(EK.BILL_PAID, START + 1, "S3", b3, "P3", 2, slot=1)]
    assert e.credit.line("P3") == Line("outpatient", LS.OPEN, 30000, 0, 0, 30000, 1, 0)
    due = START + DUE
    assert e.advance(due - NOTICE - 1) == []
    assert e.advance(due - NOTICE) == [
        ev(EK.BILL_DUE_SOON, due - NOTICE, "S1", b1, "P1", 0, slot=1),
        ev(EK.BILL_DUE_SOON, due - NOTICE, "S2", b2, "P2", 1, slot=1),
    ]
    assert e.advance(due - 1) == []
    assert e.advance(due) == [
        ev(EK.BILL_OVERDUE, due, "S1", b1, "P1", 0, slot=1),
        line_ev(EK.LIMIT_CHANGED, due, "P1", 25000),  # 30000 - 10000, but never below used
        line_ev(EK.CREDIT_SUSPENDED, due, "P1", 0),
        ev(EK.BILL_OVERDUE, due, "S2", b2, "P2", 1, slot=1),  # at the floor: no change
        line_ev(EK.CREDIT_SUSPENDED, due, "P2", 1),
    ]
    assert e.credit.line("P1") == Line("outpatient", LS.SUSPENDED, 25000, 25000, 0, 0, 0, 1)
    assert e.credit.line("P2") == Line("outpatient", LS.SUSPENDED, 10000, 2000, 0, 0, 0, 1)
    assert e.credit.bill(0).state == BSt.OVERDUE
    assert e.credit.statement("P1").available == 0
    # a suspended line covers nothing: with the balance short it says why
    add(e, "S4", capacity=2, start=due + DAY)
    rejected(e.book("A-P1", "P1", "S4", now=due), R.CREDIT_SUSPENDED)
    e.credit.top_up("P1", 5999, now=due)
    rejected(e.book("A-P1", "P1", "S4", now=due), R.CREDIT_SUSPENDED)
    c = e.credit.check("P1", 6000)
    assert (c.ok, c.reason) == (False, R.CREDIT_SUSPENDED)
    e.credit.top_up("P1", 1, now=due)
    assert cover(e, book(e, "P1", "S4", now=due)) == (6000, 0, None)  # the balance suffices
    # a partial repayment keeps the line suspended
    e.events()
    assert e.credit.repay("P1", 5000, now=due + 1) == []
    assert e.events() == []
    assert e.credit.bill(0) == Bill(0, "P1", b1, 25000, 5000, START, due, BSt.OVERDUE, None)
    assert e.credit.line("P1") == Line("outpatient", LS.SUSPENDED, 25000, 20000, 0, 0, 0, 1)
    # paying it off reinstates the line; a late bill does not count for the streak
    paid = e.credit.repay("P1", 20000, now=due + 2)
    assert paid == [Bill(0, "P1", b1, 25000, 25000, START, due, BSt.PAID, due + 2)]
    assert e.events() == [ev(EK.BILL_PAID, due + 2, "S1", b1, "P1", 0, slot=1),
                          line_ev(EK.CREDIT_REINSTATED, due + 2, "P1")]
    assert e.credit.line("P1") == Line("outpatient", LS.OPEN, 25000, 0, 0, 25000, 0, 0)
    assert [m.kind for m in e.credit.movements("P1")][-2:] == [MK.REPAY, MK.REPAY]
    audit(e)


def test_repay_pays_the_oldest_bills_first_and_reinstates_after_all_overdue(backend):
    e = make(backend)
    e.credit.open_line("P1", now=T1)
    b0 = charge(e, "P1", 3000, "V0", START)
    b1 = charge(e, "P1", 4000, "V1", START + 1)
    b2 = charge(e, "P1", 5000, "V2", START + HOUR)
    e.events()
    d0, d1 = START + DUE, START + 1 + DUE
    evs = e.advance(d1)
    assert [x for x in evs if x.kind != EK.BILL_DUE_SOON] == [
        ev(EK.BILL_OVERDUE, d0, "V0", b0, "P1", 0, slot=1),
        line_ev(EK.LIMIT_CHANGED, d0, "P1", 20000),
        line_ev(EK.CREDIT_SUSPENDED, d0, "P1", 0),
        ev(EK.BILL_OVERDUE, d1, "V1", b1, "P1", 1, slot=1),
        line_ev(EK.LIMIT_CHANGED, d1, "P1", 12000),  # max(10000, floor 10000, used 12000)
    ]
    assert e.credit.line("P1") == Line("outpatient", LS.SUSPENDED, 12000, 12000, 0, 0, 0, 2)
    # oldest first: bill 0 in full, 1000 of bill 1
    t = d1 + 1
    paid = e.credit.repay("P1", 4000, now=t)
    assert [x.id for x in paid] == [0]
    moves = e.credit.movements("P1")
    assert [(m.kind, m.amount, m.bill, m.source, m.target) for m in moves][-2:] == [
        (MK.REPAY, 3000, 0, LA.EXTERNAL, LA.CREDIT), (MK.REPAY, 1000, 1, LA.EXTERNAL, LA.CREDIT)]
    assert [x.paid for x in e.credit.bills("P1")] == [3000, 1000, 0]
    assert e.events() == [ev(EK.BILL_PAID, t, "V0", b0, "P1", 0, slot=1)]  # still one overdue
    assert e.credit.line("P1").state == LS.SUSPENDED
    assert e.credit.line("P1").overdue_bills == 1
    # the last overdue bill paid (and the open one after it): reinstated
    paid = e.credit.repay("P1", 8000, now=t + 1)
    assert [(x.id, x.state, x.paid_at) for x in paid] == [
        (1, BSt.PAID, t + 1), (2, BSt.PAID, t + 1)]
    assert e.events() == [ev(EK.BILL_PAID, t + 1, "V1", b1, "P1", 1, slot=1),
                          line_ev(EK.CREDIT_REINSTATED, t + 1, "P1"),
                          ev(EK.BILL_PAID, t + 1, "V2", b2, "P1", 2, slot=1)]
    assert e.credit.line("P1") == Line("outpatient", LS.OPEN, 12000, 0, 0, 12000, 1, 0)
    # nothing owed: a repayment is refused
    before = frozen(e)
    with pytest.raises(InvalidArgument):
        e.credit.repay("P1", 1, now=t + 2)
    assert frozen(e) == before
    audit(e)


def test_repay_more_than_owed_is_refused(backend):
    e = make(backend)
    e.credit.open_line("P1", now=T1)
    charge(e, "P1", 3000, "V0", START)
    before = frozen(e)
    with pytest.raises(InvalidArgument):
        e.credit.repay("P1", 3001, now=START)
    assert frozen(e) == before
    assert [x.id for x in e.credit.repay("P1", 3000, now=START)] == [0]


def test_on_time_repayments_raise_the_limit_up_to_the_ceiling(backend):
    e = make(backend, credit_raise_after=2)
    e.credit.open_line("P1", now=T1)
    charge(e, "P1", 6000, "V0", START)
    charge(e, "P1", 3000, "V1", START)
    e.events()
    assert len(e.credit.repay("P1", 9000, now=START + 1)) == 2
    assert [(x.kind, x.detail) for x in e.events()] == [
        (EK.BILL_PAID, 0), (EK.BILL_PAID, 1), (EK.LIMIT_CHANGED, 40000)]
    assert e.credit.line("P1") == Line("outpatient", LS.OPEN, 40000, 0, 0, 40000, 0, 0)
    # one on time: the streak is 1, no raise
    charge(e, "P1", 1000, "V2", START + 2)
    e.credit.repay("P1", 1000, now=START + 3)
    assert e.credit.line("P1").on_time_streak == 1
    assert e.credit.line("P1").limit == 40000
    # near the ceiling: one step is capped, then no more change and no event
    assert e.credit.set_limit("P1", 95000, now=START + 3) == 95000
    charge(e, "P1", 1000, "V3", START + 4)
    e.events()
    e.credit.repay("P1", 1000, now=START + 5)
    assert [(x.kind, x.detail) for x in e.events()] == [
        (EK.BILL_PAID, 3), (EK.LIMIT_CHANGED, 100000)]
    charge(e, "P1", 1000, "V4", START + 6)
    charge(e, "P1", 1000, "V5", START + 6)
    e.events()
    e.credit.repay("P1", 2000, now=START + 7)
    assert [(x.kind, x.detail) for x in e.events()] == [(EK.BILL_PAID, 4), (EK.BILL_PAID, 5)]
    assert e.credit.line("P1") == Line("outpatient", LS.OPEN, 100000, 0, 0, 100000, 0, 0)
    # an overdue bill resets the streak
    charge(e, "P1", 1000, "V6", START + 8)
    e.credit.repay("P1", 1000, now=START + 9)
    assert e.credit.line("P1").on_time_streak == 1
    charge(e, "P1", 1000, "V7", START + 10)
    e.advance(START + 10 + DUE)
    assert e.credit.line("P1") == Line("outpatient", LS.SUSPENDED, 90000, 1000, 0, 0, 0, 1)
    audit(e)


def test_raise_after_zero_never_raises(backend):
    e = make(backend, credit_raise_after=0)
    e.credit.open_line("P1", now=T1)
    for i in range(3):
        charge(e, "P1", 1000, f"V{i}", START + i)
        e.credit.repay("P1", 1000, now=START + i)
    assert e.credit.line("P1").limit == 30000
    assert [x.kind for x in e.events()].count(EK.LIMIT_CHANGED) == 0


def test_notice_off(backend):
    e = make(backend, bill_notice_days=0)
    e.credit.open_line("P1", now=T1)
    charge(e, "P1", 1000, "V0", START)
    assert [k for _d, _s, k, _i in e.dump()["timers"] if k in (11, 12)] == [TIMER_BILL_DUE]
    e.events()
    assert [x.kind for x in e.advance(START + DUE)] == [
        EK.BILL_OVERDUE, EK.LIMIT_CHANGED, EK.CREDIT_SUSPENDED]


# -- the line ------------------------------------------------------------------------------


def test_set_limit_never_below_used_and_held(backend):
    e = make(backend)
    add(e, "S1", capacity=1)
    e.credit.open_line("P1", now=T1)
    book(e, "P1")  # 6000 held
    charge(e, "P1", 3000, "V0", START - HOUR)
    e.events()
    assert e.credit.set_limit("P1", 0, now=START - HOUR) == 9000
    assert e.events() == [line_ev(EK.LIMIT_CHANGED, START - HOUR, "P1", 9000)]
    assert e.credit.set_limit("P1", 9000, now=START - HOUR) == 9000
    assert e.events() == []  # unchanged: no event
    assert e.credit.line("P1") == Line("outpatient", LS.OPEN, 9000, 3000, 6000, 0, 0, 0)
    assert e.credit.set_limit("P1", MAX_FEN, now=START - HOUR) == MAX_FEN


def test_set_score_picks_a_tier_within_the_bounds(backend):
    e = make(backend)
    e.credit.open_line("P1", now=T1)
    e.credit.open_line("P2", kind="inpatient", now=T1)
    for score, limit in ((300, 10000), (350, 15000), (549, 15000), (550, 30000), (700, 45000),
                         (749, 45000), (750, 60000), (10_000, 60000), (0, 10000)):
        assert e.credit.set_score("P1", score, now=T1) == limit, score
        assert e.credit.line("P1").limit == limit
    assert e.credit.set_score("P2", 800, now=T1) == 1_000_000
    assert e.credit.set_score("P2", 100, now=T1) == 100_000  # the floor
    e.events()
    assert e.credit.set_score("P2", 100, now=T1) == 100_000
    assert e.events() == []
    # the ceiling
    e2 = make(backend, credit_score_tiers=((0, 50), (600, 1000)))
    e2.credit.open_line("P1", now=T1)
    assert e2.credit.set_score("P1", 600, now=T1) == 100_000
    assert e2.credit.set_score("P1", 599, now=T1) == 15_000
    # never below used + held
    add(e, "S1", capacity=1)
    book(e, "P1")
    e.credit.set_score("P1", 549, now=T1)
    add(e, "S2", fee=9000, start=START + DAY)
    book(e, "P1", "S2")
    assert e.credit.set_score("P1", 0, now=T1) == 15000
    # no line
    e.credit.top_up("P3", 1, now=T1)
    before = frozen(e)
    with pytest.raises(InvalidState):
        e.credit.set_score("P3", 700, now=T1)
    assert frozen(e) == before


def test_open_close_and_reopen(backend):
    e = make(backend)
    assert e.credit.open_line("P1", limit=12345, now=T1) == Line(
        "outpatient", LS.OPEN, 12345, 0, 0, 12345, 0, 0)
    before = frozen(e)
    for kind in ("outpatient", "inpatient"):
        with pytest.raises(InvalidState):
            e.credit.open_line("P1", kind=kind, now=T1)
    assert frozen(e) == before
    # close with a hold on it: refused
    add(e, "S1", capacity=1)
    b = book(e, "P1")
    before = frozen(e)
    with pytest.raises(InvalidState):
        e.credit.close_line("P1", now=T1)
    assert frozen(e) == before
    e.cancel(b, account="A-P1", now=T1)
    assert e.credit.close_line("P1", now=T1) is True
    assert e.credit.line("P1") == Line("outpatient", LS.CLOSED, 12345, 0, 0, 0, 0, 0)
    assert e.credit.available("P1") == 0
    before = frozen(e)
    with pytest.raises(InvalidState):
        e.credit.close_line("P1", now=T1)
    with pytest.raises(InvalidState):
        e.credit.set_limit("P1", 100, now=T1)
    with pytest.raises(InvalidState):
        e.credit.set_score("P1", 700, now=T1)
    assert frozen(e) == before
    # a closed line covers nothing: NO_COVER (not CREDIT_SUSPENDED)
    rejected(e.book("A-P1", "P1", "S1", now=T1), R.NO_COVER)
    # reopened, of another kind, with the kind's start limit
    assert e.credit.open_line("P1", kind="inpatient", now=T1 + 1) == Line(
        "inpatient", LS.OPEN, 500000, 0, 0, 500000, 0, 0)
    # never opened: close and set_limit are refused
    e.credit.top_up("P2", 1, now=T1 + 1)
    before = frozen(e)
    with pytest.raises(InvalidState):
        e.credit.close_line("P2", now=T1 + 1)
    with pytest.raises(InvalidState):
        e.credit.set_limit("P2", 100, now=T1 + 1)
    assert frozen(e) == before
    assert e.credit.line("P2") == NO_LINE
    # a limit of 0 is allowed
    assert e.credit.open_line("P3", limit=0, now=T1 + 1).limit == 0


def test_close_with_debt_and_a_suspended_line_are_refused(backend):
    e = make(backend)
    e.credit.open_line("P1", now=T1)
    charge(e, "P1", 1000, "V0", START)
    before = frozen(e)
    with pytest.raises(InvalidState):
        e.credit.close_line("P1", now=START)
    assert frozen(e) == before
    e.advance(START + DUE)
    assert e.credit.line("P1").state == LS.SUSPENDED
    before = frozen(e)
    with pytest.raises(InvalidState):
        e.credit.close_line("P1", now=START + DUE)
    with pytest.raises(InvalidState):
        e.credit.open_line("P1", now=START + DUE)
    assert frozen(e) == before
    # a suspended line's limit may still be set
    assert e.credit.set_limit("P1", 50000, now=START + DUE) == 50000
    assert e.credit.line("P1").state == LS.SUSPENDED
    e.credit.repay("P1", 1000, now=START + DUE)
    e.credit.close_line("P1", now=START + DUE)
    assert e.credit.line("P1").state == LS.CLOSED


# -- balance -------------------------------------------------------------------------------


def test_refund_pays_out_the_free_balance_only(backend):
    e = make(backend)
    add(e, "S1", capacity=1)
    e.credit.top_up("P1", 10000, now=T1)
    b = book(e, "P1", hold=True)
    assert money(e, "P1") == (10000, 6000, LS.NONE, 0, 0, 0)
    before = frozen(e)
    with pytest.raises(InvalidArgument):  # more than the whole balance
        e.credit.refund("P1", 10001, now=T1)
    assert frozen(e) == before
    n = e.commands
    # more than the free balance: a result, nothing refunded (the command counts)
    assert e.credit.refund("P1", 4001, now=T1) == Cover(False, R.NO_COVER, 0, 0)
    assert e.commands == n + 1 and money(e, "P1") == (10000, 6000, LS.NONE, 0, 0, 0)
    assert e.credit.refund("P1", 4000, now=T1 + 1) == Cover(True, R.NONE, 4000, 0)
    assert e.credit.movements()[-1] == Movement(1, n + 2, T1 + 1, "P1", LA.BALANCE, LA.EXTERNAL,
                                                4000, MK.REFUND, None, None)
    # the free balance is judged after the timers: the hold expiring at `now` is free again
    assert e.credit.refund("P1", 6000, now=T1 + HOLD) == Cover(True, R.NONE, 6000, 0)
    assert e.booking(b).state == BS.EXPIRED
    assert e.credit.totals() == {"external": 0, "hospital": 0, "balance": 0, "credit": 0}
    audit(e)


def test_refund_after_a_ticket_served_by_its_own_timers_took_the_fee(backend):
    # A slow-lane ticket holds nothing while queued; the timers of the refund
    # serve it, and it holds its fee: the refund, valid before the timers,
    # finds the free balance short and refunds nothing (found by the heavy
    # differential run: the books would have gone negative).
    e = make(backend)
    add(e, "S1", capacity=1)
    e.credit.top_up("P1", 6000, now=T1)
    e.flag(account="A-P1", until=T1 + DAY, now=T1)
    r = e.book("A-P1", "P1", "S1", now=T1)
    assert r.status == St.QUEUED
    due = T1 + e.policy.slow_delay_seconds * 1000
    assert e.credit.refund("P1", 6000, now=due) == Cover(False, R.NO_COVER, 0, 0)
    assert e.ticket(r.ticket).state == TS.SERVED
    assert money(e, "P1") == (6000, 6000, LS.NONE, 0, 0, 0)
    audit(e)


def test_top_up_up_to_the_balance_cap(backend):
    e = se.Engine(policy=se.Policy(require_cover=True), backend=backend)
    for i in range(1000):
        e.credit.top_up("P1", MAX_FEN, now=T0)
    assert e.credit.statement("P1").balance == 10**15
    before = frozen(e)
    with pytest.raises(InvalidArgument):
        e.credit.top_up("P1", 1, now=T0)
    assert frozen(e) == before
    e._check_invariants()


# -- ledger, counters, determinism, explain --------------------------------------------------


def _scenario(e: Any) -> None:
    """A bit of everything: top-ups, holds, charges, bills, repayments, a refund."""
    add(e, "S1", capacity=4)
    add(e, "S2", fee=4000, capacity=1, start=START + DAY)
    e.credit.top_up("P1", 4000, now=T1)
    e.credit.open_line("P1", now=T1)
    e.credit.top_up("P2", 20000, now=T1)
    e.credit.open_line("P3", kind="inpatient", now=T1)
    b1, b2, b3 = book(e, "P1"), book(e, "P2", hold=True), book(e, "P3")
    e.confirm(b2, account="A-P2", now=T1 + 1)
    e.credit.top_up("P4", 4000, now=T1 + 1)
    book(e, "P4", "S2", now=T1 + 1)
    e.join_waitlist("A-P3", "P3", ["S2"], deadline=FAR, now=T1 + 2)
    e.cancel(3, account="A-P4", now=T1 + 3)  # P3's request is filled
    e.credit.refund("P2", 10000, now=T1 + 4)
    for b in (b1, b2, b3):
        e.check_in(b, now=START)
    e.credit.repay("P1", 1000, now=START + 1)
    e.advance(START + DUE + DAY)
    e.credit.repay("P1", 1000, now=START + DUE + DAY)
    e.credit.set_score("P3", 700, now=START + DUE + DAY)


def test_ledger_books_balance(backend):
    e = make(backend)
    _scenario(e)
    ms = e.credit.movements()
    assert [(m.patient, m.kind, m.amount) for m in ms] == [
        ("P1", MK.TOP_UP, 4000), ("P2", MK.TOP_UP, 20000), ("P4", MK.TOP_UP, 4000),
        ("P2", MK.REFUND, 10000),
        ("P1", MK.PAY_BALANCE, 4000), ("P1", MK.PAY_CREDIT, 2000),
        ("P2", MK.PAY_BALANCE, 6000), ("P3", MK.PAY_CREDIT, 6000),
        ("P1", MK.REPAY, 1000), ("P1", MK.REPAY, 1000),
    ]
    assert e.credit.totals() == {"external": -20000, "hospital": 18000, "balance": 8000,
                                 "credit": -6000}
    # P1: overdue, cut 30000 -> 20000, suspended, then repaid: reinstated
    assert e.credit.line("P1") == Line("outpatient", LS.OPEN, 20000, 0, 0, 20000, 0, 0)
    # P3: overdue and suspended; its waitlist booking was a no-show (hold released); scored
    assert e.credit.line("P3") == Line("inpatient", LS.SUSPENDED, 750000, 6000, 0, 0, 0, 1)
    assert cover(e, 4) == (0, 0, None) and e.booking(4).state == BS.NO_SHOW
    assert e.waitlist(0).state == RS.FILLED
    audit(e)


def test_commands_are_counted(backend):
    e = se.Engine(policy=se.Policy(require_cover=True, **LEDGER_ONLY), backend=backend)
    assert e.commands == 0
    add(e, "S1", capacity=2)  # add_session takes now
    assert e.commands == 1
    e.credit.top_up("P1", 6000, now=T1)
    assert e.commands == 2
    assert e.credit.movements()[0].command == 2
    rejected(e.book("A-P2", "P2", "S1", now=T1), R.NO_COVER)  # a rejection counts
    assert e.commands == 3
    for bad in (lambda: e.credit.refund("P1", 6001, now=T1),
                lambda: e.credit.top_up("P1", 1, now=T0),
                lambda: e.book("A-P1", "P1", "S1", now=T0),
                lambda: e.credit.bill(0), lambda: e.credit.settle(0, now=T1)):
        with pytest.raises(se.errors.SlotEngineError):
            bad()
    assert e.commands == 3  # a raised error does not
    # introspection does not
    e.credit.statement("P1"), e.credit.check("P1", 1), e.credit.available("P1")
    e.credit.movements(), e.credit.totals(), e.dump(), e.state_hash(), e.session("S1")
    assert e.commands == 3
    book(e, "P1")
    e.advance(T1 + 1)
    assert e.commands == 5
    pat = e.intern_patients(["P1", "P3", "P4"])
    acc = e.intern_accounts(["A-P1", "A-P3", "A-P4"])
    assert e.commands == 5  # interning is not a command
    e.book_many(acc, pat, e.session_ids(["S1"] * 3), e.channel_ids(["app"] * 3), T1 + 2)
    assert e.commands == 8  # one per row
    e.check_in(0, now=START)
    assert [m.command for m in e.credit.movements()] == [2, 9]
    assert e.dump()["ncmd"] == 9


def test_same_seed_and_commands_same_state_on_both_backends():
    hashes = {}
    for backend in BACKENDS:
        for run in range(2):
            e = make(backend, seed=7)
            _scenario(e)
            hashes[backend, run] = (e.state_hash(), e.commands, e.events(),
                                    e.credit.movements(), e.credit.statement("P3"))
    assert len({repr(v) for v in hashes.values()}) == 1, hashes.keys()


def test_explain_shows_the_hold_and_the_charge(backend):
    e = make(backend)
    add(e, "S1", capacity=1)
    e.credit.top_up("P1", 4000, now=T1)
    e.credit.open_line("P1", now=T1)
    b = book(e, "P1")
    text = e.explain(b)
    assert "holds 6000 fen of its fee: 4000 on the prepaid balance, 2000 on credit" in text
    assert "charged" not in text
    e.check_in(b, now=START)
    text = e.explain(b)
    assert "holds" not in text and "charged 6000 fen" in text
    rejected(e.book("A-P2", "P2", "S1", now=START), R.FULL)
    add(e, "S2", capacity=1, start=START + DAY)
    r = e.book("A-P2", "P2", "S2", now=START)
    assert r.reason == R.NO_COVER
    assert "top up the prepaid balance or open a credit line" in e.explain(r)


def test_unknown_bill(backend):
    e = make(backend)
    with pytest.raises(UnknownBill):
        e.credit.bill(0)
    e.credit.open_line("P1", now=T1)
    charge(e, "P1", 1000, "V0", START)
    assert e.credit.bill(0).amount == 1000
    with pytest.raises(UnknownBill):
        e.credit.bill(1)


# -- more edges ------------------------------------------------------------------------------


def test_without_cover_nothing_is_held_and_settle_bills_after_the_visit(backend):
    e = make(backend, require_cover=False)
    add(e, "S1", capacity=3)
    e.credit.top_up("P1", 2000, now=T1)
    e.credit.open_line("P1", now=T1)
    b1 = book(e, "P1")
    b2 = book(e, "P2")  # no money at all: booking needs none
    assert cover(e, b1) == cover(e, b2) == (0, 0, None)
    assert money(e, "P1") == (2000, 0, LS.OPEN, 30000, 0, 0)
    e.check_in(b1, now=START)  # holds nothing: not charged
    assert cover(e, b1) == (0, 0, None)
    assert e.credit.settle(b1, 5000, now=START + 1) == Settlement(True, R.NONE, b1, 5000, 2000,
                                                                  3000, 0)
    assert money(e, "P1") == (0, 0, LS.OPEN, 30000, 3000, 0)
    e.check_in(b2, now=START + 1)
    s = e.credit.settle(b2, 1, now=START + 1)
    assert (s.ok, s.reason, s.bill) == (False, R.NO_COVER, None)
    assert e.credit.settle(b2, 0, now=START + 1) == Settlement(True, R.NONE, b2, 0, 0, 0, None)
    assert e.dump()["covers"] == [(b1, 0, 0, 5000), (b2, 0, 0, 0)]
    audit(e)


def test_a_held_booking_keeps_its_hold_until_confirmed_and_checked_in(backend):
    e = make(backend)
    add(e, "S1", capacity=1)
    e.credit.top_up("P1", 6000, now=T1)
    b = book(e, "P1", hold=True)
    r = e.check_in(b, now=T1 + 1)
    assert (r.status, r.reason) == (St.REJECTED, R.NOT_CONFIRMED)
    assert cover(e, b) == (6000, 0, None)
    assert e.confirm(b, account="A-P1", now=T1 + 2).status == St.BOOKED
    assert cover(e, b) == (6000, 0, None)
    assert e.check_in(b, now=T1 + 3).status == St.ARRIVED
    assert cover(e, b) == (0, 0, 6000)
    assert money(e, "P1") == (0, 0, LS.NONE, 0, 0, 0)


def test_an_arrived_unsettled_booking_survives_suspension_and_session_end(backend):
    e = make(backend, settle_at="visit", on_suspend="cancel")
    add(e, "S1", capacity=2)
    e.credit.top_up("P1", 1000, now=T1)
    e.credit.open_line("P1", now=T1)
    b1 = book(e, "P1")
    e.check_in(b1, now=START)
    assert e.suspend("S1", now=START + 1) == 0
    assert cover(e, b1) == (1000, 5000, None)
    e.advance(END + DAY)
    assert e.booking(b1).state == BS.ARRIVED and cover(e, b1) == (1000, 5000, None)
    assert money(e, "P1") == (1000, 1000, LS.OPEN, 30000, 0, 5000)
    assert e.credit.settle(b1, 4000, now=END + DAY) == Settlement(True, R.NONE, b1, 4000, 1000,
                                                                   3000, 0)
    assert money(e, "P1") == (0, 0, LS.OPEN, 30000, 3000, 0)


def test_free_sessions_need_no_cover_on_join_and_release_everything_on_move(backend):
    e = make(backend, on_suspend="move")
    add(e, "S1", capacity=1)
    add(e, "F1", fee=0, capacity=1, start=START + DAY)
    add(e, "F2", fee=0, capacity=1, start=START + 2 * DAY)
    e.credit.top_up("P1", 2000, now=T1)
    e.credit.open_line("P1", now=T1)
    b1 = book(e, "P1")
    book(e, "P8", "F2")
    assert e.suspend("S1", now=T1 + 1) == 1  # moved to F1: min(6000, 0) = 0 held
    moved = e.live_bookings("P1")[0]
    assert (moved.session, moved.held_balance, moved.held_credit) == ("F1", 0, 0)
    assert cover(e, b1) == (0, 0, None)
    assert money(e, "P1") == (2000, 0, LS.OPEN, 30000, 0, 0)
    # a join for free sessions only holds nothing, even with no money at all
    r = e.join_waitlist("A-P9", "P9", ["F2"], deadline=FAR, now=T1 + 2)
    assert (r.status, r.reason) == (St.WAITLISTED, R.NONE)
    assert e.waitlist(r.request).held == 0


def test_join_with_a_suspended_line_and_a_short_balance_says_so(backend):
    e = make(backend)
    e.credit.open_line("P1", now=T1)
    charge(e, "P1", 1000, "V0", T1)
    e.advance(T1 + DUE)
    assert e.credit.line("P1").state == LS.SUSPENDED
    add(e, "S2", fee=4000, start=START + DAY)
    e.credit.top_up("P8", 4000, now=T1 + DUE)
    book(e, "P8", "S2", now=T1 + DUE)
    r = e.join_waitlist("A-P1", "P1", ["S2"], deadline=FAR, now=T1 + DUE)
    assert (r.status, r.reason, r.request, r.session) == (
        St.REJECTED, R.CREDIT_SUSPENDED, None, None)
    e.credit.top_up("P1", 4000, now=T1 + DUE)
    r = e.join_waitlist("A-P1", "P1", ["S2"], deadline=FAR, now=T1 + DUE)
    assert (r.status, e.waitlist(r.request).held) == (St.WAITLISTED, 4000)
    assert money(e, "P1") == (4000, 4000, LS.SUSPENDED, 20000, 1000, 0)


def test_fast_paths_count_commands_too(backend):
    e = make(backend)
    add(e, "S1", capacity=3)
    e.credit.top_up("P1", 20000, now=T1)
    book(e, "P1")  # registers A-P1
    n = e.commands
    rejected(e.book("A-P1", "P1", "S1", now=T1), R.DUPLICATE_SESSION)  # known ids: fast path
    assert e.commands == n + 1
    e.cancel(0, account="A-P1", now=T1)  # known account, int id, int time: fast path
    assert e.commands == n + 2
    assert cover(e, 0) == (0, 0, None)
    assert e.book("A-P1", "P1", "S1", now=T1).booking == 1
    assert e.commands == n + 3 and cover(e, 1) == (6000, 0, None)


def test_commands_count_backend_commands(backend):
    # Engine.commands counts backend commands: register_patient runs one
    # mark_known per hospital it names (none without follow_up_at).
    e = make(backend)
    n = e.commands
    e.register_patient("P1", now=T1)
    assert e.commands == n
    e.register_patient("P2", follow_up_at=["H1", "H2"], now=T1)
    assert e.commands == n + 2


def test_settle_uses_its_own_hold_and_the_free_balance_not_other_holds(backend):
    e = make(backend, settle_at="visit")
    add(e, "S1", fee=5000)
    add(e, "S2", fee=5000, start=START + DAY)
    e.credit.top_up("P1", 10000, now=T1)
    b1, b2 = book(e, "P1", "S1"), book(e, "P1", "S2")
    assert money(e, "P1") == (10000, 10000, LS.NONE, 0, 0, 0)
    e.check_in(b1, now=START)
    s = e.credit.settle(b1, 8000, now=START)  # S2's 5000 stay held: only 5000 usable
    assert (s.ok, s.reason) == (False, R.NO_COVER)
    assert cover(e, b1) == (5000, 0, None) and cover(e, b2) == (5000, 0, None)
    e.credit.open_line("P1", limit=3000, now=START)
    assert e.credit.settle(b1, 8000, now=START) == Settlement(True, R.NONE, b1, 8000, 5000, 3000, 0)
    assert cover(e, b2) == (5000, 0, None)
    assert money(e, "P1") == (5000, 5000, LS.OPEN, 3000, 3000, 0)
    audit(e)


def test_a_partly_paid_bill_still_gets_its_notice_and_goes_overdue(backend):
    e = make(backend)
    e.credit.open_line("P1", now=T1)
    b = charge(e, "P1", 5000, "V0", START)
    assert e.credit.repay("P1", 4999, now=START) == []
    e.events()
    due = START + DUE
    assert e.advance(due) == [
        ev(EK.BILL_DUE_SOON, due - NOTICE, "V0", b, "P1", 0, slot=1),
        ev(EK.BILL_OVERDUE, due, "V0", b, "P1", 0, slot=1),
        line_ev(EK.LIMIT_CHANGED, due, "P1", 20000),
        line_ev(EK.CREDIT_SUSPENDED, due, "P1", 0),
    ]
    assert e.credit.bill(0) == Bill(0, "P1", b, 5000, 4999, START, due, BSt.OVERDUE, None)


def test_a_moved_request_keeps_a_smaller_hold_when_filled_into_a_dearer_session(backend):
    e = make(backend, on_suspend="waitlist")
    add(e, "S1", capacity=1)
    add(e, "S2", fee=9000, start=START + DAY)
    e.credit.top_up("P1", 6000, now=T1)
    e.credit.top_up("P9", 9000, now=T1)
    b1 = book(e, "P1")
    b9 = book(e, "P9", "S2")
    e.suspend("S1", now=T1 + 1)
    assert e.waitlist(0).held == 6000
    e.cancel(b9, account="A-P9", now=T1 + 2)
    filled = e.live_bookings("P1")[0]
    assert (filled.session, filled.held_balance, filled.held_credit) == ("S2", 6000, 0)
    assert cover(e, b1) == (0, 0, None)
    assert money(e, "P1") == (6000, 6000, LS.NONE, 0, 0, 0)
    e.check_in(filled.id, now=START + DAY)  # charges what it holds, not the session's fee
    assert cover(e, filled.id) == (0, 0, 6000)
    assert money(e, "P1") == (0, 0, LS.NONE, 0, 0, 0)
