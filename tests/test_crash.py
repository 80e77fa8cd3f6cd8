"""Crash tests (issue 6): a child process is killed with SIGKILL mid-rush; nothing acknowledged is lost.

The child (tests/crash_child.py) opens an engine directory and runs a
deterministic rush, printing one line per command after it returned.  The
parent kills it at a point hypothesis chooses (after some number of printed
lines, plus a delay so that the kill also lands inside a command, a record
write, a segment rotation or a snapshot), reopens the directory and checks:

* every booking the child printed as BOOKED or HELD is there, with the same
  patient and session;
* ``journal_seq`` is at least the last printed one;
* the recovered ``state_hash()`` is that of an in-memory engine fed the rush's
  first k commands, where k is the number of printed commands or one more
  (the command in flight when the kill came) - or that one's new names only,
  which a booking registers in records of their own before it books, or an
  ``advance`` whose events were not drained yet (the drain is a record too);
* the recovered engine then goes on exactly like the in-memory one, and a
  second crash of a child continuing the same rush is recovered the same way.
"""
from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import slotengine as se
from crash_child import Rush, policy
from slotengine.errors import JournalWarning

CHILD = Path(__file__).with_name("crash_child.py")
HEAVY = os.environ.get("HYPOTHESIS_PROFILE") == "heavy"
#: few examples: each one starts a Python process (the heavy profile runs many)
CRASH = settings(max_examples=200 if HEAVY else 8, deadline=None)
FEW = settings(max_examples=40 if HEAVY else 3, deadline=None)
COUNT = 2500  # rush commands per child
SMALL = 64 << 10  # segment_bytes: the rush rotates through several segments
TINY = 4096  # the smallest segment: a rotation every few dozen records


class Run:
    """What a killed child printed: its acknowledged commands."""

    def __init__(self, text: str, start: int, stderr: str) -> None:
        lines = text.split("\n")
        complete = lines[:-1]  # a last line without its newline was cut by the kill
        assert complete and complete[0].startswith("OPEN "), (text[:500], stderr[-3000:])
        self.start = start
        self.open_seq = int(complete[0].split()[1])
        self.rows: list[tuple[int, int, list[str]]] = []  # (i, seq, words)
        self.done = False
        for line in complete[1:]:
            if line == "DONE":
                self.done = True
                continue
            word, i, seq, *rest = line.split()
            assert word in ("OK", "ERR"), line
            self.rows.append((int(i), int(seq), rest))
        assert [i for i, _, _ in self.rows] == list(range(start, start + len(self.rows)))
        self.stderr = stderr

    @property
    def last(self) -> int:
        """Index of the last acknowledged command (start - 1 if none)."""
        return self.rows[-1][0] if self.rows else self.start - 1

    @property
    def last_seq(self) -> int:
        return self.rows[-1][1] if self.rows else self.open_seq

    def bookings(self) -> list[tuple[int, str, str]]:
        return [(int(w[2]), w[3], w[4]) for _, _, w in self.rows
                if w[0] == "BOOK" and w[1] in ("BOOKED", "HELD")]


class _Reader(threading.Thread):
    """Reads the child's stdout as it comes, so the child never waits on a full pipe."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[bytes] = []
        self.eof = False
        self.cond = threading.Condition()

    def run(self) -> None:
        for line in iter(self.stream.readline, b""):
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_for(self, n: int) -> None:
        """Until n lines came (or DONE, or the end)."""
        with self.cond:
            ok = self.cond.wait_for(lambda: self.eof or len(self.lines) >= n or (
                self.lines and self.lines[-1] == b"DONE\n"), timeout=120)
        assert ok, "the child printed nothing for 2 minutes"


def run_child(directory: Path, seed: int, *, durability: str = "process", lines: int,
              delay: float, start: int = 0, count: int = COUNT, segment: int = SMALL,
              snap_every: int = 0) -> Run:
    """Start the child, kill it (SIGKILL) ``delay`` s after it printed ``lines`` commands."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(directory), str(seed), durability, str(count),
         str(segment), str(snap_every), str(start)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=CHILD.parent)
    reader = _Reader(proc.stdout)
    reader.start()
    try:
        reader.wait_for(1 + lines)  # the OPEN line, then `lines` command lines
        if delay:
            time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        reader.join(timeout=60)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    run = Run(b"".join(reader.lines).decode(), start, err)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err[-3000:])
    return run


#: Stages of the command in flight when the kill came (see ``engine_at``).
DONE_STAGE, ADVANCED = -1, -2


def stages(seed: int, last: int, snap_every: int) -> list[int]:
    """Every stage recovery may leave the command after ``last`` in:

    * 0: not at all (only commands 0..last are in the state);
    * s > 0: its first s new names registered (a name is a record of its own,
      written before the command's record);
    * ADVANCED: an ``advance`` whose record made it but not the drain of the
      events it returned (the events stay pending, as nobody received them);
    * DONE_STAGE: done.
    """
    m = se.Engine(policy(), seed)
    rush = Rush(seed, snap_every)
    rush.run(m, last + 1)
    plan = rush.plan(last + 1)
    names = m.dump()["names"]
    new = [a for a in plan.accounts if a not in names["accounts"]]
    new += [p for p in plan.patients if p not in names["patients"]]
    return [0, *range(1, len(new) + 1), *([ADVANCED] if plan.kind == "advance" else []),
            DONE_STAGE]


def engine_at(seed: int, last: int, stage: int, snap_every: int) -> tuple[se.Engine, Rush]:
    """An in-memory engine with commands 0..last done and the next one in ``stage``,
    and the rush driver to go on from there."""
    m = se.Engine(policy(), seed)
    rush = Rush(seed, snap_every)
    rush.run(m, last + 1)
    plan = rush.plan(last + 1)
    if stage == DONE_STAGE:
        rush.run(m, last + 2)
    elif stage == ADVANCED:
        m.advance(*plan.args, drain=False)
        rush.done = last + 2
    elif stage > 0:
        names = m.dump()["names"]
        todo = [("accounts", a) for a in plan.accounts if a not in names["accounts"]]
        todo += [("patients", p) for p in plan.patients if p not in names["patients"]]
        for table, name in todo[:stage]:
            (m.intern_accounts if table == "accounts" else m.intern_patients)([name])
    return m, rush


def candidates(seed: int, last: int, snap_every: int) -> list[tuple[str, int]]:
    """(state hash, stage) of every state recovery may give after ``last`` was acknowledged."""
    return [(engine_at(seed, last, s, snap_every)[0].state_hash(), s)
            for s in stages(seed, last, snap_every)]


def recover_and_check(directory: Path, run: Run, seed: int, snap_every: int,
                      earlier: tuple[Run, ...] = ()) -> tuple:
    """Reopen after the kill; check the contract; return (engine, memory twin, rush driver).

    ``earlier``: runs of children killed before in the same directory, whose
    bookings must be there too.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        e = se.Engine.open(directory)
    for w in caught:  # only a torn tail may be reported, nothing else
        assert issubclass(w.category, JournalWarning), str(w.message)
    assert e.policy == policy() and e.seed == seed
    # every booking the child saw made is there
    for b, patient, session in [x for r in (*earlier, run) for x in r.bookings()]:
        info = e.booking(b)
        assert (info.patient, info.session) == (patient, session), b
    assert e.journal_seq >= run.last_seq
    # the state is a prefix of the rush: all acknowledged commands, at most one more
    got = e.state_hash()
    options = candidates(seed, run.last, snap_every)
    matched = [s for h, s in options if h == got]
    assert matched, (f"recovered state is no prefix of the rush: last printed command "
                    f"{run.last}, journal_seq {e.journal_seq}, commands {e.commands}")
    m, rush = engine_at(seed, run.last, matched[0], snap_every)
    assert e.commands == m.commands
    e._check_invariants()
    return e, m, rush


def go_on(e: se.Engine, m: se.Engine, rush: Rush, n: int) -> None:
    """Run the next n rush commands on both and compare."""
    twin = copy.deepcopy(rush)
    stop = rush.done + n
    for i in range(rush.done, stop):
        if rush.plan(i).kind == "snapshot":
            rush.done = twin.done = i + 1
            continue
        assert rush.step(e, i) == twin.step(m, i)
    assert e.state_hash() == m.state_hash()


@CRASH
@given(seed=st.integers(0, 2**20), lines=st.integers(0, COUNT + 10),
       delay_us=st.sampled_from([0, 0, 50, 300, 1000, 3000]),
       snap_every=st.sampled_from([0, 0, 700]), segment=st.sampled_from([TINY, SMALL]),
       durability=st.sampled_from(["process", "process", "grouped"]))
def test_sigkill_in_process_mode_loses_nothing_acknowledged(
        tmp_path_factory: pytest.TempPathFactory, seed: int, lines: int, delay_us: int,
        snap_every: int, segment: int, durability: str) -> None:
    """process mode (and grouped, which promises at least as much against a killed process)."""
    d = tmp_path_factory.mktemp("crash") / "engine"
    run = run_child(d, seed, lines=lines, delay=delay_us / 1e6, snap_every=snap_every,
                    segment=segment, durability=durability)
    e, m, rush = recover_and_check(d, run, seed, snap_every)
    go_on(e, m, rush, 200)
    e.close()
    e2 = se.Engine.open(d)
    assert e2.state_hash() == m.state_hash()
    e2.close()


@CRASH
@given(seed=st.integers(0, 2**20), after_ms=st.integers(0, 400))
def test_sigkill_at_a_random_time(tmp_path_factory: pytest.TempPathFactory, seed: int,
                                  after_ms: int) -> None:
    """The kill comes at a wall-clock time after the engine opened, not between two prints."""
    d = tmp_path_factory.mktemp("crash") / "engine"
    run = run_child(d, seed, lines=0, delay=after_ms / 1000, snap_every=500, segment=TINY)
    e, m, rush = recover_and_check(d, run, seed, 500)
    e.close(snapshot=False)


@FEW
@given(seed=st.integers(0, 2**20), lines=st.integers(0, 300), delay_us=st.integers(0, 2000))
def test_sigkill_in_fsync_mode(tmp_path_factory: pytest.TempPathFactory, seed: int, lines: int,
                               delay_us: int) -> None:
    d = tmp_path_factory.mktemp("crash") / "engine"
    run = run_child(d, seed, durability="fsync", lines=lines, delay=delay_us / 1e6, count=300)
    e, m, rush = recover_and_check(d, run, seed, 0)
    e.close(snapshot=False)


@FEW
@given(seed=st.integers(0, 2**20), first=st.integers(0, 1500), second=st.integers(0, 1500),
       delay_us=st.sampled_from([0, 200, 2000]))
def test_two_crashes_in_a_row(tmp_path_factory: pytest.TempPathFactory, seed: int, first: int,
                              second: int, delay_us: int) -> None:
    """Killed, recovered by a new child that goes on with the rush, killed again."""
    d = tmp_path_factory.mktemp("crash") / "engine"
    run = run_child(d, seed, lines=first, delay=delay_us / 1e6, snap_every=400)
    e, m, rush = recover_and_check(d, run, seed, 400)
    e.close(snapshot=False)  # nothing new: the next child continues from here
    start = rush.done  # the in-flight command is rerun if only its names made it
    run2 = run_child(d, seed, lines=second, delay=delay_us / 1e6, start=start, snap_every=400)
    assert run2.open_seq == e.journal_seq
    e, m, rush = recover_and_check(d, run2, seed, 400, earlier=(run,))
    go_on(e, m, rush, 100)
    e.close()


def test_killed_child_with_nothing_done_reopens_empty(tmp_path: Path) -> None:
    d = tmp_path / "engine"
    run = run_child(d, 1, lines=1, delay=0, count=0)  # waits for DONE
    assert run.rows == [] and run.done
    e = se.Engine.open(d)
    assert e.journal_seq == 0 and e.commands == 0
    assert e.state_hash() == se.Engine(policy(), 1).state_hash()
    e.close()
