"""A deterministic booking rush for the crash tests (tests/test_crash.py).

Run as a child process::

    python crash_child.py DIRECTORY SEED DURABILITY COUNT SEGMENT_BYTES SNAPSHOT_EVERY [START]

It opens ``Engine.open(DIRECTORY, POLICY, SEED, durability=..., segment_bytes=...)``
and runs commands START (default 0) .. COUNT-1 of the rush for SEED; with a
START, the directory must hold the state after the first START commands (a
child killed before), and the rush's bookkeeping is rebuilt in memory first.
After each command has returned (is acknowledged) it prints one line, flushed::

    OK <i> <journal_seq> <kind> [<fields> ...]
    ERR <i> <journal_seq> <error class>

A booking that was made is printed as ``OK <i> <seq> BOOK BOOKED|HELD
<booking id> <patient> <session>``.  Every SNAPSHOT_EVERY-th command (0: never)
is ``e.snapshot()`` instead (no state change).  After the last command it
prints ``DONE`` and waits for its stdin to close (the parent kills it).

The rush is deterministic: command i is a function of (SEED, i) and of what
the first i commands returned, so the parent recomputes any prefix with
``Rush(seed).run(engine, i)`` on an in-memory Engine.
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field

import slotengine as se
from slotengine.errors import JournalError, SlotEngineError
from slotengine.times import DAY, HOUR, MINUTE

T0 = 1_800_000_000_000  # 2027-01-15 16:00 in UTC+8
DAY0 = T0 // DAY * DAY
START = DAY0 + 10 * DAY  # 2027-01-25 08:00 local
N_SESSIONS = 8
#: sessions 0..N_SESSIONS-2 are released at T0; the last one a few minutes
#: into the rush, so early requests for it queue as tickets of a cohort
LATE_RELEASE = T0 + HOUR + 4 * MINUTE
STEP = 250  # ms between two commands


def policy() -> se.Policy:
    """The rush's policy: default rules, roomier limits, the rule flags off (host flags only)."""
    return se.Policy(patient_limits=((3, 1), (6, 7), (20, 90)), account_patients=50,
                     early_flag=(0, 1), cancel_flag=(0, 30), patients_flag=(0, 30),
                     rebook_seconds=0)


def now_of(i: int) -> int:
    return T0 + HOUR + i * STEP


@dataclass
class Plan:
    """Command i: its kind, its arguments and the names it may register (in order)."""

    kind: str
    args: tuple = ()
    kw: dict = field(default_factory=dict)
    accounts: tuple = ()  # account names it registers if new, before patients
    patients: tuple = ()


class Rush:
    """The deterministic command stream of one seed."""

    def __init__(self, seed: int, snapshot_every: int = 0) -> None:
        self.seed = seed
        self.snapshot_every = snapshot_every
        self.live: list[tuple[int, str]] = []  # (booking, account) booked or held
        self.held: list[tuple[int, str]] = []
        self.requests: list[tuple[int, str]] = []  # (waitlist request, account)
        self.tickets: list[tuple[int, str]] = []
        self.done = 0  # commands run

    def plan(self, i: int) -> Plan:
        rnd = random.Random(self.seed * 1_000_003 + i)
        now = now_of(i)
        if self.snapshot_every and i % self.snapshot_every == self.snapshot_every - 1:
            return Plan("snapshot")
        if i < N_SESSIONS:
            late = i == N_SESSIONS - 1
            return Plan("add_session", (f"S{i}",), dict(
                hospital=f"H{i % 3}", department=f"D{i % 4}", doctor=f"Dr {i % 5}",
                starts_at=START + (i % 4) * DAY, capacity=rnd.randint(50, 150),
                fee=rnd.randint(1, 50) * 100,
                release={"app": LATE_RELEASE if late else T0}, now=now))
        acc = f"A{rnd.randrange(120)}"
        pat = f"P{rnd.randrange(500)}" if rnd.random() < 0.8 else f"患者{rnd.randrange(50)}"
        ses = f"S{rnd.randrange(N_SESSIONS)}"
        x = rnd.random()
        if x < 0.45:
            return Plan("book", (acc, pat, ses), dict(now=now, hold=rnd.random() < 0.2),
                        (acc,), (pat,))
        if x < 0.55 and self.live:
            b, a = self.live[rnd.randrange(len(self.live))]
            return Plan("cancel", (b,), dict(account=a, now=now))
        if x < 0.62 and self.held:
            b, a = self.held[rnd.randrange(len(self.held))]
            return Plan("confirm", (b,), dict(account=a, now=now))
        if x < 0.68:
            sessions = rnd.sample([f"S{k}" for k in range(N_SESSIONS)], rnd.randint(1, 3))
            return Plan("join_waitlist", (acc, pat, sessions),
                        dict(deadline=START + 20 * DAY, now=now), (acc,), (pat,))
        if x < 0.70 and self.requests:
            r, a = self.requests[rnd.randrange(len(self.requests))]
            return Plan("cancel_waitlist", (r,), dict(account=a, now=now))
        if x < 0.71 and self.tickets:
            k, a = self.tickets[rnd.randrange(len(self.tickets))]
            return Plan("cancel_ticket", (k,), dict(account=a, now=now))
        if x < 0.78:
            return Plan("top_up", (pat, rnd.randint(1, 10_000)), dict(now=now), (), (pat,))
        if x < 0.80:
            return Plan("open_line", (pat,), dict(now=now), (), (pat,))
        if x < 0.86:
            return Plan("advance", (now,))
        if x < 0.88:
            flagged = f"A{100 + rnd.randrange(20)}"  # a few accounts end up in the slow lane
            return Plan("flag", (), dict(account=flagged, until=now + 10 * MINUTE,
                                         note=f"rush {i} ✓", now=now), (flagged,))
        if x < 0.90:
            return Plan("add_capacity", (ses, rnd.randint(1, 3)), dict(now=now))
        if x < 0.92:
            return Plan("block_slot", (ses, rnd.randint(1, 8)), dict(now=now))
        return Plan("book", (acc, pat, ses), dict(now=now + rnd.randrange(STEP)), (acc,), (pat,))

    def execute(self, e: se.Engine, plan: Plan) -> str:
        """Run one planned command; the text after ``OK <i> <seq>`` (or raise)."""
        k = plan.kind
        if k == "snapshot":
            e.snapshot()
            return "SNAP"
        if k == "add_session":
            e.add_session(*plan.args, **plan.kw)
            return f"SESSION {plan.args[0]}"
        if k == "advance":
            return f"ADVANCE {len(e.advance(*plan.args))}"
        if k == "flag":
            e.flag(**plan.kw)
            return "FLAG"
        if k in ("top_up", "open_line"):
            out = getattr(e.credit, k)(*plan.args, **plan.kw)
            return f"{k.upper()} {out if k == 'top_up' else out.limit}"
        r = getattr(e, k)(*plan.args, **plan.kw)
        if k == "book":
            status = se.Status(r.status).name
            if status in ("BOOKED", "HELD"):
                self.live.append((r.booking, plan.args[0]))
                if status == "HELD":
                    self.held.append((r.booking, plan.args[0]))
                return f"BOOK {status} {r.booking} {plan.args[1]} {plan.args[2]}"
            if status == "QUEUED":
                self.tickets.append((r.ticket, plan.args[0]))
                return f"BOOK QUEUED {r.ticket}"
            return f"BOOK {status} {se.Reason(r.reason).name}"
        if k == "join_waitlist":
            if r.request is not None:
                self.requests.append((r.request, plan.args[0]))
            return f"WAIT {se.Status(r.status).name} {r.request}"
        if k in ("cancel", "confirm", "cancel_waitlist", "cancel_ticket"):
            return f"{k.upper()} {se.Status(r.status).name}"
        return f"{k.upper()} {r}"

    def step(self, e: se.Engine, i: int) -> tuple[bool, str]:
        """Command i: (acknowledged without error, text).  JournalError propagates."""
        plan = self.plan(i)
        self.done = i + 1
        try:
            return True, self.execute(e, plan)
        except JournalError:
            raise
        except SlotEngineError as exc:
            return False, type(exc).__name__

    def run(self, e: se.Engine, n: int) -> None:
        """Commands self.done .. n-1 (snapshots skipped on an in-memory engine)."""
        for i in range(self.done, n):
            if self.plan(i).kind == "snapshot" and e.durability is None:
                self.done = i + 1
                continue
            self.step(e, i)


def main(argv: list[str]) -> None:
    directory, seed, durability, count, segment, snap_every = argv[:6]
    start = int(argv[6]) if len(argv) > 6 else 0
    rush = Rush(int(seed), int(snap_every))
    if start:
        rush.run(se.Engine(policy(), int(seed)), start)
    e = se.Engine.open(directory, policy(), int(seed), durability=durability,
                       segment_bytes=int(segment))
    out = sys.stdout
    out.write(f"OPEN {e.journal_seq}\n")
    out.flush()
    for i in range(start, int(count)):
        ok, text = rush.step(e, i)
        out.write(f"{'OK' if ok else 'ERR'} {i} {e.journal_seq} {text}\n")
        out.flush()
    out.write("DONE\n")
    out.flush()
    sys.stdin.read()  # wait to be killed (or for the parent to go away)


if __name__ == "__main__":
    main(sys.argv[1:])
