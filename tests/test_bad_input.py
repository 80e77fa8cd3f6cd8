"""Bad input: every public entry point raises the specific typed error and changes nothing.

For each entry point of ``Engine`` (and ``Policy``) we feed wrong types, unknown
ids, out-of-range numbers, time going backwards, naive datetimes, empty,
whitespace-only and control-character ids.  Each case asserts the exact
``slotengine.errors`` class (a ``SlotEngineError``) and that the state hash,
the intern tables and the clock are unchanged afterwards.  Runs on both
backends.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest

import slotengine as se
from slotengine.errors import (
    DuplicateId,
    InvalidArgument,
    InvalidState,
    InvalidType,
    PolicyError,
    SlotEngineError,
    TimeWentBackwards,
    UnknownAccount,
    UnknownBill,
    UnknownBooking,
    UnknownChannel,
    UnknownPatient,
    UnknownRequest,
    UnknownSession,
)
from slotengine.times import DAY, HOUR, MAX_MS

T0 = 1_800_000_000_000
START = T0 // DAY * DAY + 10 * DAY
T1 = T0 + HOUR
NOW = T1 + 1  # the fixture engine's clock
CST = timezone(timedelta(hours=8))
NAIVE = datetime(2027, 1, 15, 18, 0, 1)

# -- value families ----------------------------------------------------------------

#: a string id: wrong types and malformed strings
BAD_ID = [
    (None, InvalidType), (b"P1", InvalidType), (1, InvalidType), (1.0, InvalidType),
    (True, InvalidType), (["P1"], InvalidType), (("P1",), InvalidType),
    ("", InvalidArgument), ("   ", InvalidArgument), ("\u3000", InvalidArgument),
    ("\t\n", InvalidArgument), ("P\x00", InvalidArgument), ("P\n1", InvalidArgument),
    ("张\x1b三", InvalidArgument), ("x" * 257, InvalidArgument),
]
#: a time, by type and range (not relative to the clock)
BAD_MS = [
    (1.8e12, InvalidType), (float(NOW), InvalidType), (True, InvalidType),
    ("2027-01-15", InvalidType), (b"1", InvalidType), ([NOW], InvalidType),
    (Decimal(NOW), InvalidType), (NAIVE, InvalidType),
    (-1, InvalidArgument), (MAX_MS + 1, InvalidArgument), (2**63, InvalidArgument),
    (10**30, InvalidArgument),
]
#: a command's ``now``: also earlier than the clock, as int and as aware datetime
BAD_NOW = BAD_MS + [
    (NOW - 1, TimeWentBackwards), (0, TimeWentBackwards),
    (se.from_ms(NOW - 1, CST), TimeWentBackwards),
]
#: a positive count
BAD_COUNT = [
    (None, InvalidType), (3.0, InvalidType), (True, InvalidType), ("3", InvalidType),
    (b"3", InvalidType), ([3], InvalidType), (Decimal(3), InvalidType),
    (-1, InvalidArgument), (0, InvalidArgument), (2**63, InvalidArgument),
    (10**30, InvalidArgument), (-(2**63), InvalidArgument),
]
#: a booking id (two bookings exist: 0 and 1)
BAD_BOOKING = [
    (None, InvalidType), (0.0, InvalidType), (True, InvalidType), (False, InvalidType),
    ("0", InvalidType), (b"0", InvalidType), ([0], InvalidType),
    (-1, UnknownBooking), (2, UnknownBooking), (2**31, UnknownBooking),
    (2**63, UnknownBooking), (10**30, UnknownBooking),
]
BAD_CHANNEL = [
    (1, InvalidType), (1.0, InvalidType), (True, InvalidType), (b"app", InvalidType),
    (["app"], InvalidType), ("fax", UnknownChannel), ("", UnknownChannel),
    ("APP", UnknownChannel), ("app\x00", UnknownChannel),
]
BAD_SESSION = BAD_ID + [("S9", UnknownSession), ("s1", UnknownSession), ("张三", UnknownSession)]
BAD_HOLD = [(1, InvalidType), (0, InvalidType), (None, InvalidType), ("yes", InvalidType),
            (1.0, InvalidType)]


def _slug(v: object) -> str:
    s = repr(v)
    return s if len(s) <= 24 else s[:21] + "..."


CASES: list = []


def case(name: str, family: list, make_call) -> None:
    """One parametrized case per bad value of ``family`` fed to ``make_call(value)``."""
    for value, exc in family:
        CASES.append(pytest.param(make_call(value), exc, id=f"{name}={_slug(value)}"))


# -- add_session ---------------------------------------------------------------------

ADD = dict(hospital="H1", department="Cardiology", doctor="Dr Li", starts_at=START + DAY,
           capacity=3, fee=6000)


def _add(**kw):
    args = {**ADD, **kw}
    name = args.pop("session", "S2")
    return lambda e: e.add_session(name, **args)


case("add_session.session", BAD_ID + [("S1", DuplicateId)], lambda v: _add(session=v))
for _f in ("hospital", "department", "doctor"):
    case(f"add_session.{_f}", BAD_ID, lambda v, f=_f: _add(**{f: v}))
case("add_session.tier", [(None, InvalidType), (2, InvalidType), (b"expert", InvalidType),
                          ("vip", InvalidArgument), ("Expert", InvalidArgument),
                          ("", InvalidArgument)], lambda v: _add(tier=v))
case("add_session.starts_at", BAD_MS + [(None, InvalidType), (MAX_MS, InvalidArgument)],
     lambda v: _add(starts_at=v))
case("add_session.slot_minutes", BAD_COUNT + [(1441, InvalidArgument)],
     lambda v: _add(slot_minutes=v))
case("add_session.capacity", BAD_COUNT + [(65536, InvalidArgument)], lambda v: _add(capacity=v))
case("add_session.fee", [(60.0, InvalidType), (None, InvalidType), (True, InvalidType),
                         ("6000", InvalidType), (Decimal("60.00"), InvalidType),
                         (-1, InvalidArgument), (10**12 + 1, InvalidArgument),
                         (2**63, InvalidArgument)], lambda v: _add(fee=v))
case("add_session.quotas", [
    ([("app", 3)], InvalidType), ("app", InvalidType), (3, InvalidType),
    ({"nope": 3}, UnknownChannel), ({1: 3}, UnknownChannel), ({"app": 2}, InvalidArgument),
    ({"app": 3.0}, InvalidType), ({"app": "3"}, InvalidType), ({"app": None}, InvalidType),
    ({"app": True, "window": 2}, InvalidType), ({"app": 4, "window": -1}, InvalidArgument),
    ({"app": 2**63}, InvalidArgument), ({"app": 10**30, "window": -(10**30) + 3}, InvalidArgument),
], lambda v: _add(quotas=v))
case("add_session.release", [
    ({"app": 1.0}, InvalidType), ({"app": NAIVE}, InvalidType), ({"app": None}, InvalidType),
    ({"zz": T0}, UnknownChannel), ("T0", InvalidType), ([T0], InvalidType),
    ({"app": -5}, InvalidArgument), ({"app": 10**30}, InvalidArgument),
], lambda v: _add(release=v))
case("add_session.now", BAD_NOW, lambda v: _add(now=v))

# -- book ------------------------------------------------------------------------------

for _who, (_acc, _pat) in {"known": ("A1", "P1"), "new": ("A9", "P9")}.items():
    def _book(acc=_acc, pat=_pat, ses="S1", ch=None, now=NOW, hold=False):
        return lambda e: e.book(acc, pat, ses, ch, now=now, hold=hold)
    case(f"book[{_who}].now", BAD_NOW + [(None, InvalidType)], lambda v, b=_book: b(now=v))
    case(f"book[{_who}].hold", BAD_HOLD, lambda v, b=_book: b(hold=v))
    case(f"book[{_who}].session", BAD_SESSION, lambda v, b=_book: b(ses=v))
    case(f"book[{_who}].channel", BAD_CHANNEL, lambda v, b=_book: b(ch=v))
    case(f"book[{_who}].account", BAD_ID, lambda v, b=_book: b(acc=v))
    case(f"book[{_who}].patient", BAD_ID, lambda v, b=_book: b(pat=v))

# -- confirm, cancel, check_in ---------------------------------------------------------

for _cmd in ("confirm", "cancel"):
    case(f"{_cmd}.booking", BAD_BOOKING,
         lambda v, c=_cmd: lambda e: getattr(e, c)(v, account="A1", now=NOW))
    case(f"{_cmd}.account", BAD_ID + [("nobody", UnknownAccount), ("P1", UnknownAccount)],
         lambda v, c=_cmd: lambda e: getattr(e, c)(1, account=v, now=NOW))
    case(f"{_cmd}.now", BAD_NOW + [(None, InvalidType)],
         lambda v, c=_cmd: lambda e: getattr(e, c)(1, account="A2", now=v))
case("check_in.booking", BAD_BOOKING, lambda v: lambda e: e.check_in(v, now=NOW))
case("check_in.now", BAD_NOW + [(None, InvalidType)], lambda v: lambda e: e.check_in(0, now=v))

# -- book_many and the id helpers --------------------------------------------------------


def _many(acc=(0,), pat=(0,), ses=(0,), ch=(0,), now=NOW, hold=False):
    def call(e):
        return e.book_many(*(np.asarray(x) if isinstance(x, tuple) else x
                             for x in (acc, pat, ses, ch)), now, hold=hold)
    return call


case("book_many.accounts", [
    (None, InvalidType), ([1.0], InvalidType), (["A1"], InvalidType), ([True], InvalidType),
    ([10**30], InvalidType), ("0", InvalidType), (np.array([0.0]), InvalidType),
    ([[0]], InvalidArgument), ((0, 0), InvalidArgument), ([-1], InvalidArgument),
    ([2**40], InvalidArgument), ([2**63], InvalidArgument), ([5], UnknownAccount),
], lambda v: _many(acc=v))
case("book_many.patients", [([None], InvalidType), ([5], UnknownPatient), ((), InvalidArgument)],
     lambda v: _many(pat=v))
case("book_many.sessions", [([1.5], InvalidType), ([1], UnknownSession), ([-2], InvalidArgument)],
     lambda v: _many(ses=v))
case("book_many.channels", [([b"app"], InvalidType), ([6], UnknownChannel), ([2**31], InvalidArgument)],
     lambda v: _many(ch=v))
case("book_many.now", BAD_NOW + [
    (None, InvalidType), (np.array([1.8e12]), InvalidType), (np.array([NOW, NOW]), InvalidArgument),
    (np.array([[NOW]]), InvalidArgument), (np.array([-1]), InvalidArgument),
    (np.array([MAX_MS + 1]), InvalidArgument), (np.array([NOW - 1]), TimeWentBackwards),
], lambda v: _many(now=v))
case("book_many.hold", BAD_HOLD, lambda v: _many(hold=v))
# validated before the first row is booked: a bad second row leaves the first unbooked
_LATER = np.array([NOW + 5, NOW + 5])  # a partial run would move the clock
case("book_many.row2_account", [((0, 5), UnknownAccount)],
     lambda v: _many(acc=v, pat=(0, 1), ses=(0, 0), ch=(0, 0), now=_LATER))
case("book_many.row2_patient", [((0, 7), UnknownPatient)],
     lambda v: _many(acc=(0, 1), pat=v, ses=(0, 0), ch=(0, 0), now=_LATER))
case("book_many.row2_session", [((0, 1), UnknownSession)],
     lambda v: _many(acc=(0, 1), pat=(0, 1), ses=v, ch=(0, 0), now=_LATER))
case("book_many.row2_channel", [((0, 6), UnknownChannel)],
     lambda v: _many(acc=(0, 1), pat=(0, 1), ses=(0, 0), ch=v, now=_LATER))
case("book_many.decreasing_now", [(np.array([NOW + 5, NOW + 4]), TimeWentBackwards)],
     lambda v: _many(acc=(0, 1), pat=(0, 1), ses=(0, 0), ch=(0, 0), now=v))

_NAMES = [(None, InvalidType), (5, InvalidType), ("A9", InvalidType), (b"A9", InvalidType),
          (["A9", None], InvalidType), (["A9", b"x"], InvalidType), (["A9", ["x"]], InvalidType),
          (["A9", ""], InvalidArgument), (["A9", " "], InvalidArgument),
          (["A9", "A\x00"], InvalidArgument)]
case("intern_accounts", _NAMES, lambda v: lambda e: e.intern_accounts(v))
case("reserve", [
    (None, InvalidType), (1.5, InvalidType), ("10", InvalidType), (True, InvalidType),
    (-1, InvalidArgument), (10**8 + 1, InvalidArgument), (2**31, InvalidArgument),
    (2**63, InvalidArgument),
    (10**30, InvalidArgument),
], lambda v: lambda e: e.reserve(v))
case("intern_patients", _NAMES, lambda v: lambda e: e.intern_patients(v))
case("session_ids", [(None, InvalidType), (1, InvalidType), ("S1", InvalidType),
                     (["S1", "S9"], UnknownSession), ([None], InvalidType), ([""], InvalidArgument),
                     ([1], InvalidType), ([b"S1"], InvalidType)],
     lambda v: lambda e: e.session_ids(v))
case("channel_ids", [(None, InvalidType), (1, InvalidType), ("app", InvalidType),
                     (["app", "fax"], UnknownChannel), ([1], InvalidType), ([b"app"], InvalidType)],
     lambda v: lambda e: e.channel_ids(v))

# -- host commands -------------------------------------------------------------------------

case("add_capacity.session", BAD_SESSION, lambda v: lambda e: e.add_capacity(v, 1))
case("add_capacity.n", BAD_COUNT + [(10_001, InvalidArgument)],
     lambda v: lambda e: e.add_capacity("S1", v))
case("add_capacity.channel", BAD_CHANNEL, lambda v: lambda e: e.add_capacity("S1", 1, channel=v))
case("add_capacity.now", BAD_NOW, lambda v: lambda e: e.add_capacity("S1", 1, now=v))
case("suspend.session", BAD_SESSION, lambda v: lambda e: e.suspend(v))
case("suspend.now", BAD_NOW, lambda v: lambda e: e.suspend("S1", now=v))
for _cmd in ("block_slot", "unblock_slot"):
    case(f"{_cmd}.session", BAD_SESSION, lambda v, c=_cmd: lambda e: getattr(e, c)(v, 3))
    case(f"{_cmd}.slot", BAD_COUNT + [(4, InvalidArgument), (65535, InvalidArgument),
                                      (65536, InvalidArgument)],
         lambda v, c=_cmd: lambda e: getattr(e, c)("S1", v))
    case(f"{_cmd}.now", BAD_NOW, lambda v, c=_cmd: lambda e: getattr(e, c)("S1", 3, now=v))
case("register_patient.patient", BAD_ID, lambda v: lambda e: e.register_patient(v))
case("register_patient.follow_up_at", [
    ("H1", InvalidType), (None, InvalidType), (b"H1", InvalidType), ({"H1": 1}, InvalidType),
    (iter(["H1"]), InvalidType), ([None], InvalidType), (["H1", b"H2"], InvalidType),
    (["H1", "H\x00"], InvalidArgument), ([""], InvalidArgument), (["  "], InvalidArgument),
], lambda v: lambda e: e.register_patient("P9", follow_up_at=v))
case("register_patient.now", BAD_NOW,
     lambda v: lambda e: e.register_patient("P9", follow_up_at=["H1"], now=v))
case("advance", BAD_NOW + [(None, InvalidType)], lambda v: lambda e: e.advance(v))

# -- introspection -----------------------------------------------------------------------------

case("session_counts", BAD_SESSION, lambda v: lambda e: e.session_counts(v))
case("session", BAD_SESSION, lambda v: lambda e: e.session(v))
case("booking", BAD_BOOKING, lambda v: lambda e: e.booking(v))
for _cmd in ("live_bookings", "patient_banned_until"):
    case(_cmd, BAD_ID + [("nobody", UnknownPatient), ("A1", UnknownPatient)],
         lambda v, c=_cmd: lambda e: getattr(e, c)(v))
case("explain", [(None, InvalidType), ("0", InvalidType), (True, InvalidType), (1.0, InvalidType),
                 (object(), InvalidType), ([0], InvalidType),
                 (2, UnknownBooking), (-1, UnknownBooking), (2**63, UnknownBooking)],
     lambda v: lambda e: e.explain(v))


# -- waitlist (候补) -------------------------------------------------------------------------------
# Run on the ``wl`` fixture: S1..S4 full (bookings 0..3 of A1..A4/P1..P4), request 0 of A5/P5
# waiting for S1 and S2; Policy.waitlist_candidates = 3.

WL_CASES: list = []


def wl_case(name: str, family: list, make_call) -> None:
    for value, exc in family:
        WL_CASES.append(pytest.param(make_call(value), exc, id=f"{name}={_slug(value)}"))


#: a waitlist request id (one request exists: 0)
BAD_REQUEST = [
    (None, InvalidType), (0.0, InvalidType), (np.float64(0.0), InvalidType), (True, InvalidType),
    (False, InvalidType), ("0", InvalidType), (b"0", InvalidType), ([0], InvalidType),
    (Decimal(0), InvalidType),
    (-1, UnknownRequest), (1, UnknownRequest), (np.int64(7), UnknownRequest),
    (2**31, UnknownRequest), (2**63, UnknownRequest), (-(2**63), UnknownRequest),
    (10**30, UnknownRequest),
]
BAD_SESSIONS = [
    ("S3", InvalidType), (b"S3", InvalidType), (None, InvalidType), (3, InvalidType),
    (3.0, InvalidType), ([None], InvalidType), (["S3", 3], InvalidType), ([0], InvalidType),
    ([b"S3"], InvalidType), ([["S3"]], InvalidType), (["S3", True], InvalidType),
    ([], InvalidArgument), ((), InvalidArgument), (["S1", "S2", "S3", "S4"], InvalidArgument),
    (["S3"] * 9, InvalidArgument), (["S3", "S3"], InvalidArgument),
    (["S3", "S4", "S3"], InvalidArgument), ([""], InvalidArgument), ([" "], InvalidArgument),
    (["S\x00"], InvalidArgument), (["x" * 257], InvalidArgument),
    (["S9"], UnknownSession), (["S3", "S9"], UnknownSession), (["s3"], UnknownSession),
    (["张三"], UnknownSession), (["S9", "S9"], UnknownSession),
    # candidates are an ordered preference: a set has no order (it would follow PYTHONHASHSEED)
    ({"S3"}, InvalidType), (frozenset({"S4"}), InvalidType),
]
BAD_DEADLINE = BAD_MS + [
    (None, InvalidType), (NOW, InvalidArgument), (NOW - 1, InvalidArgument), (0, InvalidArgument),
    (se.from_ms(NOW, CST), InvalidArgument), (MAX_MS + 1, InvalidArgument),
]
BAD_PRIORITY = [
    (1, InvalidType), (0, InvalidType), (True, InvalidType), (1.0, InvalidType),
    (b"public", InvalidType), (["public"], InvalidType), (("public",), InvalidType),
    ("vip", InvalidArgument), ("", InvalidArgument), ("moved", InvalidArgument),
    ("Public", InvalidArgument), ("public ", InvalidArgument), ("公众", InvalidArgument),
]

for _who, (_acc, _pat) in {"known": ("A1", "P1"), "new": ("A9", "P9")}.items():
    def _join(acc=_acc, pat=_pat, ses=("S3", "S4"), deadline=START + 5 * DAY, ch=None,
              prio=None, now=NOW):
        return lambda e: e.join_waitlist(acc, pat, list(ses) if isinstance(ses, tuple) else ses,
                                         deadline=deadline, channel=ch, priority=prio, now=now)
    wl_case(f"join_waitlist[{_who}].account", BAD_ID, lambda v, j=_join: j(acc=v))
    wl_case(f"join_waitlist[{_who}].patient", BAD_ID, lambda v, j=_join: j(pat=v))
    wl_case(f"join_waitlist[{_who}].sessions", BAD_SESSIONS, lambda v, j=_join: j(ses=v))
    wl_case(f"join_waitlist[{_who}].deadline", BAD_DEADLINE, lambda v, j=_join: j(deadline=v))
    wl_case(f"join_waitlist[{_who}].channel", BAD_CHANNEL, lambda v, j=_join: j(ch=v))
    wl_case(f"join_waitlist[{_who}].priority", BAD_PRIORITY, lambda v, j=_join: j(prio=v))
    wl_case(f"join_waitlist[{_who}].now", BAD_NOW + [(None, InvalidType)],
            lambda v, j=_join: j(now=v))
# a tuple of sessions is fine; a deadline as an aware datetime too (see the test below)

wl_case("cancel_waitlist.request", BAD_REQUEST,
        lambda v: lambda e: e.cancel_waitlist(v, account="A5", now=NOW))
wl_case("cancel_waitlist.account", BAD_ID + [("nobody", UnknownAccount), ("P5", UnknownAccount)],
        lambda v: lambda e: e.cancel_waitlist(0, account=v, now=NOW))
wl_case("cancel_waitlist.now", BAD_NOW + [(None, InvalidType)],
        lambda v: lambda e: e.cancel_waitlist(0, account="A5", now=v))
wl_case("waitlist", BAD_REQUEST, lambda v: lambda e: e.waitlist(v))
wl_case("session_waitlist", BAD_SESSION, lambda v: lambda e: e.session_waitlist(v))
wl_case("explain.request", BAD_REQUEST, lambda v: lambda e: e.explain(request=v))
wl_case("explain.two_of", [
    ((0, None, 0), InvalidArgument), ((None, 0, 0), InvalidArgument), ((0, 0, 0), InvalidArgument),
    (("x", None, 0), InvalidArgument), ((None, -1, 99), InvalidArgument),
    ((0, 0, None), InvalidArgument),
], lambda v: lambda e: e.explain(v[0], ticket=v[1], request=v[2]))


# -- the tests -----------------------------------------------------------------------------------

@pytest.fixture
def eng(backend: str) -> se.Engine:
    """An engine with one session, a booking (0, A1/P1) and a hold (1, A2/P2), clock at NOW."""
    e = se.Engine(seed=1, backend=backend)
    e.add_session("S1", hospital="H1", department="Cardiology", doctor="Dr Li", starts_at=START,
                  capacity=3, fee=6000, quotas={"app": 2, "window": 1},
                  release={"app": T0, "window": T0})
    assert e.book("A1", "P1", "S1", now=T1).booking == 0
    assert e.book("A2", "P2", "S1", now=T1, hold=True).booking == 1
    e.advance(NOW)
    return e


def snapshot(e: se.Engine) -> tuple:
    d = e.dump()
    return e.state_hash(), d["names"], e.now, [len(v) for v in d["names"].values()]


@pytest.mark.parametrize("call, exc", CASES)
def test_bad_input_raises_typed_error_and_changes_nothing(eng, call, exc):
    before = snapshot(eng)
    with pytest.raises(exc) as info:
        call(eng)
    assert type(info.value) is exc, repr(info.value)
    assert isinstance(info.value, SlotEngineError)
    assert str(info.value)  # a message for the host
    assert snapshot(eng) == before
    eng._check_invariants()
    # and the engine still works afterwards
    assert eng.book("A3", "P3", "S1", "window", now=NOW).slot == 3


def test_capacity_overflow(backend):
    e = se.Engine(backend=backend)
    e.add_session("S1", hospital="H1", department="Cardiology", doctor="Dr Li", starts_at=START,
                  capacity=3, fee=0)
    for _ in range(6):
        e.add_capacity("S1", 10_000)
    before = snapshot(e)
    with pytest.raises(InvalidArgument) as info:
        e.add_capacity("S1", 5533)
    assert type(info.value) is InvalidArgument
    assert snapshot(e) == before
    assert e.add_capacity("S1", 5532) == 65535
    with pytest.raises(InvalidArgument):
        e.add_capacity("S1", 1)
    assert e.block_slot("S1", 65535)
    e._check_invariants()


def test_add_capacity_to_suspended_session_is_invalid_state(eng):
    eng.suspend("S1")
    before = snapshot(eng)
    with pytest.raises(InvalidState):
        eng.add_capacity("S1", 1)
    assert snapshot(eng) == before


@pytest.mark.parametrize("kw, exc", [
    (dict(policy="strict"), InvalidType), (dict(policy={}), InvalidType),
    (dict(policy=se.Policy), InvalidType), (dict(policy=1), InvalidType),
    (dict(seed=None), InvalidType), (dict(seed=1.0), InvalidType), (dict(seed=True), InvalidType),
    (dict(seed="7"), InvalidType), (dict(seed=b"7"), InvalidType), (dict(seed=[7]), InvalidType),
    (dict(seed=-1), InvalidArgument), (dict(seed=2**64), InvalidArgument),
    (dict(seed=10**30), InvalidArgument),
    (dict(backend="fast"), InvalidArgument), (dict(backend=""), InvalidArgument),
    (dict(backend="Core"), InvalidArgument), (dict(backend=None), InvalidType),
    (dict(backend=["core"]), InvalidType), (dict(backend=b"core"), InvalidType),
])
def test_constructor_bad_input(kw, exc):
    with pytest.raises(exc) as info:
        se.Engine(**kw)
    assert type(info.value) is exc and isinstance(info.value, SlotEngineError)


@pytest.mark.parametrize("seed", [0, 1, 2**63, 2**64 - 1])
def test_constructor_accepts_the_whole_seed_range(backend, seed):
    e = se.Engine(policy=None, seed=seed, backend=backend)
    assert e.dump()["rng"] == seed


def test_unicode_ids_are_valid(backend):
    e = se.Engine(backend=backend)
    e.add_session("心内科-上午", hospital="北京协和医院", department="心内科", doctor="张三 主任",
                  tier="expert", starts_at=START, capacity=2, fee=6000, release={"app": T0})
    e.register_patient("李四", follow_up_at=["北京协和医院"], now=T0)
    r = e.book("账号一", "张三", "心内科-上午", now=T1)
    assert (r.status, r.slot, r.booking) == (se.Status.BOOKED, 1, 0)
    assert e.book("账号一", "李四", "心内科-上午", "app", now=T1).slot == 2
    b = e.booking(0)
    assert (b.patient, b.account, b.session) == ("张三", "账号一", "心内科-上午")
    assert e.session("心内科-上午").doctor == "张三 主任"
    assert [x.id for x in e.live_bookings("张三")] == [0]
    names = e.dump()["names"]
    assert names["patients"] == ["李四", "张三"] and names["accounts"] == ["账号一"]
    assert names["hospitals"] == ["北京协和医院"]
    assert list(e.intern_patients(["张三", "王五"])) == [1, 2]
    assert list(e.session_ids(["心内科-上午"])) == [0]
    assert "张三" in e.explain(0)
    long_id = "号" * 256  # the longest id allowed
    assert e.book(long_id, "王五", "心内科-上午", now=T1).reason == se.Reason.FULL
    e._check_invariants()


POLICY_INT_FIELDS = [
    "utc_offset_minutes", "release_days_default", "release_minute_of_day", "rollover_minutes",
    "session_minutes", "hold_minutes", "cancel_cutoff_minutes", "account_patients",
    "account_window_days", "strike_window_days", "cancel_strikes", "cancel_window_days",
    "waitlist_candidates", "waitlist_per_patient", "waitlist_per_session",
    "noshow_release_minutes",
]


@pytest.mark.parametrize("field", POLICY_INT_FIELDS)
@pytest.mark.parametrize("value, exc", [
    (None, InvalidType), (10.0, InvalidType), (True, InvalidType), ("10", InvalidType),
    (b"10", InvalidType), ([10], InvalidType), (Decimal(10), InvalidType),
    (2**63, PolicyError), (10**30, PolicyError), (-(2**63), PolicyError),
])
def test_policy_int_fields_reject_junk(field, value, exc):
    with pytest.raises(exc) as info:
        se.Policy(**{field: value})
    assert type(info.value) is exc and isinstance(info.value, SlotEngineError)


@pytest.mark.parametrize("field", ["one_per_department_day", "bar_first_visit_expert"])
@pytest.mark.parametrize("value", [None, 1, 0, "yes", b"", [True], 1.0])
def test_policy_bool_fields_reject_junk(field, value):
    with pytest.raises(InvalidType):
        se.Policy(**{field: value})


@pytest.mark.parametrize("kw, exc", [
    (dict(channels=None), PolicyError), (dict(channels="app"), PolicyError),
    (dict(channels=()), PolicyError), (dict(channels=("app", b"x")), PolicyError),
    (dict(channels=("app", "")), PolicyError), (dict(channels=("app", " ")), PolicyError),
    (dict(public_channel=None), PolicyError), (dict(public_channel=b"app"), PolicyError),
    (dict(public_channel=["app"]), PolicyError),
    (dict(release_days=None), InvalidType), (dict(release_days=[("app", 7)]), InvalidType),
    (dict(release_days={"app": 7.0}), PolicyError), (dict(release_days={"app": True}), PolicyError),
    (dict(release_days={"app": 10**30}), PolicyError), (dict(release_days={b"app": 7}), PolicyError),
    (dict(patient_limits=None), InvalidType), (dict(patient_limits="2,1"), InvalidType),
    (dict(patient_limits=((2.0, 1),)), PolicyError), (dict(patient_limits=((2, True),)), PolicyError),
    (dict(patient_limits=((2, 10**30),)), PolicyError), (dict(patient_limits=(None,)), PolicyError),
    (dict(ban_days=None), PolicyError), (dict(ban_days=(30.0,)), PolicyError),
    (dict(ban_days=(True,)), PolicyError), (dict(ban_days=(2**63,)), PolicyError),
    (dict(ban_days="30"), PolicyError),
    (dict(waitlist_classes=None), PolicyError), (dict(waitlist_classes=("a", b"x")), PolicyError),
    (dict(waitlist_classes=("a", None)), PolicyError), (dict(waitlist_classes=("a", " ")), PolicyError),
    (dict(waitlist_class_of_channel="app"), InvalidType),
    (dict(waitlist_class_of_channel={"app": None}), PolicyError),
    (dict(waitlist_class_of_channel={"app": 1}), PolicyError),
    (dict(waitlist_class_of_channel={b"app": "public"}), PolicyError),
    (dict(rerelease_seconds=None), InvalidType), (dict(rerelease_seconds="30,300"), InvalidType),
    (dict(rerelease_seconds=(1.0, 2)), PolicyError), (dict(rerelease_seconds=(True, 2)), PolicyError),
    (dict(rerelease_seconds=(0, 10**30)), PolicyError), (dict(rerelease_seconds=(5, 4)), PolicyError),
    (dict(on_suspend=None), InvalidType), (dict(on_suspend=b"move"), InvalidType),
    (dict(on_suspend="MOVE"), PolicyError), (dict(on_suspend=""), PolicyError),
])
def test_policy_structured_fields_reject_junk(kw, exc):
    with pytest.raises(exc) as info:
        se.Policy(**kw)
    assert type(info.value) is exc and isinstance(info.value, SlotEngineError)


@pytest.fixture
def wl(backend: str) -> se.Engine:
    """Four full sessions S1..S4 (bookings 0..3) and request 0 (A5/P5 for S1, S2); clock at NOW."""
    e = se.Engine(seed=1, backend=backend)
    for i, name in enumerate(["S1", "S2", "S3", "S4"]):
        e.add_session(name, hospital="H1", department="Cardiology", doctor="Dr Li",
                      starts_at=START + i * DAY, capacity=1, fee=6000, release={"app": T0})
        assert e.book(f"A{i + 1}", f"P{i + 1}", name, now=T1).booking == i
    r = e.join_waitlist("A5", "P5", ["S1", "S2"], deadline=START, now=T1)
    assert (r.status, r.request) == (se.Status.WAITLISTED, 0)
    e.advance(NOW)
    return e


@pytest.mark.parametrize("call, exc", WL_CASES)
def test_waitlist_bad_input_raises_typed_error_and_changes_nothing(wl, call, exc):
    before = snapshot(wl)
    with pytest.raises(exc) as info:
        call(wl)
    assert type(info.value) is exc, repr(info.value)
    assert isinstance(info.value, SlotEngineError)
    assert str(info.value)
    assert snapshot(wl) == before
    wl._check_invariants()
    # and the engine still works afterwards
    r = wl.join_waitlist("A6", "P6", ("S3",), deadline=se.from_ms(START + 5 * DAY, CST), now=NOW)
    assert (r.status, r.reason, r.request) == (se.Status.WAITLISTED, se.Reason.NONE, 1)
    assert wl.waitlist(np.int64(1)).sessions == ("S3",)
    assert wl.session_waitlist("S1") == [0]


def test_waitlist_unicode_ids(backend):
    e = se.Engine(backend=backend)
    e.add_session("心内科-上午", hospital="北京协和医院", department="心内科", doctor="张三 主任",
                  starts_at=START, capacity=1, fee=6000, release={"app": T0})
    e.book("账号一", "张三", "心内科-上午", now=T1)
    r = e.join_waitlist("账号二", "李四", ["心内科-上午"], deadline=START, now=T1)
    assert r.status == se.Status.WAITLISTED
    w = e.waitlist(r.request)
    assert (w.account, w.patient, w.sessions) == ("账号二", "李四", ("心内科-上午",))
    assert e.session_waitlist("心内科-上午") == [0]
    assert "李四" in e.explain(request=0)
    e._check_invariants()


# -- credit (先看病后付费) and prepaid balances (储值) -------------------------------------------
# Run on the ``cr`` fixture (Policy.require_cover, settle_at="visit"), clock at NOW:
#   P1: balance 10000, outpatient line; booking 0 (A1, BOOKED) holds (6000, 0): free balance 4000
#   P2: balance 1000, outpatient line; booking 1 (A2, ARRIVED, unsettled) holds (1000, 5000)
#   P3: outpatient line; booking 2 (A3, ARRIVED) settled 6000: bill 0 (6000 owed)
#   P4: balance 500, no line

CR_CASES: list = []
MAX_FEN = 10**12


def cr_case(name: str, family: list, make_call) -> None:
    for value, exc in family:
        CR_CASES.append(pytest.param(make_call(value), exc, id=f"{name}={_slug(value)}"))


#: an amount of fen in 1..MAX_FEN
BAD_FEN = [
    (None, InvalidType), (6000.0, InvalidType), (np.float64(1.0), InvalidType), (True, InvalidType),
    (False, InvalidType), ("6000", InvalidType), (b"1", InvalidType), (Decimal(1), InvalidType),
    ([1], InvalidType), ((1,), InvalidType), (1 + 0j, InvalidType),
    (0, InvalidArgument), (-1, InvalidArgument), (np.int64(0), InvalidArgument),
    (MAX_FEN + 1, InvalidArgument), (2**63 - 1, InvalidArgument), (2**63, InvalidArgument),
    (2**64, InvalidArgument), (10**30, InvalidArgument), (-(2**63), InvalidArgument),
]
#: an amount in 0..MAX_FEN (a limit, a settlement), where None is not a default
BAD_FEN0 = [(v, x) for v, x in BAD_FEN if not (x is InvalidArgument and v == 0)]
#: a known patient
BAD_PATIENT = BAD_ID + [("nobody", UnknownPatient), ("A1", UnknownPatient),
                        ("张三", UnknownPatient), ("p1", UnknownPatient)]
BAD_CR_NOW = BAD_NOW + [(None, InvalidType)]
#: a booking id (three bookings exist: 0, 1, 2)
BAD_CR_BOOKING = [
    (None, InvalidType), (1.0, InvalidType), (True, InvalidType), (False, InvalidType),
    ("1", InvalidType), (b"1", InvalidType), ([1], InvalidType), (Decimal(1), InvalidType),
    (-1, UnknownBooking), (3, UnknownBooking), (np.int64(3), UnknownBooking),
    (2**31, UnknownBooking), (2**63, UnknownBooking), (10**30, UnknownBooking),
]
BAD_BILL = [
    (None, InvalidType), (0.0, InvalidType), (True, InvalidType), (False, InvalidType),
    ("0", InvalidType), (b"0", InvalidType), ([0], InvalidType), (Decimal(0), InvalidType),
    (-1, UnknownBill), (1, UnknownBill), (np.int64(1), UnknownBill), (2**31, UnknownBill),
    (2**63, UnknownBill), (-(2**63), UnknownBill), (10**30, UnknownBill),
]
BAD_KIND = [
    (None, InvalidType), (1, InvalidType), (se.LineKind.OUTPATIENT, InvalidType),
    (b"outpatient", InvalidType), (["outpatient"], InvalidType), (True, InvalidType),
    ("Outpatient", InvalidArgument), ("OUTPATIENT", InvalidArgument), ("", InvalidArgument),
    ("outpatient ", InvalidArgument), ("门诊", InvalidArgument), ("1", InvalidArgument),
]

for _who, _pat in {"known": "P1", "new": "P9"}.items():
    # a new patient is registered only once everything is valid
    cr_case(f"top_up[{_who}].amount", BAD_FEN,
            lambda v, p=_pat: lambda e: e.credit.top_up(p, v, now=NOW))
    cr_case(f"top_up[{_who}].now", BAD_CR_NOW,
            lambda v, p=_pat: lambda e: e.credit.top_up(p, 100, now=v))
    cr_case(f"open_line[{_who}].kind", BAD_KIND,
            lambda v, p=_pat: lambda e: e.credit.open_line(p, kind=v, now=NOW))
    cr_case(f"open_line[{_who}].limit", [(v, x) for v, x in BAD_FEN0 if v is not None],
            lambda v, p=_pat: lambda e: e.credit.open_line(p, limit=v, now=NOW))
    cr_case(f"open_line[{_who}].now", BAD_CR_NOW,
            lambda v, p=_pat: lambda e: e.credit.open_line(p, now=v))
cr_case("top_up.patient", BAD_ID, lambda v: lambda e: e.credit.top_up(v, 100, now=NOW))
cr_case("open_line.patient", BAD_ID, lambda v: lambda e: e.credit.open_line(v, now=NOW))
cr_case("open_line.state", [("P1", InvalidState), ("P2", InvalidState), ("P3", InvalidState)],
        lambda v: lambda e: e.credit.open_line(v, kind="inpatient", now=NOW))

cr_case("refund.patient", BAD_PATIENT, lambda v: lambda e: e.credit.refund(v, 100, now=NOW))
cr_case("refund.amount", BAD_FEN + [(10001, InvalidArgument), (10**12, InvalidArgument)],
        lambda v: lambda e: e.credit.refund("P1", v, now=NOW))
cr_case("refund.amount[P3]", [(1, InvalidArgument)],  # no balance at all
        lambda v: lambda e: e.credit.refund("P3", v, now=NOW))
cr_case("refund.now", BAD_CR_NOW, lambda v: lambda e: e.credit.refund("P1", 100, now=v))

cr_case("close_line.patient", BAD_PATIENT, lambda v: lambda e: e.credit.close_line(v, now=NOW))
# P2 holds credit, P3 owes, P4 never had a line
cr_case("close_line.state", [("P2", InvalidState), ("P3", InvalidState), ("P4", InvalidState)],
        lambda v: lambda e: e.credit.close_line(v, now=NOW))
cr_case("close_line.now", BAD_CR_NOW, lambda v: lambda e: e.credit.close_line("P2", now=v))

cr_case("set_limit.patient", BAD_PATIENT, lambda v: lambda e: e.credit.set_limit(v, 100, now=NOW))
cr_case("set_limit.limit", BAD_FEN0 + [(-5, InvalidArgument)],
        lambda v: lambda e: e.credit.set_limit("P1", v, now=NOW))
cr_case("set_limit.state", [("P4", InvalidState)],
        lambda v: lambda e: e.credit.set_limit(v, 100, now=NOW))
cr_case("set_limit.now", BAD_CR_NOW, lambda v: lambda e: e.credit.set_limit("P1", 100, now=v))

cr_case("set_score.patient", BAD_PATIENT, lambda v: lambda e: e.credit.set_score(v, 700, now=NOW))
cr_case("set_score.score", [
    (None, InvalidType), (700.0, InvalidType), (True, InvalidType), ("700", InvalidType),
    (b"700", InvalidType), ([700], InvalidType), (Decimal(700), InvalidType),
    (-1, InvalidArgument), (10_001, InvalidArgument), (2**63, InvalidArgument),
    (10**30, InvalidArgument),
], lambda v: lambda e: e.credit.set_score("P1", v, now=NOW))
cr_case("set_score.state", [("P4", InvalidState)],
        lambda v: lambda e: e.credit.set_score(v, 700, now=NOW))
cr_case("set_score.now", BAD_CR_NOW, lambda v: lambda e: e.credit.set_score("P1", 700, now=v))

cr_case("repay.patient", BAD_PATIENT, lambda v: lambda e: e.credit.repay(v, 100, now=NOW))
cr_case("repay.amount", BAD_FEN + [(6001, InvalidArgument)],
        lambda v: lambda e: e.credit.repay("P3", v, now=NOW))
cr_case("repay.nothing_owed", [("P1", InvalidArgument), ("P2", InvalidArgument),
                               ("P4", InvalidArgument)],
        lambda v: lambda e: e.credit.repay(v, 1, now=NOW))
cr_case("repay.now", BAD_CR_NOW, lambda v: lambda e: e.credit.repay("P3", 100, now=v))

cr_case("settle.booking", BAD_CR_BOOKING, lambda v: lambda e: e.credit.settle(v, 100, now=NOW))
cr_case("settle.booking[default]", BAD_CR_BOOKING, lambda v: lambda e: e.credit.settle(v, now=NOW))
# (amount None means what the booking holds)
cr_case("settle.amount", [(v, x) for v, x in BAD_FEN0 if v is not None],
        lambda v: lambda e: e.credit.settle(1, v, now=NOW))
cr_case("settle.now", BAD_CR_NOW, lambda v: lambda e: e.credit.settle(1, 100, now=v))
cr_case("settle.now[default]", BAD_CR_NOW, lambda v: lambda e: e.credit.settle(1, now=v))
# booked (not arrived), and already settled
cr_case("settle.state", [(0, InvalidState), (2, InvalidState)],
        lambda v: lambda e: e.credit.settle(v, 100, now=NOW))
cr_case("settle.state[default]", [(0, InvalidState), (2, InvalidState)],
        lambda v: lambda e: e.credit.settle(v, now=NOW))

# arguments are checked left to right, types before values, then now, then the state
_ORDER = [
    (lambda e: e.credit.top_up("", 1.5, now=NOW - 1), InvalidArgument),
    (lambda e: e.credit.top_up("P9", -1, now=1.5), InvalidArgument),
    (lambda e: e.credit.top_up("P9", 1, now=NOW - 1), TimeWentBackwards),
    (lambda e: e.credit.refund("nobody", 1.5, now=NOW - 1), UnknownPatient),
    (lambda e: e.credit.refund("P1", 1.5, now=NOW - 1), InvalidType),
    (lambda e: e.credit.open_line("P9", kind=1, limit=-5, now=NOW - 1), InvalidType),
    (lambda e: e.credit.open_line("P9", kind="x", limit=1.5, now=NOW - 1), InvalidArgument),
    (lambda e: e.credit.open_line("P9", limit=-5, now=1.5), InvalidArgument),
    (lambda e: e.credit.open_line("P1", limit=-5, now=NOW), InvalidArgument),
    (lambda e: e.credit.open_line("P1", now=NOW - 1), TimeWentBackwards),
    (lambda e: e.credit.close_line("P2", now=NOW - 1), TimeWentBackwards),
    (lambda e: e.credit.set_limit("P4", 1.5, now=NOW), InvalidType),
    (lambda e: e.credit.set_limit("P4", 100, now=NOW - 1), TimeWentBackwards),
    (lambda e: e.credit.set_score("P4", 700.0, now=NOW), InvalidType),
    (lambda e: e.credit.set_score("P4", 700, now=NOW - 1), TimeWentBackwards),
    (lambda e: e.credit.repay("nobody", 0, now=NOW), UnknownPatient),
    (lambda e: e.credit.repay("P3", 0, now=NOW - 1), InvalidArgument),
    (lambda e: e.credit.settle(99, 1.5, now=NOW - 1), UnknownBooking),
    (lambda e: e.credit.settle(0, 1.5, now=NOW - 1), InvalidType),
    (lambda e: e.credit.settle(0, -1, now=NOW - 1), InvalidArgument),
    (lambda e: e.credit.settle(0, 1, now=NOW - 1), TimeWentBackwards),
    (lambda e: e.credit.settle(2, now=NOW - 1), TimeWentBackwards),
    (lambda e: e.credit.check("nobody", 0), UnknownPatient),
]
for _i, (_call, _exc) in enumerate(_ORDER):
    CR_CASES.append(pytest.param(_call, _exc, id=f"order[{_i}]"))

# introspection
cr_case("check.patient", BAD_PATIENT, lambda v: lambda e: e.credit.check(v, 100))
cr_case("check.amount", BAD_FEN, lambda v: lambda e: e.credit.check("P1", v))
for _cmd in ("available", "line", "statement", "bills"):
    cr_case(f"{_cmd}.patient", BAD_PATIENT, lambda v, c=_cmd: lambda e: getattr(e.credit, c)(v))
cr_case("bill", BAD_BILL, lambda v: lambda e: e.credit.bill(v))
cr_case("movements.patient", [(v, x) for v, x in BAD_PATIENT if v is not None],
        lambda v: lambda e: e.credit.movements(v))
cr_case("movements.start", [
    (None, InvalidType), (1.0, InvalidType), (True, InvalidType), ("0", InvalidType),
    ([0], InvalidType), (-1, InvalidArgument), (2**63, InvalidArgument), (10**30, InvalidArgument),
], lambda v: lambda e: e.credit.movements(start=v))
cr_case("movements.start[P1]", [(-1, InvalidArgument), (0.0, InvalidType)],
        lambda v: lambda e: e.credit.movements("P1", start=v))


@pytest.fixture
def cr(backend: str) -> se.Engine:
    e = se.Engine(policy=se.Policy(require_cover=True, settle_at="visit"), seed=1, backend=backend)
    e.add_session("S1", hospital="H1", department="Cardiology", doctor="Dr Li", starts_at=START,
                  capacity=4, fee=6000, release={"app": T0})
    for p, bal in (("P1", 10000), ("P2", 1000), ("P3", 0), ("P4", 500)):
        if bal:
            e.credit.top_up(p, bal, now=T1)
        if p != "P4":
            e.credit.open_line(p, now=T1)
    for i in range(3):
        assert e.book(f"A{i + 1}", f"P{i + 1}", "S1", now=T1).booking == i
    e.check_in(1, now=T1)
    e.check_in(2, now=T1)
    assert e.credit.settle(2, 6000, now=T1).bill == 0
    e.advance(NOW)
    assert [e.booking(b).held_balance + e.booking(b).held_credit for b in range(3)] == [
        6000, 6000, 0]
    assert e.credit.available("P1") == 34000 and e.credit.line("P3").used == 6000
    return e


@pytest.mark.parametrize("call, exc", CR_CASES)
def test_credit_bad_input_raises_typed_error_and_changes_nothing(cr, call, exc):
    before = snapshot(cr)
    commands = cr.commands
    statements = [cr.credit.statement(p) for p in ("P1", "P2", "P3", "P4")]
    with pytest.raises(exc) as info:
        call(cr)
    assert type(info.value) is exc, repr(info.value)
    assert isinstance(info.value, SlotEngineError)
    assert str(info.value)
    assert snapshot(cr) == before
    assert cr.commands == commands  # a raised error is not a command
    assert [cr.credit.statement(p) for p in ("P1", "P2", "P3", "P4")] == statements
    cr._check_invariants()
    # and the engine still works afterwards
    assert cr.credit.top_up("P9", 1, now=NOW) == 1
    s = cr.credit.settle(1, now=NOW)
    assert (s.ok, s.from_balance, s.from_credit, s.bill) == (True, 1000, 5000, 1)
    assert [b.id for b in cr.credit.repay("P3", 6000, now=NOW)] == [0]
    cr._check_invariants()


def test_credit_valid_edges(backend):
    """Boundary values that are valid: the largest amounts, np ints, unicode ids, start past the end."""
    e = se.Engine(policy=se.Policy(require_cover=True), backend=backend)
    assert e.credit.top_up("张三", MAX_FEN, now=T0) == MAX_FEN
    assert e.credit.top_up("张三", np.int64(5), now=np.int64(T0)) == MAX_FEN + 5
    assert e.credit.refund("张三", np.int64(5), now=T0).ok
    assert e.credit.statement("张三").balance == MAX_FEN
    assert e.credit.refund("张三", MAX_FEN, now=T0).from_balance == MAX_FEN
    assert e.credit.statement("张三").balance == 0
    line = e.credit.open_line("李四", kind="inpatient", limit=MAX_FEN, now=T0)
    assert (line.kind, line.limit, line.available) == ("inpatient", MAX_FEN, MAX_FEN)
    assert e.credit.set_limit("李四", 0, now=T0) == 0
    assert e.credit.set_score("李四", 10_000, now=T0) == 1_000_000
    assert e.credit.set_score("李四", 0, now=T0) == 100_000
    assert e.credit.check("李四", MAX_FEN).reason == se.Reason.NO_COVER
    assert e.credit.check("李四", 100_000) == se.Cover(True, se.Reason.NONE, 0, 100_000)
    assert e.credit.open_line("王五", limit=0, now=T0).limit == 0
    assert e.credit.movements(start=2**63 - 1) == []
    assert len(e.credit.movements(start=0)) == 4
    assert e.credit.movements("王五") == [] and e.credit.bills("王五") == []
    assert e.credit.statement("王五").line.state == se.LineState.OPEN
    names = e.dump()["names"]["patients"]
    assert names == ["张三", "李四", "王五"]
    assert e.credit.movements("张三")[0].patient == "张三"
    e._check_invariants()


@pytest.mark.parametrize("field", ["credit_raise_after", "bill_due_days", "bill_notice_days"])
@pytest.mark.parametrize("value, exc", [
    (None, InvalidType), (10.0, InvalidType), (True, InvalidType), ("10", InvalidType),
    (b"10", InvalidType), ([10], InvalidType), (Decimal(10), InvalidType),
    (-1, PolicyError), (2**63, PolicyError), (10**30, PolicyError), (-(2**63), PolicyError),
])
def test_policy_credit_int_fields_reject_junk(field, value, exc):
    with pytest.raises(exc) as info:
        se.Policy(**{field: value})
    assert type(info.value) is exc and isinstance(info.value, SlotEngineError)


@pytest.mark.parametrize("value", [None, 1, 0, "yes", b"", [True], 1.0])
def test_policy_require_cover_rejects_junk(value):
    with pytest.raises(InvalidType):
        se.Policy(require_cover=value)


_TERMS = {"outpatient": (30_000, 10_000, 100_000, 10_000),
          "inpatient": (500_000, 100_000, 2_000_000, 100_000)}


def _lines(**kw: object) -> dict:
    return {**_TERMS, **kw}


@pytest.mark.parametrize("kw, exc", [
    (dict(settle_at=None), InvalidType), (dict(settle_at=1), InvalidType),
    (dict(settle_at=b"visit"), InvalidType), (dict(settle_at=["visit"]), InvalidType),
    (dict(settle_at="checkin"), PolicyError), (dict(settle_at="VISIT"), PolicyError),
    (dict(settle_at=""), PolicyError), (dict(settle_at="check_in "), PolicyError),
    (dict(credit_raise_after=1001), PolicyError),
    (dict(bill_due_days=0), PolicyError), (dict(bill_due_days=3661), PolicyError),
    (dict(bill_notice_days=3661), PolicyError),
    (dict(bill_notice_days=30), PolicyError),  # not before the due date (default 30)
    (dict(bill_due_days=5, bill_notice_days=6), PolicyError),
    (dict(credit_lines=None), InvalidType), (dict(credit_lines=list(_TERMS.items())), InvalidType),
    (dict(credit_lines={"outpatient": _TERMS["outpatient"]}), PolicyError),
    (dict(credit_lines=_lines(dental=(1, 1, 1, 1))), PolicyError),
    (dict(credit_lines={}), PolicyError),
    (dict(credit_lines=_lines(outpatient=(1, 1, 1))), InvalidType),
    (dict(credit_lines=_lines(outpatient=None)), InvalidType),
    (dict(credit_lines=_lines(outpatient="30000")), InvalidType),
    (dict(credit_lines=_lines(outpatient=(30000.0, 10000, 100000, 10000))), InvalidType),
    (dict(credit_lines=_lines(outpatient=(30000, True, 100000, 10000))), InvalidType),
    (dict(credit_lines=_lines(outpatient=(30000, 10000, 100000, None))), InvalidType),
    (dict(credit_lines=_lines(outpatient=(5000, 10000, 100000, 10000))), PolicyError),  # start < floor
    (dict(credit_lines=_lines(outpatient=(200000, 10000, 100000, 10000))), PolicyError),  # > ceiling
    (dict(credit_lines=_lines(outpatient=(30000, -1, 100000, 10000))), PolicyError),
    (dict(credit_lines=_lines(outpatient=(30000, 10000, 100000, -1))), PolicyError),
    (dict(credit_lines=_lines(inpatient=(1, 1, 10**12 + 1, 1))), PolicyError),
    (dict(credit_lines=_lines(inpatient=(1, 1, 1, 10**12 + 1))), PolicyError),
    (dict(credit_lines=_lines(inpatient=(2**63, 1, 2**64, 1))), PolicyError),
    (dict(credit_score_tiers=None), InvalidType), (dict(credit_score_tiers="350:50"), InvalidType),
    (dict(credit_score_tiers={(350, 50)}), InvalidType),
    (dict(credit_score_tiers=((350,),)), PolicyError),
    (dict(credit_score_tiers=((350, 50, 1),)), PolicyError),
    (dict(credit_score_tiers=(350, 50)), PolicyError),
    (dict(credit_score_tiers=((350.0, 50),)), PolicyError),
    (dict(credit_score_tiers=((350, True),)), PolicyError),
    (dict(credit_score_tiers=((-1, 50),)), PolicyError),
    (dict(credit_score_tiers=((350, 10_001),)), PolicyError),
    (dict(credit_score_tiers=((10_001, 50),)), PolicyError),
    (dict(credit_score_tiers=((550, 100), (350, 50))), PolicyError),  # must ascend
    (dict(credit_score_tiers=((350, 50), (350, 60))), PolicyError),
])
def test_policy_credit_fields_reject_junk(kw, exc):
    with pytest.raises(exc) as info:
        se.Policy(**kw)
    assert type(info.value) is exc and isinstance(info.value, SlotEngineError)
    assert "Policy." in str(info.value)


@pytest.mark.parametrize("tiers", [(), []])
def test_policy_empty_score_tiers_are_a_policy_error(tiers):
    with pytest.raises(PolicyError):
        se.Policy(credit_score_tiers=tiers)


@pytest.mark.parametrize("kw", [
    dict(require_cover=True), dict(settle_at="visit"), dict(settle_at="check_in"),
    dict(credit_raise_after=0), dict(credit_raise_after=1000),
    dict(bill_due_days=1, bill_notice_days=0), dict(bill_due_days=3660, bill_notice_days=3659),
    dict(credit_lines=_lines(outpatient=(0, 0, 0, 0))),
    dict(credit_lines=_lines(inpatient=[10**12, 10**12, 10**12, 10**12])),
    dict(credit_lines={"inpatient": se.CreditTerms(1, 1, 1, 0), "outpatient": (5, 1, 9, 2)}),
    dict(credit_score_tiers=((0, 0),)), dict(credit_score_tiers=[[10_000, 10_000]]),
])
def test_policy_credit_boundaries_are_accepted(kw, backend):
    p = se.Policy(**kw)
    c = p.compile()
    assert c.cover is p.require_cover and c.settle_at_check_in is (p.settle_at == "check_in")
    assert c.credit_terms == tuple(tuple(p.credit_lines[k]) for k in ("outpatient", "inpatient"))
    assert (c.credit_raise_after, c.bill_due_ms, c.bill_notice_ms) == (
        p.credit_raise_after, p.bill_due_days * DAY, p.bill_notice_days * DAY)
    assert all(type(x) is int for row in c.credit_terms for x in row)
    se.Engine(policy=p, backend=backend)._check_invariants()


def test_policy_credit_defaults_and_copies():
    p = se.Policy()
    assert (p.require_cover, p.settle_at, p.credit_raise_after) == (False, "check_in", 3)
    assert (p.bill_due_days, p.bill_notice_days) == (30, 3)
    assert dict(p.credit_lines) == {"outpatient": se.CreditTerms(30_000, 10_000, 100_000, 10_000),
                                    "inpatient": se.CreditTerms(500_000, 100_000, 2_000_000,
                                                                100_000)}
    assert p.credit_score_tiers == ((350, 50), (550, 100), (650, 150), (750, 200))
    lines = dict(_TERMS)
    q = se.Policy(credit_lines=lines, credit_score_tiers=[[0, 10], [500, 90]])
    lines["outpatient"] = (1, 1, 1, 1)
    assert q.credit_lines["outpatient"] == se.CreditTerms(30_000, 10_000, 100_000, 10_000)
    assert q.credit_score_tiers == ((0, 10), (500, 90))
    with pytest.raises(TypeError):
        q.credit_lines["outpatient"] = (1, 1, 1, 1)  # type: ignore[index]
    c = se.Policy(require_cover=True, settle_at="visit", bill_due_days=10,
                  bill_notice_days=0).compile()
    assert (c.cover, c.settle_at_check_in, c.bill_due_ms, c.bill_notice_ms) == (
        True, False, 10 * DAY, 0)
