"""A release rush through a durable engine, killed mid-rush, then recovered.

A child process opens an engine directory (``Engine.open``, ``process``
durability: each command's record is in the journal file's shared mapping
before the call returns), adds a morning of sessions at 40 hospitals, takes
a snapshot, and books for one patient after another, printing each
acknowledged booking.  After the 3,000th it is killed with SIGKILL: no
``close()``, no flush, nothing.

The parent then reopens the directory: the snapshot is loaded, the journal
after it replayed, and every booking the child acknowledged is checked to be
there, in the same slot, for the same patient.  A twin engine in memory fed
the same commands has the same state hash.

    make demo        # or: python examples/durable_demo.py

Deterministic (seeded), public API only (``import slotengine as se``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

import slotengine as se

SEED = 20261124
CST = timezone(timedelta(hours=8))
DAY = datetime(2026, 12, 1, tzinfo=CST)
RELEASE = se.to_ms(DAY - timedelta(days=7)) + 8 * se.HOUR + 30 * se.MINUTE
POLICY = se.Policy(prequeue_minutes=0, cohort_seconds=0)  # book at once: a plain rush
N_SESSIONS, CAPACITY, KILL_AFTER, N_REQUESTS = 400, 12, 3_000, 6_000


def sessions() -> list[dict]:
    out = []
    for i in range(N_SESSIONS):
        h, d = divmod(i, 10)
        out.append(dict(session=f"H{h:02d}-D{d}", hospital=f"H{h:02d}", department=f"D{d}",
                        doctor=f"Dr {h:02d}-{d}", tier="expert",
                        starts_at=DAY + timedelta(hours=8), capacity=CAPACITY, fee=5000,
                        release={"app": RELEASE}))
    return out


def request(i: int) -> tuple[str, str, str, int]:
    """Request i of the rush: (account, patient, session, now); a pure function of i."""
    s = (i * 7919 + SEED) % N_SESSIONS
    h, d = divmod(s, 10)
    return f"A{i // 2:05d}", f"P{i:05d}", f"H{h:02d}-D{d}", RELEASE + 1_000 + i


def setup(engine: se.Engine) -> None:
    for kw in sessions():
        engine.add_session(**kw)


def child(directory: str) -> None:
    engine = se.Engine.open(directory, POLICY, seed=SEED)
    setup(engine)
    engine.snapshot()
    for i in range(N_REQUESTS):
        a, p, s, t = request(i)
        r = engine.book(a, p, s, now=t)
        print(i, int(r.status), r.booking, r.slot, flush=True)
        if i + 1 == KILL_AFTER:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-rush: no close, no flush


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="slotengine-demo-") as directory:
        print("Durability: a rush killed with SIGKILL, then recovered\n")
        print(f"Child: Engine.open({directory!r}), {N_SESSIONS} sessions x {CAPACITY} slots, "
              f"a rush of bookings; SIGKILL after the {KILL_AFTER:,}th.")
        proc = subprocess.run([sys.executable, __file__, "--child", directory],
                              capture_output=True, text=True)
        acked = [tuple(int(x) for x in line.split()) for line in proc.stdout.splitlines()]
        booked = [row for row in acked if row[1] == se.Status.BOOKED]
        print(f"  exit status {proc.returncode} (killed: {proc.returncode == -signal.SIGKILL}); "
              f"{len(acked):,} results acknowledged, {len(booked):,} of them BOOKED")
        files = sorted(os.listdir(directory))
        print(f"  the directory: {', '.join(files)}")

        snap = max(int(f[len("snapshot-"):-len(".ses")]) for f in files
                   if f.startswith("snapshot-"))
        t0 = time.perf_counter()
        engine = se.Engine.open(directory)
        took = time.perf_counter() - t0
        print(f"\nParent: Engine.open recovered in {took * 1e3:.1f} ms: the snapshot of "
              f"record {snap:,}, then the {engine.journal_seq - snap:,} journal records after it.")
        missing = 0
        for i, _, b, slot in booked:
            info = engine.booking(b)
            _, p, s, _ = request(i)
            if (info.patient, info.session, info.slot) != (p, s, slot):
                missing += 1
        print(f"  acknowledged bookings present, same patient, session and slot: "
              f"{len(booked) - missing:,} of {len(booked):,}")

        twin = se.Engine(POLICY, seed=SEED)
        setup(twin)
        for i in range(len(acked)):
            a, p, s, t = request(i)
            twin.book(a, p, s, now=t)
        same = twin.state_hash() == engine.state_hash()
        print(f"  state hash equals an in-memory twin fed the same {len(acked):,} requests: {same}")
        engine.close()
        if missing or not same:
            raise SystemExit("recovery lost something")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
