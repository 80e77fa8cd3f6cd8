"""The release rush, end to end: fair release (放号 lottery) with a slow lane.

Run with ``make bench``.  One regional platform's release morning: 5,000
general-tier sessions x 20 slots (100,000 slots) at 20 hospitals (25
departments x 5 doctors x AM/PM), all released to the app at 08:30 a week
ahead, with the default Policy (5-minute pre-queue, 60-second cohort, all
risk signals on).  1,000,000 requests, each from a distinct patient, from
family accounts of 1-4 patients; about 20% of the requests come from accounts
on a shared blacklist imported (``import_blacklist``) before the rush, so
they go to the slow lane (and GCRA-throttle when a family fires three
requests within ten seconds).  Every request arrives inside the release's
cohort window: half spread over the pre-queue (08:25-08:30), half in the
first seconds after 08:30 (exponential, mean 3 s), each for a uniformly
random session (about 200 requests per session, 10 per slot).

One round is the whole rush: submit every request (each becomes a QUEUED
ticket, or is THROTTLED), ``advance`` past the cohort window so every
session's cohort is drawn (seeded lottery, fair lane before slow lane) and
served, then drain the events (about 1.1 million: a COHORT_DRAWN per session,
a TICKET_SERVED per slot, a TICKET_FAILED per ticket that found its session
full).

Groups (each parametrized over the two backends):

* ``release_per_call``: ``Engine.book`` with string ids in a loop, then
  ``advance`` (which returns the events as ``Event`` objects); the ids are
  passed as a host passes them (bench_book's ``host_strings``: fresh objects
  made in the round's setup, equal to the interned ids, not yet hashed);
* ``release_batch``: ``book_many`` on interned-id arrays, then
  ``advance(drain=False)`` and ``events_array()``.

The compiled core runs the full 1,000,000-request rush; the reference runs
the same world scaled down 20x (250 sessions, 50,000 requests: the same
requests per slot and per session), so compare *per-request* rates, which is
what the summary's ``ops/s`` and ``vs reference`` columns are.  Every round
gets a fresh engine from ``benchmark.pedantic(setup=...)`` (sessions added,
ids interned, blacklist imported, room for the rush reserved with
``Engine.reserve``, the previous round's engine and events freed and
garbage-collected: not timed).  After the last round the
outcome is checked outside the timing: one COHORT_DRAWN per session, exactly
one booking per slot, no slot held twice (``_check_invariants``, compiled core
only: the reference's check is quadratic in tickets), and no
blacklisted account won (each session's fair lane alone outnumbers its slots).
The summary also prints each phase's page faults per round.  Every round's
engine is fresh; without ``reserve`` its million tickets and events would
land on memory the process has not touched, and in a VM those first touches
are a fifth of the batch round (a long-lived engine has that room from its
earlier rushes, which ``reserve`` stands in for).  The per-call round's
faults are the million ``Event`` tuples ``advance`` builds, which no reserve
can make ahead.
The machines are shared and noisy: compare the ratios of one run.
"""
from __future__ import annotations

import gc
import resource
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from statistics import median
from typing import Any

import numpy as np
import pytest

import slotengine as se
from bench_book import host_strings

CST = timezone(timedelta(hours=8))
CLINIC_DAY = se.to_ms(datetime(2025, 3, 17, tzinfo=CST))  # local midnight of the clinic day
RELEASE = CLINIC_DAY - 7 * se.DAY + 8 * se.HOUR + 30 * se.MINUTE  # app release: 08:30 a week ahead
POLICY = se.Policy()  # the defaults: 5-minute pre-queue, 60 s cohort, served at once, signals on
PREQUEUE_MS = POLICY.prequeue_minutes * se.MINUTE
COHORT_MS = POLICY.cohort_seconds * 1_000
BLACKLIST_AT = RELEASE - se.HOUR  # the shared blacklist is imported at 07:30
DONE = RELEASE + COHORT_MS + 1_000  # advance to here: every cohort closed, drawn and served

N_HOSPITALS, N_DEPARTMENTS, N_DOCTORS, SLOTS = 20, 25, 5, 20
N_SESSIONS = 5_000
N_REQUESTS = 1_000_000
FLAGGED_SHARE = 0.20  # of accounts (hence, on average, of requests)
FAMILY = ([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1])  # patients per account: at most 4, so no
# account reaches the early-requests flag (5) or the account-patients limit (5)
SCALE = {"core": 1, "reference": 20}  # the reference runs 1/20 of the world
BACKENDS = ["core", "reference"]
#: (warm-up rounds, rounds): one round of the core builds ~1M tickets.
ROUNDS = {"core": (0, 3), "reference": (0, 3)}
ROUNDS_BATCH = {"core": (1, 4), "reference": (0, 3)}
TARGETS = {"release_per_call": 1_500_000, "release_batch": 10_000_000}
TIMED: dict[tuple[str, str], list[tuple[float, float]]] = {}  # (group, backend) -> [(submit, serve)]
#: (group, backend) -> [(submit, serve)] page faults: first touches of memory the round gets fresh
FAULTS: dict[tuple[str, str], list[tuple[int, int]]] = {}
OUTCOME: dict[tuple[str, str], str] = {}


def session_specs(n_sessions: int) -> list[dict]:
    """``add_session`` keyword arguments: one clinic day, all released at 08:30."""
    specs = []
    for i in range(n_sessions):
        k, h = divmod(i, N_HOSPITALS)
        k, d = divmod(k, N_DEPARTMENTS)
        k, doc = divmod(k, N_DOCTORS)
        pm = k % 2
        start = CLINIC_DAY + (13 * se.HOUR + 30 * se.MINUTE if pm else 8 * se.HOUR)
        specs.append(dict(session=f"S{i:05d}", hospital=f"H{h:02d}", department=f"D{d:02d}",
                          doctor=f"Dr {d:02d}-{doc}", tier="general", starts_at=start,
                          slot_minutes=12, capacity=SLOTS, fee=5_000, release={"app": RELEASE}))
    return specs


@dataclass
class World:
    """The sessions, and the rush: one request per patient, in arrival order."""

    specs: list[dict]
    account_names: list[str]  # every account, once
    patient_names: list[str]  # every patient, once
    flagged: list[str]  # blacklisted account names
    # per request, in arrival order
    accounts: list[str]
    patients: list[str]
    sessions: list[str]
    nows: list[int]
    flagged_row: np.ndarray  # bool: the request's account is blacklisted
    # the same, as indices into account_names / patient_names / specs (for the batch arrays)
    account_idx: np.ndarray
    patient_idx: np.ndarray
    session_idx: np.ndarray

    @property
    def n(self) -> int:
        return len(self.nows)

    def engine(self, backend: str) -> se.Engine:
        """A fresh engine: every session, every id interned, the blacklist imported."""
        e = se.Engine(POLICY, seed=7, backend=backend)
        for kw in self.specs:
            e.add_session(**kw, now=BLACKLIST_AT)
        e.intern_accounts(self.account_names)
        e.intern_patients(self.patient_names)
        until = RELEASE + 30 * se.DAY
        e.import_blacklist([("account", a, until) for a in self.flagged], now=BLACKLIST_AT)
        e.events_array()  # the blacklist's FLAGGED events: drained before the rush
        e.reserve(self.n)  # room for the rush's tickets and events, as a platform makes before a release
        return e

    def arrays(self, e: se.Engine) -> tuple[np.ndarray, ...]:
        """The rush as ``book_many`` arrays of interned ids (each name looked up once)."""
        acc = e.intern_accounts(self.account_names)[self.account_idx]
        pat = e.intern_patients(self.patient_names)[self.patient_idx]
        ses = e.session_ids([kw["session"] for kw in self.specs])[self.session_idx]
        return acc, pat, ses, np.full(self.n, e.channel_ids(["app"])[0], dtype=np.int32), \
            np.array(self.nows, dtype=np.int64)


@cache
def world(scale: int, seed: int = 2025) -> World:
    n_sessions, n = N_SESSIONS // scale, N_REQUESTS // scale
    specs = session_specs(n_sessions)
    rng = np.random.default_rng(seed)
    sizes = rng.choice(FAMILY[0], p=FAMILY[1], size=n)  # more than enough families
    n_acc = int(np.searchsorted(np.cumsum(sizes), n)) + 1
    acct_of_patient = np.repeat(np.arange(n_acc), sizes[:n_acc])[:n]
    flagged_acct = rng.random(n_acc) < FLAGGED_SHARE
    # Arrivals: half over the pre-queue, half in the first seconds after the release.
    pre = rng.random(n) < 0.5
    t = np.where(pre, RELEASE - PREQUEUE_MS + rng.integers(0, PREQUEUE_MS, n),
                 RELEASE + np.minimum(rng.exponential(3_000, n).astype(np.int64), COHORT_MS - 1))
    t.sort()
    who = rng.permutation(n)  # which patient arrives i-th
    where = rng.integers(0, n_sessions, n)  # which session it wants
    account_names = [f"A{i:07d}" for i in range(n_acc)]
    patient_names = [f"P{i:07d}" for i in range(n)]
    acc_rows = acct_of_patient[who]
    return World(
        specs=specs, account_names=account_names, patient_names=patient_names,
        flagged=[account_names[i] for i in np.flatnonzero(flagged_acct)],
        accounts=[account_names[i] for i in acc_rows.tolist()],
        patients=[patient_names[i] for i in who.tolist()],
        sessions=[specs[i]["session"] for i in where.tolist()],
        nows=t.tolist(), flagged_row=flagged_acct[acc_rows],
        account_idx=acc_rows, patient_idx=who, session_idx=where)


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _phases(group: str, backend: str, t0: float, t1: float, t2: float,
            f: tuple[int, int, int]) -> None:
    TIMED.setdefault((group, backend), []).append((t1 - t0, t2 - t1))
    FAULTS.setdefault((group, backend), []).append((f[1] - f[0], f[2] - f[1]))


def _check(e: se.Engine, w: World, served: int, failed: int, drawn: int, queued: int) -> None:
    """Outside the timing: every cohort drawn, every slot booked once, every ticket ended."""
    assert drawn == len(w.specs), (drawn, len(w.specs))
    assert served == len(w.specs) * SLOTS, served
    assert served + failed == queued, (served, failed, queued)
    booked = sum(e.session_counts(kw["session"]).booked for kw in w.specs)
    assert booked == len(w.specs) * SLOTS, booked
    if e.backend == "core":  # the reference's check is O(patients x tickets): minutes here
        e._check_invariants()


# -- per call: Engine.book in a loop, advance, Event objects ----------------------------
# A round's engine and events (a million objects) are kept in ``LAST``, not returned:
# the next round's setup drops them and collects, so no round pays for the garbage
# (or the gen-2 traversals) of the one before.
LAST: dict[str, Any] = {}


def _fresh(build):  # type: ignore[no-untyped-def]
    """A pedantic ``setup`` that frees the previous round first, then builds the next."""
    def setup():  # type: ignore[no-untyped-def]
        LAST.clear()
        gc.collect()
        return build(), {}
    return setup


def _rush_per_call(e: se.Engine, w: World, backend: str,
                   ids: tuple[list[str], list[str], list[str]]) -> None:
    f0 = _faults()
    t0 = time.perf_counter()
    book = e.book
    for a, p, s, t in zip(*ids, w.nows):
        book(a, p, s, "app", now=t)
    t1 = time.perf_counter()
    f1 = _faults()
    events = e.advance(DONE)
    t2 = time.perf_counter()
    _phases("release_per_call", backend, t0, t1, t2, (f0, f1, _faults()))
    LAST.update(engine=e, events=events)


@pytest.mark.parametrize("backend", BACKENDS)
def test_release_per_call(benchmark, report, backend: str) -> None:
    benchmark.group = "release_per_call"
    w = world(SCALE[backend])
    warm, rounds = ROUNDS[backend]
    benchmark.pedantic(_rush_per_call, setup=_fresh(lambda: (
        w.engine(backend), w, backend,
        (host_strings(w.accounts), host_strings(w.patients), host_strings(w.sessions)))),
                       rounds=rounds, warmup_rounds=warm)
    e, events = LAST.pop("engine"), LAST.pop("events")
    kinds = np.array([int(ev.kind) for ev in events])
    served = int((kinds == se.EventKind.TICKET_SERVED).sum())
    failed = int((kinds == se.EventKind.TICKET_FAILED).sum())
    drawn_ev = [ev for ev in events if ev.kind == se.EventKind.COHORT_DRAWN]
    queued = sum(ev.detail for ev in drawn_ev)
    _check(e, w, served, failed, len(drawn_ev), queued)
    flagged = set(w.flagged)
    winners = [ev.account for ev in events if ev.kind == se.EventKind.TICKET_SERVED]
    if winners[0] is not None:  # TICKET_SERVED names the account
        assert not flagged.intersection(winners), "a slow-lane ticket beat a full fair lane"
    OUTCOME[("release_per_call", backend)] = (
        f"{w.n:,} requests -> {queued:,} queued, {w.n - queued:,} refused at once; "
        f"{served:,} served, {failed:,} failed; {len(events):,} events")
    report.record("release_per_call", backend, w.n, benchmark, TARGETS["release_per_call"])
    _summary(report)


# -- batch: book_many, advance without draining, events_array -------------------------

def _rush_batch(e: se.Engine, arrays: tuple[np.ndarray, ...], backend: str) -> None:
    f0 = _faults()
    t0 = time.perf_counter()
    res = e.book_many(*arrays)
    t1 = time.perf_counter()
    f1 = _faults()
    e.advance(DONE, drain=False)
    ev = e.events_array()
    t2 = time.perf_counter()
    _phases("release_batch", backend, t0, t1, t2, (f0, f1, _faults()))
    LAST.update(engine=e, result=res, events=ev)


@pytest.mark.parametrize("backend", BACKENDS)
def test_release_batch(benchmark, report, backend: str) -> None:
    benchmark.group = "release_batch"
    w = world(SCALE[backend])

    def build():  # type: ignore[no-untyped-def]
        e = w.engine(backend)
        return e, w.arrays(e), backend

    warm, rounds = ROUNDS_BATCH[backend]
    benchmark.pedantic(_rush_batch, setup=_fresh(build), rounds=rounds, warmup_rounds=warm)
    e, res, ev = LAST.pop("engine"), LAST.pop("result"), LAST.pop("events")
    status = res.status
    queued = status == se.Status.QUEUED
    throttled = res.reason == se.Reason.THROTTLED
    assert (queued | throttled).all(), np.unique(res.reason[~(queued | throttled)])
    assert (res.ticket[queued] >= 0).all() and (res.retry_after[throttled] > 0).all()
    assert w.flagged_row[throttled].all(), "only slow-lane accounts are throttled"
    kind = ev["kind"]
    is_served = kind == se.EventKind.TICKET_SERVED
    served = int(is_served.sum())
    failed = int((kind == se.EventKind.TICKET_FAILED).sum())
    drawn = kind == se.EventKind.COHORT_DRAWN
    _check(e, w, served, failed, int(drawn.sum()), int(queued.sum()))
    assert int(ev["detail"][drawn].sum()) == int(queued.sum())
    # Which request each served ticket came from: no blacklisted account won.
    row_of_ticket = np.full(int(res.ticket.max()) + 1, -1, dtype=np.int64)
    row_of_ticket[res.ticket[queued]] = np.flatnonzero(queued)
    won = row_of_ticket[ev["detail"][is_served]]
    assert (won >= 0).all() and not w.flagged_row[won].any(), "a slow-lane ticket beat a full fair lane"
    OUTCOME[("release_batch", backend)] = (
        f"{w.n:,} requests ({w.flagged_row.mean():.1%} from blacklisted accounts) -> "
        f"{int(queued.sum()):,} queued, {int(throttled.sum()):,} THROTTLED; {served:,} served, "
        f"{failed:,} failed; {len(kind):,} events")
    report.record("release_batch", backend, w.n, benchmark, TARGETS["release_batch"])
    _summary(report)


def _summary(report) -> None:  # type: ignore[no-untyped-def]
    lines = [
        f"world: {N_SESSIONS:,} sessions x {SLOTS} slots, {N_REQUESTS:,} requests, all inside the "
        f"08:30 release's cohort window (pre-queue {POLICY.prequeue_minutes} min, cohort "
        f"{POLICY.cohort_seconds} s); ~{FLAGGED_SHARE:.0%} from blacklisted accounts (slow lane)",
        f"the reference runs 1/{SCALE['reference']} of it ({N_SESSIONS // SCALE['reference']:,} sessions, "
        f"{N_REQUESTS // SCALE['reference']:,} requests): rates and ratios above are per request",
        "median seconds per round: submit (book / book_many) + advance and drain the events",
    ]
    for (group, backend), rows in TIMED.items():
        sub = median(r[0] for r in rows)
        srv = median(r[1] for r in rows)
        n = world(SCALE[backend]).n
        lines.append(f"  {group:<17} {backend:<10} submit {sub:8.3f} s ({n / sub / 1e6:6.2f} M/s)  "
                     f"advance+events {srv:8.3f} s  ({len(rows)} rounds incl. warm-up)")
    lines.append("page faults per round (median; first touches of memory the round's fresh engine "
                 "gets from the kernel, a few us each in a VM):")
    for (group, backend), rows_f in FAULTS.items():
        lines.append(f"  {group:<17} {backend:<10} submit {median(r[0] for r in rows_f):>9,.0f}  "
                     f"advance+events {median(r[1] for r in rows_f):>9,.0f}")
    for (group, backend), text in OUTCOME.items():
        lines.append(f"  {group:<17} {backend:<10} {text}")
    report.sections["slotengine release rush (fair release, bench_release.py)"] = lines
