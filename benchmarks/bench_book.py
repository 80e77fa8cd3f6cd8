"""Booking throughput and memory: compiled core vs the plain-Python reference.

Run with ``make bench``.  The world is realistic for one regional platform's
release morning: 5,000 expert-tier sessions x 20 slots (100,000 slots) at 20
hospitals (25 departments x 5 doctors x AM/PM each), all released to the app
at 08:30 a week ahead; the requests come one second later, spread over every
session in a seeded random order, one per slot, each from a distinct patient
(two patients per family account), so every booking succeeds.

All rules are on: the default Policy (one per session and per department-day,
2/3/5 per 1/7/90 days, 5 patients per account) plus ``bar_first_visit_expert``,
with every patient registered as a follow-up at the hospital it books, so the
first-visit check runs and passes on every booking.

Groups (each parametrized over the two backends, same work per round):

* ``book``      per-call ``Engine.book`` with string ids, 10,000 per round;
* ``book_many`` the batch path on numpy arrays of interned ids, 100,000 rows;
* ``cancel``    per-call ``Engine.cancel`` of 10,000 booked slots.

Every round gets a fresh engine from ``benchmark.pedantic(setup=...)``
(building it is not timed; growing its booking arrays, first-touch page
faults included, is).  The summary after the table gives bookings per
second from the median round and the core/reference ratio of this run.
``test_memory`` prints ``Engine.memory_usage()`` per slot and per live booking
at 10^4, 10^5 and 10^6 slots (compiled core only; it counts allocated
capacity, so growth slack is included).  The machines are shared and noisy:
compare the ratios of one run, not absolute figures across runs.

The per-call groups pass their string ids as a host passes them
(``host_strings``): fresh objects made in each round's setup, equal to the
interned ids but never the same objects, with no hash computed yet, as a host
decoding requests has them.  (Passing the world's own objects instead would
let the engine compare pointers, and make the benchmark's loop miss the cache
on objects scattered among millions of others.)
"""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from functools import cache

import numpy as np
import pytest

import slotengine as se

CST = timezone(timedelta(hours=8))
CLINIC_DAY = se.to_ms(datetime(2025, 3, 17, tzinfo=CST))  # local midnight of the first clinic day
RELEASE = CLINIC_DAY - 7 * se.DAY + 8 * se.HOUR + 30 * se.MINUTE  # app release: 08:30 a week ahead
RUSH = RELEASE + 1_000  # the first request, one second after release

N_HOSPITALS, N_DEPARTMENTS, N_DOCTORS, SLOTS = 20, 25, 5, 20
N_SESSIONS = 5_000  # one day: 20 x 25 x 5 x AM/PM
# The plain ledger with every rule on; fair release and risk signals have their
# own benchmark, so requests here are booked at once rather than queued.
LEDGER_ONLY = dict(prequeue_minutes=0, cohort_seconds=0, early_flag=(0, 1),
                   cancel_flag=(0, 30), patients_flag=(0, 30), rebook_seconds=0)
POLICY = se.Policy(bar_first_visit_expert=True, **LEDGER_ONLY)
BACKENDS = ["core", "reference"]

N_BOOK = 10_000
N_MANY = 100_000
N_CANCEL = 10_000
#: (warm-up rounds, rounds) per backend: the reference is 10-60x slower.
ROUNDS = {"core": (1, 15), "reference": (0, 5)}
ROUNDS_MANY = {"core": (1, 10), "reference": (0, 3)}
TARGETS = {"book": 2_000_000, "book_many": 20_000_000}


def session_specs(n_sessions: int, tier: str = "expert", fee: int = 30_000) -> list[dict]:
    """``add_session`` keyword arguments for ``n_sessions`` sessions, day after day.

    A grid of 20 hospitals x 25 departments x 5 doctors x AM/PM (5,000 a
    day), all released on the app at ``RELEASE``; bench_waitlist reuses it.
    """
    per_day = N_HOSPITALS * N_DEPARTMENTS * N_DOCTORS * 2
    specs = []
    for i in range(n_sessions):
        day, k = divmod(i, per_day)
        k, h = divmod(k, N_HOSPITALS)
        k, d = divmod(k, N_DEPARTMENTS)
        pm, doc = divmod(k, N_DOCTORS)
        start = CLINIC_DAY + day * se.DAY + (13 * se.HOUR + 30 * se.MINUTE if pm else 8 * se.HOUR)
        specs.append(dict(session=f"S{i:07d}", hospital=f"H{h:02d}", department=f"D{d:02d}",
                          doctor=f"Dr {d:02d}-{doc}", tier=tier, starts_at=start,
                          slot_minutes=12, capacity=SLOTS, fee=fee, release={"app": RELEASE}))
    return specs


def host_strings(names: list[str]) -> list[str]:
    """``names`` as a host passes them: each a fresh str, decoded from bytes as from
    the request it serves; equal to the interned id, never the same object, its hash
    not yet computed.  Made in a round's setup (not timed): each round hashes its own."""
    return [x.encode().decode() for x in names]


class World:
    """Sessions plus a workload of ``n`` requests, one per slot in random order."""

    def __init__(self, n_sessions: int, n: int, seed: int = 2025) -> None:
        assert n <= n_sessions * SLOTS, "more requests than slots: some would be FULL"
        self.specs = session_specs(n_sessions)
        rng = np.random.default_rng(seed)
        idx = rng.permutation(np.repeat(np.arange(n_sessions), SLOTS))[:n]
        self.sessions = [self.specs[i]["session"] for i in idx]
        self.hospitals = [self.specs[i]["hospital"] for i in idx]
        self.patients = [f"P{i:07d}" for i in range(n)]
        self.accounts = [f"A{i // 2:07d}" for i in range(n)]  # families of two
        self.nows = [RUSH + i for i in range(n)]  # one request per ms

    def as_host(self) -> World:
        """This workload with every account, patient and session id as a host passes
        it (``host_strings``), for a per-call round's setup."""
        w = copy.copy(self)
        w.accounts, w.patients, w.sessions = (host_strings(self.accounts),
                                              host_strings(self.patients),
                                              host_strings(self.sessions))
        return w

    def engine(self, backend: str, policy: se.Policy = POLICY, register: bool = True) -> se.Engine:
        """A fresh engine with every session; with ``register``, also every account
        and every patient (as a follow-up at the hospital it books)."""
        e = se.Engine(policy, seed=7, backend=backend)
        for kw in self.specs:
            e.add_session(**kw)
        if register:
            e.intern_accounts(self.accounts)
            for p, h in zip(self.patients, self.hospitals):
                e.register_patient(p, follow_up_at=(h,))
        return e

    def arrays(self, e: se.Engine) -> tuple[np.ndarray, ...]:
        """The workload as ``book_many`` arrays of interned ids."""
        return (e.intern_accounts(self.accounts), e.intern_patients(self.patients),
                e.session_ids(self.sessions), e.channel_ids(["app"] * len(self.sessions)),
                np.array(self.nows, dtype=np.int64))


@cache
def world(n: int) -> World:
    return World(N_SESSIONS, n)


def booked_sum(e: se.Engine, w: World) -> int:
    return sum(e.session_counts(s).booked for s in set(w.sessions))


# -- per-call book -------------------------------------------------------------

def _book_all(e: se.Engine, w: World) -> se.Engine:
    book = e.book
    for a, p, s, t in zip(w.accounts, w.patients, w.sessions, w.nows):
        book(a, p, s, "app", now=t)
    return e


@pytest.mark.parametrize("backend", BACKENDS)
def test_book(benchmark, report, backend: str) -> None:
    benchmark.group = "book"
    w = world(N_BOOK)
    warm, rounds = ROUNDS[backend]
    e = benchmark.pedantic(_book_all, setup=lambda: ((w.engine(backend), w.as_host()), {}),
                           rounds=rounds, warmup_rounds=warm)
    assert booked_sum(e, w) == N_BOOK
    report.record("book", backend, N_BOOK, benchmark, TARGETS["book"])


# -- batch book_many -----------------------------------------------------------

def _book_many(e: se.Engine, arrays: tuple[np.ndarray, ...]) -> se.BatchResult:
    return e.book_many(*arrays)


@pytest.mark.parametrize("backend", BACKENDS)
def test_book_many(benchmark, report, backend: str) -> None:
    benchmark.group = "book_many"
    w = world(N_MANY)

    def setup():  # type: ignore[no-untyped-def]
        e = w.engine(backend)
        return (e, w.arrays(e)), {}

    warm, rounds = ROUNDS_MANY[backend]
    res = benchmark.pedantic(_book_many, setup=setup, rounds=rounds, warmup_rounds=warm)
    assert (res.status == se.Status.BOOKED).all()
    report.record("book_many", backend, N_MANY, benchmark, TARGETS["book_many"])


# -- per-call cancel -----------------------------------------------------------

def _cancel_all(e: se.Engine, bookings: list[int], accounts: list[str], t: int) -> se.Engine:
    cancel = e.cancel
    for b, a in zip(bookings, accounts):
        cancel(b, account=a, now=t)
        t += 1
    return e


@pytest.mark.parametrize("backend", BACKENDS)
def test_cancel(benchmark, report, backend: str) -> None:
    benchmark.group = "cancel"
    w = world(N_CANCEL)

    def setup():  # type: ignore[no-untyped-def]
        e = w.engine(backend)
        res = e.book_many(*w.arrays(e))
        return (e, res.booking.tolist(), host_strings(w.accounts), w.nows[-1] + 60_000), {}

    warm, rounds = ROUNDS[backend]
    e = benchmark.pedantic(_cancel_all, setup=setup, rounds=rounds, warmup_rounds=warm)
    assert booked_sum(e, w) == 0
    report.record("cancel", backend, N_CANCEL, benchmark)


# -- memory --------------------------------------------------------------------

def total(m: dict[str, int]) -> int:
    return m["total"] if "total" in m else sum(m.values())


def test_memory(report) -> None:
    """Bytes per slot and per live booking of the compiled core, on a 10^n ladder.

    Targets: <= 16 bytes per slot, <= 64 bytes per live booking beyond fixed
    overhead.  Marginal figures come from the difference between two sizes,
    so fixed costs (tables sized at start-up, the policy) cancel out.
    """
    rows = []
    for n_slots in (10_000, 100_000, 1_000_000):
        w = World(n_slots // SLOTS, n_slots // 2)  # half the slots get booked
        e = w.engine("core", se.Policy(**LEDGER_ONLY), register=False)
        sessions = e.memory_usage()
        arrays = w.arrays(e)  # interns the accounts and patients
        ids = e.memory_usage()
        res = e.book_many(*arrays)
        assert (res.status == se.Status.BOOKED).all()
        rows.append((n_slots, len(w.patients), sessions, ids, e.memory_usage()))
    lines = [f"{'slots':>10} {'bookings':>9} {'sessions B':>12} {'+ids B':>12} {'+booked B':>12} "
             f"{'B/slot':>7} {'B/patient':>10} {'B/booking':>10}"]
    for n_slots, n, m0, m1, m2 in rows:
        b0, b1, b2 = total(m0), total(m1), total(m2)
        lines.append(f"{n_slots:>10,} {n:>9,} {b0:>12,} {b1:>12,} {b2:>12,} "
                     f"{b0 / n_slots:>7.1f} {(b1 - b0) / n:>10.1f} {(b2 - b1) / n:>10.1f}")
    lines.append("  B/patient: one patient plus half an account (families of two), before booking;")
    lines.append("  B/booking: growth from booking alone, ids already interned.")
    (s1, n1, a0, a1, a2), (s2, n2, b0, b1, b2) = [
        (s, n, total(m0), total(m1), total(m2)) for s, n, m0, m1, m2 in rows[-2:]]
    per_slot = (b0 - a0) / (s2 - s1)
    per_booking = ((b2 - b1) - (a2 - a1)) / (n2 - n1)
    per_patient = ((b1 - b0) - (a1 - a0)) / (n2 - n1)
    lines.append(f"marginal 10^5 -> 10^6 slots: {per_slot:.1f} B/slot (target <= 16: "
                 f"{'met' if per_slot <= 16 else 'NOT met'}); {per_booking:.1f} B/live booking "
                 f"(target <= 64: {'met' if per_booking <= 64 else 'NOT met'}); "
                 f"{per_patient:.1f} B/patient+half account")
    _, _, m0, m1, m2 = rows[-1]
    n_ses = rows[-1][0] // SLOTS
    lines.append(f"at 10^6 slots: slot arrays {m0.get('slots', 0) / rows[-1][0]:.1f} B/slot; sessions "
                 f"+ timers {(m0.get('sessions', 0) + m0.get('timers', 0)) / n_ses:.0f} B/session "
                 f"({SLOTS} slots each); bookings {m2.get('bookings', 0) / rows[-1][1]:.1f} B/booking")
    lines.append("by structure at 10^6 slots (bytes: sessions only -> ids interned -> booked):")
    for k in sorted(set(m0) | set(m1) | set(m2), key=lambda k: (k == "total", k)):
        lines.append(f"  {k:<24} {m0.get(k, 0):>12,} -> {m1.get(k, 0):>12,} -> {m2.get(k, 0):>12,}")
    report.sections["slotengine memory (compiled core, Engine.memory_usage)"] = lines
