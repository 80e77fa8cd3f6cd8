"""Durability cost: journaled booking and recovery, beside the in-memory figures.

Run with ``make bench``.  The world is bench_book's (5,000 expert sessions x
20 slots, every request succeeds, every rule on).  Each group runs, in the
same session and on the same work per round:

* ``core``      the compiled core opened durable with ``Engine.open(dir)`` in
  ``process`` mode (the default: each record reaches the shared mapping of
  the journal file before the call returns; no system call per command);
* ``memory``    the compiled core in memory (``Engine(...)``), no journal;
* ``reference`` the plain-Python model in memory: the ratio column.

Groups:

* ``jbook``       per-call ``Engine.book``, 10,000 per round (target 1 M/s);
* ``jbook_many``  ``book_many``, 100,000 rows per round (target 10 M/s);
* ``replay``      recovery's replay of a journal holding 100,000 ``book``
  records after a snapshot of the set-up (target 2 M records/s): the
  ``core`` row times the replay step of ``Engine.open`` alone (the snapshot
  is loaded in the untimed set-up; the whole ``Engine.open`` is printed
  after the table); the ``memory`` row is the in-memory core booking the
  same 100,000 per call and the ``reference`` row the plain model doing so,
  i.e. what recovery by re-running the commands through the API would cost.

``test_modes`` prints per-call ``book`` in every durability mode (``fsync``
on fewer calls: each waits for the disk) for the README's table.  Journal
directories live under pytest's ``tmp_path`` (the machine's disk).
"""
from __future__ import annotations

import itertools
import shutil
import statistics
import time
from pathlib import Path

import pytest

import slotengine as se
from slotengine.journal import Journal
from bench_book import POLICY, World, _book_all, booked_sum, world

N_BOOK = 10_000
N_MANY = 100_000
N_REPLAY = 100_000
BACKENDS = ["core", "memory", "reference"]
ROUNDS = {"core": (1, 10), "memory": (1, 10), "reference": (0, 3)}
TARGETS = {"jbook": 1_000_000, "jbook_many": 10_000_000, "replay": 2_000_000}
_dirs = itertools.count()


def _engine(backend: str, w: World, root: Path, durability: str = "process") -> se.Engine:
    """A fresh engine with every session and patient of ``w`` (set-up, not timed)."""
    if backend in ("core", "durable"):
        d = root / f"j{next(_dirs)}"
        e = se.Engine.open(d, POLICY, seed=7, durability=durability)
        for kw in w.specs:
            e.add_session(**kw)
        e.intern_accounts(w.accounts)
        for p, h in zip(w.patients, w.hospitals):
            e.register_patient(p, follow_up_at=(h,))
        return e
    return w.engine("reference" if backend == "reference" else "core")


def _close(e: se.Engine) -> None:
    if e.durability is not None:
        e.close(snapshot=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jbook(benchmark, report, tmp_path, backend: str) -> None:
    benchmark.group = "jbook"
    w = world(N_BOOK)
    made: list[se.Engine] = []

    def setup():  # type: ignore[no-untyped-def]
        e = _engine(backend, w, tmp_path)
        made.append(e)
        return (e, w.as_host()), {}

    warm, rounds = ROUNDS[backend]
    e = benchmark.pedantic(_book_all, setup=setup, rounds=rounds, warmup_rounds=warm)
    assert booked_sum(e, w) == N_BOOK
    for x in made:
        _close(x)
    report.record("jbook", backend, N_BOOK, benchmark, TARGETS["jbook"])


def _book_many(e: se.Engine, arrays: tuple) -> se.BatchResult:
    return e.book_many(*arrays)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jbook_many(benchmark, report, tmp_path, backend: str) -> None:
    benchmark.group = "jbook_many"
    w = world(N_MANY)
    made: list[se.Engine] = []

    def setup():  # type: ignore[no-untyped-def]
        e = _engine(backend, w, tmp_path)
        made.append(e)
        return (e, w.arrays(e)), {}

    warm, rounds = ROUNDS[backend]
    res = benchmark.pedantic(_book_many, setup=setup, rounds=rounds, warmup_rounds=warm)
    assert (res.status == se.Status.BOOKED).all()
    for x in made:
        _close(x)
    report.record("jbook_many", backend, N_MANY, benchmark, TARGETS["jbook_many"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_replay(benchmark, report, tmp_path, backend: str) -> None:
    benchmark.group = "replay"
    w = world(N_REPLAY)
    if backend != "core":
        # the in-memory engines re-running the same bookings through the API
        warm, rounds = ROUNDS[backend]
        benchmark.pedantic(_book_all,
                           setup=lambda: ((_engine(backend, w, tmp_path), w.as_host()), {}),
                           rounds=rounds, warmup_rounds=warm)
        report.record("replay", backend, N_REPLAY, benchmark, TARGETS["replay"])
        return
    # One journal, recovered every round from a fresh copy of the directory.
    src = tmp_path / "source"
    e = se.Engine.open(src, POLICY, seed=7)
    for kw in w.specs:
        e.add_session(**kw)
    e.intern_accounts(w.accounts)
    for p, h in zip(w.patients, w.hospitals):
        e.register_patient(p, follow_up_at=(h,))
    e.snapshot()                      # recovery replays only the bookings
    first = e.journal_seq
    _book_all(e, w)
    n_records = e.journal_seq - first
    want = e.state_hash()
    e.close(snapshot=False)
    assert n_records == N_REPLAY

    def copy() -> Path:
        d = tmp_path / f"r{next(_dirs)}"
        shutil.copytree(src, d)
        return d

    opened: list[tuple[Journal, se.Engine]] = []

    def setup():  # type: ignore[no-untyped-def]
        # Engine.open up to the replay: the journal's files, the engine, the snapshot
        j = Journal(copy())
        policy, seed = j.settle_manifest(None, None)
        e = se.Engine(policy, seed)
        _, core_bytes, facade_bytes = j.latest_snapshot()
        e._core.restore(core_bytes)
        e._restore_facade(facade_bytes)
        opened.append((j, e))
        return (j, e), {}

    def replay(j: Journal, e: se.Engine) -> None:
        j.replay(e._core, e._apply_note)

    benchmark.pedantic(replay, setup=setup, rounds=7, warmup_rounds=1)
    assert opened[-1][1].state_hash() == want
    for j, _ in opened:
        j.close()
    report.record("replay", "core", N_REPLAY, benchmark, TARGETS["replay"])
    whole = []
    for _ in range(5):
        d = copy()
        t0 = time.perf_counter()
        x = se.Engine.open(d)
        whole.append(time.perf_counter() - t0)
        assert x.state_hash() == want
        x.close(snapshot=False)
    report.sections.setdefault("recovery end to end", []).append(
        f"Engine.open: snapshot of {first:,} set-up records (5,000 sessions, {N_REPLAY:,} "
        f"patients) + {N_REPLAY:,} book records: {statistics.median(whole) * 1e3:.1f} ms "
        f"(median of 5), a new 64 MiB segment made and mapped included")


def test_modes(report, tmp_path) -> None:
    """Per-call book in each durability mode (medians of 5 rounds), for the README."""
    lines = []
    for mode, n in (("memory", N_BOOK), ("off", N_BOOK), ("process", N_BOOK),
                    ("grouped", N_BOOK), ("fsync", 500)):
        w = world(n)
        rates = []
        for _ in range(5):
            e = (_engine("memory", w, tmp_path) if mode == "memory"
                 else _engine("durable", w, tmp_path, durability=mode))
            book = e.book
            h = w.as_host()
            rows = list(zip(h.accounts, h.patients, h.sessions, h.nows))[:n]
            t0 = time.perf_counter()
            for a, p, s, t in rows:
                book(a, p, s, "app", now=t)
            rates.append(n / (time.perf_counter() - t0))
            _close(e)
        lines.append(f"{mode:<8} {n:>7,} books/round  {statistics.median(rates):>12,.0f} books/s "
                     f"(median of 5)")
    report.sections.setdefault("per-call book by durability mode", []).extend(lines)


def test_snapshot(benchmark, report) -> None:
    """Core snapshot and restore of bench_book's world after 100,000 bookings: MB/s."""
    benchmark.group = "snapshot"
    w = world(N_MANY)
    e = w.engine("core")
    e.book_many(*w.arrays(e))
    data = e._core.snapshot()
    timings = {}
    for what, fn in (("snapshot", e._core.snapshot),
                     ("restore", lambda: se.Engine(POLICY, seed=7)._core.restore(data))):
        runs = []
        for _ in range(7):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        timings[what] = statistics.median(runs)
    benchmark.pedantic(e._core.snapshot, rounds=3)
    mb = len(data) / 1e6
    report.sections.setdefault("snapshot and restore (compiled core)", []).append(
        f"{mb:.1f} MB: snapshot {mb / timings['snapshot']:,.0f} MB/s, restore (fresh engine "
        f"included) {mb / timings['restore']:,.0f} MB/s (medians of 7)")
