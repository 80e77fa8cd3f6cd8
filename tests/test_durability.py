"""Durability (issue 6): Engine.open, the journal, snapshots and recovery.

Every test drives a durable engine (``Engine.open(directory)``) and an
in-memory ``Engine`` with the same policy and seed through the same commands,
and asserts that what the durable one shows after a close and reopen (or after
its files were damaged on purpose) is exactly the in-memory engine's state:
``state_hash()``, the intern tables, bookings, tickets, waitlist requests,
flags with their host notes, money.  Files are read and damaged following the
layout of docs/durability.md (64-byte segment header, then records of
``size, crc, seq, op, flags, nlen``, 8-byte aligned).  Times are fixed int ms.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import slotengine as se
from crash_child import Rush
from crash_child import policy as rush_policy
from slotengine import Status as St
from slotengine.errors import (
    CorruptJournal,
    InvalidArgument,
    InvalidType,
    JournalError,
    JournalWarning,
    PolicyError,
    SlotEngineError,
    UnknownBooking,
    UnknownRequest,
    UnknownTicket,
)
from slotengine.times import DAY, HOUR, MINUTE

T0 = 1_800_000_000_000  # 2027-01-15 16:00 in UTC+8
DAY0 = T0 // DAY * DAY
START = DAY0 + 10 * DAY  # 2027-01-25 08:00 local
T1 = T0 + HOUR
SEED = 7
#: Fees are held at booking (balance first, then credit) and charged by settle.
POLICY = se.Policy(require_cover=True, settle_at="visit", on_suspend="move")
MODES = ["process", "grouped", "fsync", "off"]
SMALL = 64 << 10  # segment_bytes that forces rotation
SEG = re.compile(r"journal-(\d{20})\.sej")
SNAP = re.compile(r"snapshot-(\d{20})\.ses")
HEADER = 64
NOTE_UNICODE = "fraud ring 🚩 — 可疑 \u200b"


# -- a workload with every kind of command, in phases (a reopen may come between) --


def phase_setup(e: se.Engine, ids: dict) -> None:
    t = T1
    common: dict[str, Any] = dict(release={"app": T0}, now=t)
    e.add_session("S1", hospital="H1", department="Cardiology", doctor="Dr Li",
                  starts_at=START, capacity=3, fee=6000, **common)
    e.add_session("S2", hospital="H1", department="Cardiology", doctor="Dr Li",
                  starts_at=START + DAY, capacity=4, fee=6000, **common)
    e.add_session("S3", hospital="H2", department="神经内科", doctor="王医生",
                  starts_at=START + 2 * DAY, capacity=2, fee=3000,
                  release={"app": T1 + 10 * MINUTE}, now=t)
    e.add_session("S4", hospital="H2", department="Neuro", doctor="Dr Z", tier="expert",
                  starts_at=START, capacity=5, fee=10000, quotas={"app": 3, "referral": 2},
                  release={"app": T0, "referral": T0}, now=t)
    e.register_patient("P1", follow_up_at=["H1"], now=t)
    e.register_patient("P2", follow_up_at=["H9"], now=t)  # a hospital with no session yet
    e.intern_accounts(["A1", "A2", "A3"])
    e.intern_patients(["P3", "P4"])
    for k in range(1, 11):
        assert e.credit.top_up(f"P{k}", 20_000, now=t) == 20_000
    e.credit.open_line("P7", now=t)
    e.credit.open_line("张三", kind="inpatient", now=t)


def phase_bookings(e: se.Engine, ids: dict) -> None:
    t = T1 + MINUTE
    r = e.book("A1", "P1", "S1", now=t)
    assert r.status == St.BOOKED
    ids["b_p1"] = r.booking
    r = e.book("A1", "P3", "S1", now=t, hold=True)
    assert r.status == St.HELD
    assert e.confirm(r.booking, account="A1", now=t + 1).status == St.BOOKED
    r = e.book("A2", "P4", "S1", now=t + 2)
    assert r.status == St.BOOKED
    ids["b_p4"] = r.booking
    assert e.book("A3", "P5", "S1", now=t + 3).status == St.REJECTED  # full
    r = e.join_waitlist("A3", "P5", ["S1"], deadline=START, now=t + 4)
    assert r.status == St.WAITLISTED
    ids["r_p5"] = r.request
    assert e.cancel(ids["b_p4"], account="A2", now=t + 5).status == St.CANCELLED
    assert e.waitlist(ids["r_p5"]).booking is not None  # filled from the freed slot
    acc = e.intern_accounts(["A4", "A4"])
    pat = e.intern_patients(["P6", "P7"])
    out = e.book_many(acc, pat, e.session_ids(["S2", "S2"]), e.channel_ids(["app", "app"]),
                      np.array([t + 6, t + 7], dtype=np.int64))
    assert out.status.tolist() == [St.BOOKED, St.BOOKED]
    ids["b_p7"] = int(out.booking[1])
    assert e.add_capacity("S2", 2, now=t + 8) == 6
    assert e.block_slot("S2", 6, now=t + 9) is True
    assert e.unblock_slot("S2", 6, now=t + 10) is True
    assert e.block_slot("S2", 5, now=t + 11) is True
    r = e.book("A9", "张三", "S4", now=t + 12)  # new account, unicode patient, on credit
    assert r.status == St.BOOKED
    assert e.cancel(r.booking, account="A9", now=t + 13).status == St.CANCELLED


def phase_tickets(e: se.Engine, ids: dict) -> None:
    t = T1 + 6 * MINUTE  # S3 releases at T1 + 10 min: its cohort is collecting
    tickets = []
    for acc, pat in (("A5", "P8"), ("A6", "P9"), ("A7", "P10")):
        r = e.book(acc, pat, "S3", now=t)
        assert r.status == St.QUEUED
        tickets.append(r.ticket)
        t += 1
    ids["tickets"] = tickets
    assert e.cancel_ticket(tickets[1], account="A6", now=t).status == St.CANCELLED
    e.advance(T1 + 12 * MINUTE)  # the cohort is drawn and served


def phase_flags(e: se.Engine, ids: dict) -> None:
    t = T1 + 20 * MINUTE
    e.flag(account="A8", until=t + DAY, note=NOTE_UNICODE, now=t)
    e.flag(patient="P11", until=t + DAY, reason="blacklist", now=t)
    e.flag(account="A1", until=t + DAY, note="", now=t + 1)
    e.flag(patient="新病人", until=t + 2 * DAY, note="host note\nsecond line", now=t + 2)
    assert e.unflag(account="A8", now=t + 3) is True
    e.block(patient="P12", until=t + DAY, now=t + 4)
    assert e.unblock(patient="P12", now=t + 5) is True
    e.block(account="A10", until=t + DAY, now=t + 6)
    assert e.import_blacklist([("account", "A11", t + DAY), ("patient", "P13", t + DAY)],
                              now=t + 7) == 2


def phase_credit(e: se.Engine, ids: dict) -> None:
    t = T1 + 30 * MINUTE
    assert e.check_in(ids["b_p1"], now=t).status == St.ARRIVED
    s = e.credit.settle(ids["b_p1"], 5_000, now=t + 1)
    assert s.ok and s.from_balance == 5_000
    assert e.check_in(ids["b_p7"], now=t + 2).status == St.ARRIVED
    s = e.credit.settle(ids["b_p7"], 25_000, now=t + 3)  # more than the balance: billed
    assert s.ok and s.bill is not None
    ids["bill"] = s.bill
    e.credit.repay("P7", 1_000, now=t + 4)
    assert e.credit.set_limit("P7", 50_000, now=t + 5) == 50_000
    e.credit.set_score("P7", 700, now=t + 6)
    assert e.credit.refund("P1", 1_000, now=t + 7).ok
    e.credit.open_line("P20", now=t + 8)
    assert e.credit.close_line("P20", now=t + 9) is True


def phase_later(e: se.Engine, ids: dict) -> None:
    t = T1 + HOUR
    r = e.join_waitlist("A2", "P4", ["S1", "S3"], deadline=START, now=t)
    assert r.status == St.WAITLISTED
    assert e.cancel_waitlist(r.request, account="A2", now=t + 1).status == St.CANCELLED
    r = e.join_waitlist("A2", "P4", ["S1"], deadline=T1 + 2 * HOUR, now=t + 2)
    ids["r_expiring"] = r.request
    assert e.suspend("S2", now=t + 3) >= 1  # Dr Li's bookings move or wait
    e.advance(T1 + 3 * HOUR, drain=False)  # the request expires; events stay pending
    e.book("A1", "P6", "S4", now=T1 + 3 * HOUR + 1, hold=True)
    e.advance(START + 5 * HOUR)  # holds expire, sessions close, no-shows


PHASES: list[Callable[[se.Engine, dict], None]] = [
    phase_setup, phase_bookings, phase_tickets, phase_flags, phase_credit, phase_later]


def _all(get: Callable[[int], Any], unknown: type[BaseException]) -> list:
    out, k = [], 0
    while True:
        try:
            out.append(get(k))
        except unknown:
            return out
        k += 1


def observe(e: se.Engine) -> dict:
    """Everything a host can see of an engine (pending events excepted: draining changes them)."""
    names = e.dump()["names"]
    return dict(
        hash=e.state_hash(),
        names=names,
        commands=e.commands,
        now=e.now,
        sessions=[e.session(s) for s in names["sessions"]],
        counts=[e.session_counts(s) for s in names["sessions"]],
        bookings=_all(e.booking, UnknownBooking),
        tickets=_all(e.ticket, UnknownTicket),
        requests=_all(e.waitlist, UnknownRequest),
        flags=e.flag_log(),
        risk=[e.risk(account=a) for a in names["accounts"]]
        + [e.risk(patient=p) for p in names["patients"]],
        statements=[e.credit.statement(p) for p in names["patients"]],
        movements=e.credit.movements(),
        totals=e.credit.totals(),
    )


def assert_same(durable: se.Engine, memory: se.Engine) -> None:
    got, want = observe(durable), observe(memory)
    for key in want:
        assert got[key] == want[key], key
    durable._check_invariants()


# -- file helpers ----------------------------------------------------------------


def segments(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if SEG.fullmatch(p.name))


def snapshots(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if SNAP.fullmatch(p.name))


def first_seq(p: Path) -> int:
    m = SEG.fullmatch(p.name) or SNAP.fullmatch(p.name)
    assert m
    return int(m.group(1))


def records(path: Path) -> list[tuple[int, int, int]]:
    """(offset, size, seq) of each record of a segment, up to the first zero size."""
    data = path.read_bytes()
    assert data[:8] == b"SLOTJNL1", path
    out, pos = [], HEADER
    while pos + 24 <= len(data):
        size, _crc, seq = struct.unpack_from("<IIQ", data, pos)
        if size == 0:
            break
        assert size % 8 == 0 and size >= 24 and pos + size <= len(data), (path, pos, size)
        out.append((pos, size, seq))
        pos += size
    return out


def all_records(d: Path) -> list[tuple[Path, int, int, int]]:
    return [(p, off, size, seq) for p in segments(d) for off, size, seq in records(p)]


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def dir_state(d: Path) -> dict[str, str]:
    """Name -> content digest of every file in the directory (LOCK excepted)."""
    return {p.name: hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
            for p in sorted(d.iterdir()) if p.is_file() and p.name != "LOCK"}


def open_quiet(d: Path, *args: Any, **kw: Any) -> se.Engine:
    """Engine.open, failing on any warning (a clean directory recovers silently)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return se.Engine.open(d, *args, **kw)


def rush_engines(d: Path, n: int, *, seed: int = 3, close: bool = True, single_last: bool = False,
                 **kw: Any) -> tuple[se.Engine, se.Engine, list[int]]:
    """Run n rush commands on a durable engine and an in-memory one.

    Returns (durable, memory, seqs): seqs[i] is ``journal_seq`` after command i.
    With ``single_last`` it runs on past n until the last command wrote exactly
    one record (so dropping the last record drops exactly the last command).
    The durable engine is closed without a snapshot when ``close``.
    """
    e = se.Engine.open(d, rush_policy(), seed, **kw)
    m = se.Engine(rush_policy(), seed)
    re_, rm = Rush(seed), Rush(seed)
    seqs: list[int] = []
    i = 0
    while i < n or (single_last and (len(seqs) < 2 or seqs[-1] - seqs[-2] != 1)):
        assert re_.step(e, i) == rm.step(m, i)
        seqs.append(e.journal_seq)
        i += 1
    assert e.state_hash() == m.state_hash()
    if close:
        e.close(snapshot=False)
    return e, m, seqs


def prefix(seed: int, n: int) -> se.Engine:
    """An in-memory engine after the first n rush commands."""
    m = se.Engine(rush_policy(), seed)
    Rush(seed).run(m, n)
    return m


# -- open, close, reopen ----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_reopen_after_every_phase_keeps_everything(tmp_path: Path, mode: str) -> None:
    d = tmp_path / "engine"
    m = se.Engine(POLICY, SEED)
    ids: dict = {}
    e = se.Engine.open(d, POLICY, SEED, durability=mode, segment_bytes=1 << 20,
                       group_ms=1, group_records=3)
    assert e.durability == mode
    assert e.journal_seq == 0 and e.commands == 0
    for phase in PHASES:
        phase(e, ids)
        phase(m, dict(ids))
        assert_same(e, m)
        seq = e.journal_seq
        e.close()
        e = open_quiet(d, durability=mode, segment_bytes=1 << 20)
        assert e.policy == POLICY and e.seed == SEED
        assert_same(e, m)
        if mode != "off":
            assert e.journal_seq == seq
    # the flag notes, unicode and all, are in the audit trail
    notes = {(f.key, f.note) for f in e.flag_log() if f.action == "flag"}
    assert ("A8", NOTE_UNICODE) in notes and ("A1", "") in notes
    assert ("新病人", "host note\nsecond line") in notes and ("P11", None) in notes
    assert "张三" in e.dump()["names"]["patients"] and "H9" in e.dump()["names"]["hospitals"]
    # and the reopened engine goes on exactly like the in-memory one
    for x in (e, m):
        r = x.book("A12", "P14", "S4", now=START + 6 * HOUR)
        assert r.status == St.REJECTED
        x.credit.top_up("P14", 500, now=START + 6 * HOUR)
    assert_same(e, m)
    e.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("slotengine")]


@pytest.mark.parametrize("mode", ["process", "grouped", "fsync"])
def test_reopen_without_snapshot_replays_the_journal(tmp_path: Path, mode: str) -> None:
    d = tmp_path / "engine"
    m = se.Engine(POLICY, SEED)
    ids: dict = {}
    e = se.Engine.open(d, POLICY, SEED, durability=mode, segment_bytes=1 << 20)
    for reopen, phase in enumerate(PHASES):
        phase(e, ids)
        phase(m, dict(ids))
        e.close(snapshot=False)
        assert snapshots(d) == []
        e = open_quiet(d, durability=mode, segment_bytes=1 << 20)
        assert_same(e, m)
    e.close(snapshot=False)
    # twice more, nothing in between: the same state, the same sequence number
    for _ in range(2):
        e2 = open_quiet(d)
        assert_same(e2, m)
        assert e2.journal_seq == e.journal_seq
        e2.close(snapshot=False)


def test_switching_durability_modes_between_opens(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    m = se.Engine(POLICY, SEED)
    ids: dict = {}
    plan = [("process", False), ("off", True), ("grouped", False), ("fsync", True),
            ("off", True), ("process", False)]
    e = se.Engine.open(d, POLICY, SEED, durability="process")
    for (mode, snap), phase in zip(plan, PHASES):
        phase(e, ids)
        phase(m, dict(ids))
        e.close(snapshot=snap)
        e = open_quiet(d, durability=mode)
        assert e.durability == mode
        assert_same(e, m)
    e.close(snapshot=False)
    e = open_quiet(d)
    assert_same(e, m)
    e.close()


def test_snapshot_then_more_commands_then_reopen(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    m = se.Engine(POLICY, SEED)
    ids: dict = {}
    e = se.Engine.open(d, POLICY, SEED, segment_bytes=1 << 20)
    for phase in PHASES[:3]:
        phase(e, ids)
        phase(m, dict(ids))
    path = Path(e.snapshot())
    assert path.parent == d and SNAP.fullmatch(path.name)
    assert first_seq(path) == e.journal_seq
    for phase in PHASES[3:]:
        phase(e, ids)
        phase(m, dict(ids))
    e.close(snapshot=False)
    e = open_quiet(d)
    assert_same(e, m)
    e.close(snapshot=False)
    e = open_quiet(d)
    assert_same(e, m)
    e.close()


def test_open_reports_where_it_is(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    with se.Engine.open(d, POLICY, SEED) as e:
        assert e.durability == "process"
        assert d.is_dir() and (d / "manifest.json").is_file()
        assert len(segments(d)) == 1
        seg = segments(d)[0]
        assert seg.read_bytes()[:8] == b"SLOTJNL1" and first_seq(seg) == 1
        assert seg.stat().st_size == 64 << 20  # preallocated at the default segment_bytes
        phase_setup(e, {})
        n = e.journal_seq
        assert n >= e.commands  # one record per command, more for names and hospitals
        assert [seq for _, _, _, seq in all_records(d)] == list(range(1, n + 1))
    assert e.durability == "process"  # closed, still says what it was
    mem = se.Engine(POLICY, SEED)
    assert mem.durability is None and mem.journal_seq == 0


# -- snapshots and segments ------------------------------------------------------------


def test_many_snapshots_keep_the_two_newest(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    e, m, _ = rush_engines(d, 0, close=False, segment_bytes=SMALL)
    rush, n = Rush(3), 0
    made = []
    for _ in range(6):
        n += 500
        rush.run(e, n)
        made.append(Path(e.snapshot()))
        kept = snapshots(d)
        assert kept == sorted(made[-2:])
        old = first_seq(kept[0])
        segs = segments(d)
        # the segment with the older snapshot's next record is still there ...
        assert first_seq(segs[0]) <= old + 1
        # ... and every segment before it (all of its records covered) is gone
        for a, b in zip(segs, segs[1:]):
            assert first_seq(b) - 1 > old, (a.name, b.name, old)
    assert len(made) == len(set(made))
    Rush(3).run(m, n)
    e.close(snapshot=False)
    e = open_quiet(d)
    assert_same(e, m)
    e.close()


def test_small_segments_rotate_and_recover(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    e, m, seqs = rush_engines(d, 3000, segment_bytes=SMALL)
    segs = segments(d)
    assert len(segs) >= 3
    firsts = [first_seq(p) for p in segs]
    assert firsts[0] == 1 and firsts == sorted(firsts)
    for p in segs[:-1]:  # preallocated; the last one may be trimmed to its records at close
        assert p.stat().st_size == SMALL
    assert segs[-1].stat().st_size <= SMALL
    for p in segs:
        assert p.read_bytes()[:8] == b"SLOTJNL1"
    recs = all_records(d)
    assert [seq for *_, seq in recs] == list(range(1, seqs[-1] + 1))
    for p, nxt in zip(segs, segs[1:]):  # each segment starts where the previous one ended
        assert records(p)[-1][2] + 1 == first_seq(nxt) == records(nxt)[0][2]
    e = open_quiet(d, segment_bytes=SMALL)
    assert_same(e, m)
    assert e.journal_seq == seqs[-1]
    e.close(snapshot=False)
    e = open_quiet(d)
    assert_same(e, m)
    e.close()


def test_bad_newest_snapshot_falls_back_to_the_older_one(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    e, m, _ = rush_engines(d, 0, close=False, segment_bytes=SMALL)
    rush = Rush(3)
    rush.run(e, 600)
    older = Path(e.snapshot())
    rush.run(e, 1200)
    newer = Path(e.snapshot())
    rush.run(e, 1500)
    Rush(3).run(m, 1500)
    e.close(snapshot=False)
    assert snapshots(d) == [older, newer]
    flip(newer, newer.stat().st_size // 2)  # a byte of the body: its CRC no longer matches
    with pytest.warns(JournalWarning, match=re.escape(newer.name)):
        e = se.Engine.open(d)
    assert_same(e, m)
    e.close(snapshot=False)


def test_truncated_newest_snapshot_falls_back(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    e, m, _ = rush_engines(d, 0, close=False)
    rush = Rush(3)
    rush.run(e, 300)
    e.snapshot()
    rush.run(e, 600)
    newer = Path(e.snapshot())
    rush.run(e, 700)
    Rush(3).run(m, 700)
    e.close(snapshot=False)
    with open(newer, "r+b") as f:
        f.truncate(newer.stat().st_size - 100)
    with pytest.warns(JournalWarning):
        e = se.Engine.open(d)
    assert_same(e, m)
    e.close(snapshot=False)


@pytest.mark.parametrize("part", ["core", "facade"])
def test_newest_snapshot_that_does_not_load_falls_back(tmp_path: Path, part: str) -> None:
    """A snapshot whose checksums are right but whose core (or facade) part is refused
    (another build's layout, a bug): warned about, and the older one + journal used."""
    from slotengine.journal import Journal

    d = tmp_path / "engine"
    e, m, _ = rush_engines(d, 0, close=False)
    rush = Rush(3)
    rush.run(e, 300)
    e.snapshot()
    rush.run(e, 600)
    seq = e.journal_seq
    core, facade = e._core.snapshot(), e._facade_bytes()
    rush.run(e, 700)
    Rush(3).run(m, 700)
    e.close(snapshot=False)
    j = Journal(d)  # rewrite the newest snapshot, well checksummed, with one part bad
    j.settle_manifest(None, None)
    if part == "core":
        core = core[:8] + b"\xff" * 8 + core[16:]   # the core's own header: refused
    else:
        facade = b"not a pickle"
    path = j.write_snapshot(seq, core, facade)
    j.close()
    with pytest.warns(JournalWarning, match=re.escape(path.name)):
        e = se.Engine.open(d)
    assert_same(e, m)
    e.close(snapshot=False)


# -- manifest, lock, closed engine ---------------------------------------------------------


def test_reopen_with_another_policy_or_seed_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    e = se.Engine.open(d, POLICY, SEED)
    phase_setup(e, {})
    want = e.state_hash()
    e.close()
    before = dir_state(d)
    with pytest.raises(PolicyError):
        se.Engine.open(d, se.Policy(), SEED)
    with pytest.raises(PolicyError):
        se.Engine.open(d, POLICY, SEED + 1)
    with pytest.raises(PolicyError):
        se.Engine.open(d, None, 0)
    with pytest.raises(PolicyError):
        se.Engine.open(d, se.Policy(hold_minutes=11), None)
    assert dir_state(d) == before
    for policy, seed in ((None, None), (POLICY, None), (None, SEED), (POLICY, SEED)):
        e = open_quiet(d, policy, seed)
        assert e.policy == POLICY and e.seed == SEED and e.state_hash() == want
        e.close()


def test_new_directory_defaults(tmp_path: Path) -> None:
    d = tmp_path / "fresh"
    e = se.Engine.open(d)
    assert e.policy == se.Policy() and e.seed == 0
    e.close()
    with pytest.raises(PolicyError):
        se.Engine.open(d, POLICY)


def test_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    e = se.Engine.open(d, POLICY, SEED)
    phase_setup(e, {})
    with pytest.raises(JournalError):
        se.Engine.open(d)
    with pytest.raises(JournalError):
        se.Engine.open(d, POLICY, SEED, durability="off")
    # from another process too
    code = ("import slotengine as se, sys\n"
            "from slotengine.errors import JournalError\n"
            "try:\n se.Engine.open(sys.argv[1])\n"
            "except JournalError:\n sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, timeout=60)
    assert out.returncode == 3, out.stderr.decode()
    # the first engine is untouched and goes on
    phase_bookings(e, {})
    want = e.state_hash()
    e.close()
    e = open_quiet(d)
    assert e.state_hash() == want
    e.close()


def test_commands_after_close_raise_journal_error(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    ids: dict = {}
    e = se.Engine.open(d, POLICY, SEED)
    phase_setup(e, ids)
    phase_bookings(e, ids)
    e.close()
    e.close()  # idempotent
    want, seq = e.state_hash(), e.journal_seq
    t = T1 + 2 * HOUR
    calls = [
        lambda: e.add_session("S9", hospital="H1", department="D", doctor="Dr", starts_at=START,
                              capacity=1, fee=0, now=t),
        lambda: e.book("A1", "P1", "S2", now=t),
        lambda: e.book("A100", "P100", "S2", now=t),  # new names: nothing may be interned
        lambda: e.book_many([0], [0], [0], [0], t),
        lambda: e.confirm(0, account="A1", now=t),
        lambda: e.cancel(ids["b_p1"], account="A1", now=t),
        lambda: e.check_in(ids["b_p1"], now=t),
        lambda: e.add_capacity("S1", 1, now=t),
        lambda: e.suspend("S1", now=t),
        lambda: e.block_slot("S2", 1, now=t),
        lambda: e.register_patient("P1", follow_up_at=["H2"], now=t),
        lambda: e.advance(t),
        lambda: e.flag(account="A1", until=t + DAY, note="x", now=t),
        lambda: e.block(patient="P1", until=t + DAY, now=t),
        lambda: e.import_blacklist([("account", "A1", t + DAY)], now=t),
        lambda: e.join_waitlist("A1", "P2", ["S1"], deadline=START, now=t),
        lambda: e.credit.top_up("P1", 100, now=t),
        lambda: e.credit.open_line("P9", now=t),
        lambda: e.credit.refund("P1", 1, now=t),
        lambda: e.snapshot(),
    ]
    for call in calls:
        with pytest.raises(JournalError):
            call()
        assert e.state_hash() == want
    assert e.journal_seq == seq
    e = open_quiet(d)
    assert e.state_hash() == want
    e.close()


# -- damaged journals ----------------------------------------------------------------------


def test_truncated_last_segment_drops_the_torn_record(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    _, _, seqs = rush_engines(d, 400, single_last=True)
    n = len(seqs)
    seg = segments(d)[-1]
    off, size, seq = records(seg)[-1]
    assert seq == seqs[-1] and seqs[-1] - seqs[-2] == 1  # the last command is one record
    with open(seg, "r+b") as f:
        f.truncate(off + size // 2)  # cut in the middle of the last record
    with pytest.warns(JournalWarning, match=re.escape(seg.name)) as rec:
        e = se.Engine.open(d)
    assert any(str(off) in str(w.message) for w in rec), [str(w.message) for w in rec]
    m = prefix(3, n - 1)
    assert_same(e, m)
    assert e.journal_seq == seqs[-2] and e.commands == m.commands
    # the engine goes on, and later reopens are clean
    for x in (e, m):
        x.credit.top_up("P1", 5, now=T0 + 10 * DAY)
    e.close(snapshot=False)
    for _ in range(2):
        e = open_quiet(d)
        assert_same(e, m)
        e.close(snapshot=False)


def test_zero_size_of_the_last_record_means_it_never_happened(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    _, _, seqs = rush_engines(d, 300, single_last=True)
    n = len(seqs)
    seg = segments(d)[-1]
    off, _, _ = records(seg)[-1]
    assert seqs[-1] - seqs[-2] == 1
    with open(seg, "r+b") as f:  # the writer stores size last: killed just before it
        f.seek(off)
        f.write(b"\0\0\0\0")
    e = open_quiet(d)
    assert_same(e, prefix(3, n - 1))
    e.close(snapshot=False)


def test_flipped_byte_in_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    _, _, seqs = rush_engines(d, 300, single_last=True)
    n = len(seqs)
    seg = segments(d)[-1]
    off, size, _ = records(seg)[-1]
    flip(seg, off + size - 1)
    with pytest.warns(JournalWarning):
        e = se.Engine.open(d)
    assert_same(e, prefix(3, n - 1))
    assert e.journal_seq == seqs[-2]
    e.close(snapshot=False)


def _single_record_command(seqs: list[int], lo: int, hi: int) -> int:
    """A command index i in [lo, hi) that wrote exactly one record."""
    for i in range(lo, hi):
        if seqs[i] - seqs[i - 1] == 1:
            return i
    raise AssertionError("no single-record command")


@pytest.mark.parametrize("segment_bytes", [None, SMALL])
def test_flipped_byte_in_a_middle_record_refuses_to_open(tmp_path: Path,
                                                          segment_bytes: int | None) -> None:
    d = tmp_path / "engine"
    n = 2500 if segment_bytes else 400
    kw: dict[str, Any] = {} if segment_bytes is None else {"segment_bytes": segment_bytes}
    _, m, seqs = rush_engines(d, n, **kw)
    i = _single_record_command(seqs, n // 3, n)
    bad = seqs[i]
    path, off, size, seq = next(r for r in all_records(d) if r[3] == bad)
    later_segments = [p for p in segments(d) if first_seq(p) > bad]
    if segment_bytes:
        assert later_segments  # the bad record is not in the last segment
    flip(path, off + 16)  # the op field: the CRC no longer matches
    before = dir_state(d)
    with pytest.raises(CorruptJournal) as err:
        se.Engine.open(d)
    assert Path(err.value.path).resolve() == path.resolve()
    assert err.value.offset == off
    assert path.name in str(err.value) and str(off) in str(err.value)
    assert isinstance(err.value, JournalError) and isinstance(err.value, OSError)
    assert dir_state(d) == before  # nothing changed, nothing dropped
    with pytest.raises(CorruptJournal):  # the lock was released: the same answer again
        se.Engine.open(d)
    assert dir_state(d) == before
    # repair=True truncates there, explicitly
    with pytest.warns(JournalWarning):
        e = se.Engine.open(d, repair=True)
    want = prefix(3, i)
    assert_same(e, want)
    assert e.journal_seq == bad - 1 and e.commands == want.commands
    assert all(not p.exists() for p in later_segments)
    # it goes on from there, and reopens cleanly
    for x in (e, want):
        x.credit.top_up("P1", 7, now=T0 + 10 * DAY)
    seq = e.journal_seq
    assert seq >= bad
    e.close(snapshot=False)
    e = open_quiet(d)
    assert_same(e, want)
    assert e.journal_seq == seq
    e.close()


@pytest.mark.parametrize("damage", ["header", "missing", "cut"])
def test_damaged_middle_segment_refuses_to_open(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "engine"
    _, m, seqs = rush_engines(d, 2500, segment_bytes=SMALL)
    segs = segments(d)
    assert len(segs) >= 3
    victim, after = segs[1], segs[2]
    recs = records(victim)
    if damage == "header":
        flip(victim, 20)  # the first seq in the header: its CRC no longer matches
        where, keep_seq = (victim, 0), first_seq(victim) - 1
    elif damage == "missing":
        victim.unlink()  # a gap in the sequence numbers
        where, keep_seq = (after, 0), first_seq(victim) - 1
    else:
        off, size, seq = recs[len(recs) // 2]
        with open(victim, "r+b") as f:
            f.truncate(off + size // 2)
        where, keep_seq = (victim, off), seq - 1
    before = dir_state(d)
    with pytest.raises(CorruptJournal) as err:
        se.Engine.open(d)
    assert Path(err.value.path).resolve() == where[0].resolve()
    assert err.value.offset == where[1]  # a bad or missing segment: its start
    assert dir_state(d) == before
    with pytest.warns(JournalWarning):
        e = se.Engine.open(d, repair=True)
    assert e.journal_seq == keep_seq
    if keep_seq in seqs:  # the cut fell between two commands: their prefix
        assert_same(e, prefix(3, seqs.index(keep_seq) + 1))
    assert not after.exists()
    e.close()
    e = open_quiet(d)
    assert e.journal_seq == keep_seq
    e.close()


def test_corrupt_record_before_a_snapshot_is_not_read(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    e, m, seqs = rush_engines(d, 300, close=False)
    e.close()  # a snapshot covers every record
    path, off, _, _ = all_records(d)[10]
    flip(path, off + 16)
    e = open_quiet(d)
    assert_same(e, m)
    e.close()


# -- a full disk -----------------------------------------------------------------------


def test_full_disk_refuses_the_command_and_keeps_what_was_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "engine"
    seed = 4
    e = se.Engine.open(d, rush_policy(), seed, segment_bytes=SMALL)
    m = se.Engine(rush_policy(), seed)
    # every name is known up front, so each command below is one record
    for x in (e, m):
        x.intern_accounts([f"A{k}" for k in range(120)])
        x.intern_patients([f"P{k}" for k in range(60)])
        for k in range(4):
            x.add_session(f"S{k}", hospital="H1", department=f"D{k}", doctor="Dr", capacity=500,
                          starts_at=START + k * DAY, fee=100, release={"app": T0}, now=T1)
    real = os.posix_fallocate
    state = {"full": False, "calls": 0}

    def fallocate(fd: int, offset: int, length: int) -> None:
        state["calls"] += 1
        if state["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    import slotengine.journal as journal_module  # exists once Engine.open works
    if hasattr(journal_module, "posix_fallocate"):
        monkeypatch.setattr(journal_module, "posix_fallocate", fallocate)

    def command(x: se.Engine, k: int) -> Any:
        return x.book(f"A{k % 120}", f"P{k % 60}", f"S{k % 4}", now=T1 + MINUTE + k)

    k = 0
    segs = len(segments(d))
    while len(segments(d)) == segs:  # fill the current segment up to its end
        assert command(e, k) == command(m, k)
        k += 1
        assert k < 10_000
    # a new segment was just started; fill it too, then the disk is full
    state["full"] = True
    segs = len(segments(d))
    refused = None
    for _ in range(5000):
        seq = e.journal_seq
        try:
            r = command(e, k)
        except JournalError as exc:
            refused = exc
            # the twin has not run it: the refused command changed nothing
            assert e.state_hash() == m.state_hash() and e.journal_seq == seq
            break
        assert r == command(m, k)
        k += 1
    assert refused is not None, "no command was refused on a full disk"
    assert isinstance(refused, OSError)
    assert state["calls"] >= 1
    # it stays refused while the disk is full, and nothing changes
    for _ in range(3):
        with pytest.raises(JournalError):
            command(e, k)
        assert e.state_hash() == m.state_hash()
    assert_same(e, m)
    # room again: the same command goes through
    state["full"] = False
    assert command(e, k) == command(m, k)
    k += 1
    assert_same(e, m)
    e.close(snapshot=False)
    monkeypatch.undo()
    e = open_quiet(d)
    assert_same(e, m)
    e.close()


def test_full_disk_then_reopen_without_room_again(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The process gives up after a refused command: a reopen has everything acknowledged."""
    d = tmp_path / "engine"
    e = se.Engine.open(d, rush_policy(), 5, segment_bytes=SMALL)
    m = se.Engine(rush_policy(), 5)
    rush_e, rush_m = Rush(5), Rush(5)
    i = 0
    real = os.posix_fallocate
    full = [False]

    def fallocate(fd: int, offset: int, length: int) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    full[0] = True
    try:
        while i < 20_000:
            rush_e.step(e, i)
            rush_m.step(m, i)
            i += 1
    except JournalError:
        pass
    assert i < 20_000, "no command was refused on a full disk"
    failed = i  # rush command `failed` raised: it may have interned names, nothing else
    e.close(snapshot=False)
    monkeypatch.undo()
    e = open_quiet(d)
    got = e.state_hash()
    # the state is the prefix of the acknowledged commands, plus at most the new
    # names the refused command registered in records of their own
    m2 = prefix(5, failed)
    plan = Rush(5)
    plan.run(se.Engine(rush_policy(), 5), failed)
    p = plan.plan(failed)
    options = [m2.state_hash()]
    for a in p.accounts:
        if a not in m2.dump()["names"]["accounts"]:
            m2.intern_accounts([a])
            options.append(m2.state_hash())
    for q in p.patients:
        if q not in m2.dump()["names"]["patients"]:
            m2.intern_patients([q])
            options.append(m2.state_hash())
    assert got in options
    assert e.commands == m.commands
    e.close()


def _until(k: int) -> int:
    return T1 + DAY + k * MINUTE


#: Host calls that write several records (new names first, or a drain after an
#: advance): on a full disk each must be refused whole, before any change.
MULTI_RECORD_CALLS: dict[str, Callable[[se.Engine, int], Any]] = {
    "book": lambda x, k: x.book(f"AN{k}", f"PN{k}", "S0", now=T1 + k),
    "join_waitlist": lambda x, k: x.join_waitlist(f"AN{k}", f"PN{k}", ["S1"],
                                                  deadline=START, now=T1 + k),
    "top_up": lambda x, k: x.credit.top_up(f"PN{k}", 100, now=T1 + k),
    "open_line": lambda x, k: x.credit.open_line(f"PN{k}", now=T1 + k),
    "flag": lambda x, k: x.flag(account=f"AN{k}", until=_until(k), note=f"note {k}", now=T1 + k),
    "block": lambda x, k: x.block(patient=f"PN{k}", until=_until(k), now=T1 + k),
    "register_patient": lambda x, k: x.register_patient(f"PN{k}", follow_up_at=[f"HN{k}"],
                                                        now=T1 + k),
    "import_blacklist": lambda x, k: x.import_blacklist(
        [("account", f"AN{k}", _until(k)), ("patient", f"PN{k}", _until(k))], now=T1 + k),
    "intern_patients": lambda x, k: x.intern_patients([f"PN{k}", f"PM{k}"]),
    "advance": lambda x, k: (x.add_capacity("S0", 1, now=T1 + k) if k % 2 == 0
                             else x.advance(T1 + k)),  # an advance with events to drain
}


@pytest.mark.parametrize("call", list(MULTI_RECORD_CALLS))
def test_full_disk_refuses_a_multi_record_call_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """Wherever the end of the segment falls inside a host call, the call is refused whole."""
    fn = MULTI_RECORD_CALLS[call]
    real = os.posix_fallocate
    full = [False]

    def fallocate(fd: int, offset: int, length: int) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    for trial in range(24):  # fillers shift where the segment's end falls inside the call
        full[0] = False
        d = tmp_path / f"t{trial}"
        e = se.Engine.open(d, POLICY, SEED, segment_bytes=4096)
        m = se.Engine(POLICY, SEED)
        for x in (e, m):
            x.add_session("S0", hospital="H1", department="D0", doctor="Dr", starts_at=START,
                          capacity=200, fee=0, release={"app": T0}, now=T1)
            x.add_session("S1", hospital="H1", department="D1", doctor="Dr", starts_at=START,
                          capacity=1, fee=0, release={"app": T0}, now=T1)
            x.book("A0", "P0", "S1", now=T1)  # S1 is full: a waitlist may wait for it
            for _ in range(trial):
                x.credit.top_up("P0", 1, now=T1)
        full[0] = True
        k, refused = 1, False
        while k < 400:
            try:
                got = fn(e, k)
            except JournalError:
                refused = True
                # the twin has not run it: the refused call changed nothing
                assert e.state_hash() == m.state_hash(), \
                    f"trial {trial}: a refused {call} changed the state"
                assert e.dump()["names"] == m.dump()["names"]
                break
            want = fn(m, k)
            if not isinstance(got, np.ndarray):
                assert got == want
            k += 1
        assert refused
        assert e.state_hash() == m.state_hash()
        e.close(snapshot=False)
        full[0] = False
        if trial % 8 == 7:  # now and then: reopen, everything acknowledged is there
            e = open_quiet(d)
            assert_same(e, m)
            e.close(snapshot=False)


def test_full_disk_while_writing_a_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "engine"
    e, m, _ = rush_engines(d, 300, close=False)
    first = Path(e.snapshot())
    for x in (e, m):
        x.credit.top_up("P1", 3, now=T0 + 10 * DAY)
    before = sorted(p.name for p in d.iterdir())
    real = os.write

    def write(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", write)
    try:
        with pytest.raises(JournalError):
            e.snapshot()
    finally:
        monkeypatch.setattr(os, "write", real)
    assert sorted(p.name for p in d.iterdir()) == before  # no temporary file left, none deleted
    assert snapshots(d) == [first]
    assert_same(e, m)
    for x in (e, m):  # the engine goes on
        x.credit.top_up("P1", 4, now=T0 + 10 * DAY)
    e.close()
    e = open_quiet(d)
    assert_same(e, m)
    e.close()


# -- bad input ---------------------------------------------------------------------------


BAD_OPEN = [
    pytest.param(dict(directory=123), InvalidType, id="dir=int"),
    pytest.param(dict(directory=None), InvalidType, id="dir=None"),
    pytest.param(dict(directory=["d"]), InvalidType, id="dir=list"),
    pytest.param(dict(directory=1.5), InvalidType, id="dir=float"),
    pytest.param(dict(directory=""), InvalidArgument, id="dir=empty"),
    pytest.param(dict(policy="default"), InvalidType, id="policy=str"),
    pytest.param(dict(policy={}), InvalidType, id="policy=dict"),
    pytest.param(dict(seed=-1), InvalidArgument, id="seed=-1"),
    pytest.param(dict(seed=2**64), InvalidArgument, id="seed=2**64"),
    pytest.param(dict(seed=1.0), InvalidType, id="seed=float"),
    pytest.param(dict(seed=True), InvalidType, id="seed=bool"),
    pytest.param(dict(seed="7"), InvalidType, id="seed=str"),
    pytest.param(dict(durability="sync"), InvalidArgument, id="durability=sync"),
    pytest.param(dict(durability=""), InvalidArgument, id="durability=empty"),
    pytest.param(dict(durability="PROCESS"), InvalidArgument, id="durability=upper"),
    pytest.param(dict(durability="fsync\u200b"), InvalidArgument, id="durability=unicode"),
    pytest.param(dict(durability=None), InvalidType, id="durability=None"),
    pytest.param(dict(durability=1), InvalidType, id="durability=int"),
    pytest.param(dict(durability=b"process"), InvalidType, id="durability=bytes"),
    pytest.param(dict(repair=1), InvalidType, id="repair=1"),
    pytest.param(dict(repair="yes"), InvalidType, id="repair=str"),
    pytest.param(dict(repair=None), InvalidType, id="repair=None"),
]
for _name in ("segment_bytes", "group_ms", "group_records"):
    BAD_OPEN += [
        pytest.param({_name: -1}, InvalidArgument, id=f"{_name}=-1"),
        pytest.param({_name: -(2**63)}, InvalidArgument, id=f"{_name}=-2**63"),
        pytest.param({_name: 2**63}, InvalidArgument, id=f"{_name}=2**63"),
        pytest.param({_name: 10**30}, InvalidArgument, id=f"{_name}=10**30"),
        pytest.param({_name: 1.5}, InvalidType, id=f"{_name}=float"),
        pytest.param({_name: 4096.0}, InvalidType, id=f"{_name}=float-int"),
        pytest.param({_name: True}, InvalidType, id=f"{_name}=bool"),
        pytest.param({_name: "64"}, InvalidType, id=f"{_name}=str"),
        pytest.param({_name: None}, InvalidType, id=f"{_name}=None"),
    ]
BAD_OPEN.append(pytest.param(dict(segment_bytes=0), InvalidArgument, id="segment_bytes=0"))


def _open_with(d: Path, args: dict) -> se.Engine:
    kw = dict(args)
    directory = kw.pop("directory", d)
    policy = kw.pop("policy", None)
    seed = kw.pop("seed", None)
    return se.Engine.open(directory, policy, seed, **kw)


@pytest.mark.parametrize("args, exc", BAD_OPEN)
def test_open_bad_input_new_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      args: dict, exc: type) -> None:
    d = tmp_path / "new"
    cwd = tmp_path / "cwd"  # "" must not mean the current directory: keep that one empty
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(exc) as err:
        _open_with(d, args)
    assert isinstance(err.value, SlotEngineError)
    assert not d.exists()  # nothing created
    assert list(cwd.iterdir()) == []
    e = open_quiet(d)  # and nothing held: the directory opens afterwards
    e.close()


@pytest.mark.parametrize("args, exc", BAD_OPEN)
def test_open_bad_input_existing_directory(tmp_path: Path, args: dict, exc: type) -> None:
    d = tmp_path / "engine"
    e = se.Engine.open(d, POLICY if "policy" in args or "seed" in args else None,
                       SEED if "policy" in args or "seed" in args else None)
    phase_setup(e, {}) if "policy" in args or "seed" in args else None
    want = e.state_hash()
    e.close()
    before = dir_state(d)
    with pytest.raises(exc):
        _open_with(d, args)
    assert dir_state(d) == before
    e = open_quiet(d)
    assert e.state_hash() == want
    e.close()


def test_open_a_file_instead_of_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "plain.txt"
    f.write_bytes(b"not a journal directory")
    with pytest.raises(JournalError):
        se.Engine.open(f)
    assert f.read_bytes() == b"not a journal directory"
    with pytest.raises(JournalError):
        se.Engine.open(f / "below")
    assert f.read_bytes() == b"not a journal directory"


def test_open_a_directory_that_is_not_an_engine(tmp_path: Path) -> None:
    d = tmp_path / "other"
    d.mkdir()
    (d / "manifest.json").write_text("{not json")
    before = dir_state(d)
    with pytest.raises(JournalError):
        se.Engine.open(d)
    assert dir_state(d) == before


def test_open_accepts_str_and_pathlike(tmp_path: Path) -> None:
    e = se.Engine.open(str(tmp_path / "a"), POLICY, SEED)
    phase_setup(e, {})
    want = e.state_hash()
    e.close()
    e = open_quiet(tmp_path / "a")  # a Path reopens what a str created
    assert e.state_hash() == want
    e.close()


def test_unicode_directory_name(tmp_path: Path) -> None:
    d = tmp_path / "引擎 ✓ dir"
    e = se.Engine.open(d, POLICY, SEED)
    phase_setup(e, {})
    want = e.state_hash()
    e.close(snapshot=False)
    e = open_quiet(d)
    assert e.state_hash() == want
    e.close()


def test_in_memory_engine_has_no_journal() -> None:
    e = se.Engine(POLICY, SEED)
    phase_setup(e, {})
    want = e.state_hash()
    with pytest.raises(JournalError):
        e.snapshot()
    assert e.durability is None and e.journal_seq == 0
    e.close()  # nothing to close: a no-op
    assert e.state_hash() == want
    phase_bookings(e, {})  # and it still works


@pytest.mark.parametrize("value", [1, 0, "no", None, 1.0])
def test_close_snapshot_must_be_bool(tmp_path: Path, value: object) -> None:
    d = tmp_path / "engine"
    e = se.Engine.open(d, POLICY, SEED)
    phase_setup(e, {})
    want, before = e.state_hash(), snapshots(d)
    with pytest.raises(InvalidType):
        e.close(snapshot=value)  # type: ignore[arg-type]
    assert snapshots(d) == before and e.state_hash() == want
    phase_bookings(e, {})  # still open
    e.close()
