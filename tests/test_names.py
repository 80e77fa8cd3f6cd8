"""The compiled core's name indexes (_names.pxi): account and patient names -> ids.

``Engine.book`` and ``Engine.cancel`` are the core's ``book_named`` and
``cancel_named``, which look account and patient names up in the core's own
index of the Engine's names lists, not in the Engine's dicts.  These tests pin
that the index answers exactly as the dicts would: equal strings that are
different objects, names interned in bulk or one by one, tables that grow
through many resizes, non-ASCII names, str subclasses (which take the dict
path), and the index emptied and rebuilt across a snapshot restore.
``cancel_named``'s owner check first compares the name with the key kept in
the owner's account row (ASCII names of at most 26 characters), and uses the
index only when that fails.  The reference backend has no index; where it
matters both backends must agree.
"""
from __future__ import annotations

import numpy as np
import pytest

import slotengine as se
from slotengine import Reason as R
from slotengine import Status as S
from slotengine.errors import InvalidArgument, InvalidType, UnknownAccount, UnknownSession
from slotengine.times import DAY, MINUTE

T0 = 1_700_000_000_000
POLICY = se.Policy(prequeue_minutes=0, cohort_seconds=0, cancel_strikes=0)


def _engine(backend: str = "core", capacity: int = 200) -> se.Engine:
    e = se.Engine(POLICY, seed=1, backend=backend)
    e.add_session("S", hospital="H", department="D", doctor="Dr", starts_at=T0 + 2 * DAY,
                  capacity=capacity, fee=0, release={"app": T0}, now=T0)
    return e


def _fresh(s: str) -> str:
    """An equal str that is a different object (as a host parsing a request makes)."""
    out = "".join(list(s))
    assert out == s and (out is not s or len(s) < 2)
    return out


class _Name(str):
    """A str subclass: never looked up in the index (its hash or eq may differ)."""


@pytest.mark.parametrize("backend", ["core", "reference"])
def test_equal_strings_that_are_other_objects_find_the_same_ids(backend: str) -> None:
    e = _engine(backend)
    first = e.book("acct-1", "patient-1", "S", now=T0 + 1)
    assert first.status == S.BOOKED
    again = e.book(_fresh("acct-1"), _fresh("patient-1"), "S", now=T0 + 2)
    assert again.reason == R.DUPLICATE_SESSION  # the same patient, so found, not new
    assert len(e._patients.names) == 1 and len(e._accounts.names) == 1
    assert e.cancel(first.booking, account=_fresh("acct-1"), now=T0 + 3).status == S.CANCELLED


def test_bulk_intern_is_indexed_at_once_and_names_round_trip() -> None:
    e = _engine(capacity=1000)
    accounts = [f"A{i:05d}" for i in range(3000)]
    patients = [f"P{i:05d}-病人" for i in range(5000)]
    acc = e.intern_accounts(accounts)
    pat = e.intern_patients(patients)
    assert e.memory_usage()["names"] >= 16 * 2 * (3000 + 5000)  # at most half full
    # Every name, as a fresh object, books under its own interned id.
    for k in range(0, 1000):
        r = e.book(_fresh(accounts[k % 3000]), _fresh(patients[k]), "S", now=T0 + 10 + k)
        assert r.status == S.BOOKED, (k, r)
        info = e.booking(r.booking)
        assert (info.account, info.patient) == (accounts[k % 3000], patients[k])
    assert (acc == np.arange(3000)).all() and (pat == np.arange(5000)).all()


def test_names_added_one_by_one_grow_the_index_through_many_resizes() -> None:
    e = _engine(capacity=3000)
    bookings = []
    for k in range(2500):  # 64 -> 8192 slots: seven resizes on each index
        r = e.book(f"a{k}", f"p{k}", "S", now=T0 + 1 + k)
        assert r.status == S.BOOKED
        bookings.append(r.booking)
    # after the growth every old name still finds its own id
    for k in range(0, 2500, 7):
        r = e.cancel(bookings[k], account=_fresh(f"a{k}"), now=T0 + 5000 + k)
        assert r.status == S.CANCELLED, (k, r)
    assert e.cancel(bookings[1], account="a2", now=T0 + 9000).reason == R.NOT_OWNER
    e._check_invariants()


def test_unknown_and_odd_names_take_the_checked_path() -> None:
    e = _engine()
    b = e.book("acct", "pat", "S", now=T0 + 1).booking
    before = e.state_hash()
    with pytest.raises(UnknownAccount):
        e.cancel(b, account="nobody", now=T0 + 2)
    with pytest.raises(InvalidArgument):
        e.cancel(b, account="", now=T0 + 2)
    with pytest.raises(InvalidType):
        e.cancel(b, account=b"acct", now=T0 + 2)  # type: ignore[arg-type]
    assert e.state_hash() == before
    # a str subclass equal to a known name is that account (through the dicts)
    assert e.cancel(b, account=_Name("acct"), now=T0 + 3).status == S.CANCELLED
    r = e.book(_Name("acct"), _Name("pat"), "S", now=T0 + 4)
    assert r.status == S.BOOKED and len(e._patients.names) == 1


def test_index_is_rebuilt_after_a_restore_and_after_open(tmp_path) -> None:
    e = se.Engine.open(tmp_path / "eng", POLICY, seed=1)
    e.add_session("S", hospital="H", department="D", doctor="Dr", starts_at=T0 + 2 * DAY,
                  capacity=50, fee=0, release={"app": T0}, now=T0)
    made = [e.book(f"acct-{k}", f"pat-{k}", "S", now=T0 + 1 + k).booking for k in range(20)]
    e.close()
    e2 = se.Engine.open(tmp_path / "eng")
    try:
        assert e2.cancel(made[3], account=_fresh("acct-3"), now=T0 + MINUTE).status == S.CANCELLED
        assert e2.cancel(made[4], account="acct-5", now=T0 + MINUTE).reason == R.NOT_OWNER
        r = e2.book(_fresh("acct-3"), _fresh("pat-4"), "S", now=T0 + MINUTE + 1)
        assert r.reason == R.DUPLICATE_SESSION  # pat-4 is known after the restart
        assert len(e2._patients.names) == 20
    finally:
        e2.close()


KEY = 26  # _defs.pxi NAME_KEY: the longest account name kept in its row


@pytest.mark.parametrize("backend", ["core", "reference"])
def test_owner_check_by_the_rows_key_and_past_it(backend: str) -> None:
    """Names that fit the row's key, that just miss it, that share its prefix, that
    are not ASCII: each cancel by its owner succeeds, each by another known account
    is NOT_OWNER, each by an unknown name raises with the state unchanged."""
    names = ["a", "x" * KEY, "x" * (KEY + 1), "x" * (KEY - 1) + "y", "x" * (KEY + 1) + "y",
             "账户-1", "acct\u00e9", "y" * 64]
    e = _engine(backend)
    made = {n: e.book(n, f"p-{k}", "S", now=T0 + 1 + k).booking for k, n in enumerate(names)}
    assert all(b is not None for b in made.values())
    t = T0 + 100
    for k, n in enumerate(names):
        other = names[(k + 1) % len(names)]
        assert e.cancel(made[n], account=_fresh(other), now=t).reason == R.NOT_OWNER, n
        before = e.state_hash()
        for stranger in (n[:-1] + "z", n + "z", n.upper() + "?"):
            if stranger not in names:
                with pytest.raises(UnknownAccount):
                    e.cancel(made[n], account=stranger, now=t)
        assert e.state_hash() == before
        assert e.cancel(made[n], account=_fresh(n), now=t).status == S.CANCELLED, n
        t += 1
    if backend == "core":
        e._check_invariants()


def test_row_keys_are_dropped_when_the_names_are_bound_again() -> None:
    """A row's key is a copy of a bound name, never trusted past a new binding: bound
    to other lists, the owner check answers by those lists, even for rows the new
    list does not reach (whose keys would otherwise be stale)."""
    e = _engine(capacity=50)
    b = [e.book(f"acct-{k}", f"pat-{k}", "S", now=T0 + 1 + k).booking for k in range(10)]
    names = [f"acct-{9 - k}" for k in range(5)]  # ids 0..4 renamed, 5..9 nameless
    # (row 7 kept "acct-7", now the name of id 2)
    e._core.bind_names({n: i for i, n in enumerate(names)}, e._patient_ids, e._session_ids,
                       e._channels, e._book_new_ids, e._cancel_checked, names,
                       e._patients.names)
    assert e._core.cancel_named(b[7], account="acct-7", now=T0 + 50).reason == R.NOT_OWNER
    assert e._core.cancel_named(b[0], account="acct-9", now=T0 + 50).status == S.CANCELLED


NI_KEY = 19  # _names.pxi: the longest name kept whole in its index slot


def test_index_keeps_short_names_whole_and_finds_long_ones_by_the_list() -> None:
    """Names of every length around the slot's inline key, ASCII or not, each found
    from a fresh copy; a name one character off (same length, or one longer or
    shorter) is another patient."""
    e = _engine(capacity=200)
    names = ["p", "q" * (NI_KEY - 1), "r" * NI_KEY, "s" * (NI_KEY + 1), "t" * 64, "病人",
             "é" * NI_KEY, "patient-" + "x" * 40 + "-ü"]
    t = T0 + 1
    for n in names:
        assert e.book(f"acct-{n}", n, "S", now=t).status == S.BOOKED, n
        t += 1
    known = len(e._patients.names)
    for n in names:
        r = e.book(_fresh(f"acct-{n}"), _fresh(n), "S", now=t)
        assert r.reason == R.DUPLICATE_SESSION, n  # found: the same patient
        t += 1
    assert len(e._patients.names) == known
    for n in names:
        for other in (n[:-1] + "!", n + "!", n[:-1]):
            if other and other not in names:
                assert e.book(f"acct2-{other}", other, "S", now=t).status == S.BOOKED, other
                t += 1
    e._check_invariants()


def test_session_names_are_indexed_too() -> None:
    """Sessions added after the first booking, equal strings that are other objects,
    a str subclass (the dict path) and an unknown session (the checked path, state
    unchanged) all answer as the Engine's dict would."""
    e = _engine()
    assert e.book("a1", "p1", _fresh("S"), now=T0 + 1).status == S.BOOKED
    for k in range(100):  # the session index grows through a resize
        e.add_session(f"S-{k}", hospital="H", department=f"D{k}", doctor="Dr",
                      starts_at=T0 + 2 * DAY, capacity=5, fee=0, release={"app": T0}, now=T0 + 2)
    r = e.book("a2", "p2", _fresh("S-77"), now=T0 + 3)
    assert r.status == S.BOOKED and e.booking(r.booking).session == "S-77"
    r = e.book("a3", "p3", _Name("S-5"), now=T0 + 4)
    assert r.status == S.BOOKED and e.booking(r.booking).session == "S-5"
    before = e.state_hash()
    with pytest.raises(UnknownSession):
        e.book("a4", "p4", "S-100", now=T0 + 5)
    assert e.state_hash() == before


def test_short_names_hash_by_a_per_core_seed_and_still_agree() -> None:
    """Two engines (two random seeds: the index's layout differs) given the same
    names in the same order give every name the same id, and find each from a fresh
    copy; names that differ in one byte anywhere, or only in length (trailing
    zero-padding in the slot), are told apart."""
    base = [f"{p}{k:06d}" for p in ("A", "AA", "13800", "x" * 12) for k in range(300)]
    tricky = ["0", "00", "000", "a" * NI_KEY, "a" * (NI_KEY - 1), "a" * (NI_KEY - 1) + "b"]
    names = base + tricky
    engines = [_engine(), _engine()]
    for e in engines:
        assert (e.intern_patients(names) == np.arange(len(names))).all()
    for e in engines:
        for k in range(0, len(names), 37):
            r = e.book(_fresh(f"acct-{k}"), _fresh(names[k]), "S", now=T0 + 1 + k)
            assert r.status == S.BOOKED and e.booking(r.booking).patient == names[k], names[k]
        for k, n in enumerate(tricky):
            r = e.book(f"acct-t{k}", _fresh(n), "S", now=T0 + 5000 + k)
            assert e.booking(r.booking).patient == n
        assert len(e._patients.names) == len(names)


def test_bind_names_refuses_lists_of_the_wrong_type_and_changes_nothing() -> None:
    """bind_names takes lists (or None) for the names: anything else is a TypeError,
    raised before the old binding is dropped, so book_named still works after."""
    e = _engine()
    assert e.book("a1", "p1", "S", now=T0 + 1).status == S.BOOKED
    core = e._core
    before = e.state_hash()
    for bad in ({"S": 0}, ("S",), "S"):
        with pytest.raises(TypeError):
            core.bind_names(e._account_ids, e._patient_ids, e._session_ids, e._channels,
                            e._book_new_ids, e._cancel_checked, e._accounts.names,
                            e._patients.names, bad)
    assert e.state_hash() == before
    r = e.book(_fresh("a2"), _fresh("p2"), _fresh("S"), now=T0 + 2)
    assert r.status == S.BOOKED and e.booking(r.booking).session == "S"
