"""``Core.snapshot()`` and ``Core.restore(data)`` (docs/durability.md, "Core API").

A restored Core must equal the one that wrote the snapshot: the same ``dump()``
and ``state_hash()``, invariants that hold, and the same results, events and
hashes for every later command.  The tests:

* Engine scenarios (fair release with cohorts, the slow lane and a drain
  queue; flags, blocks and a blacklist; holds, cancels and no-shows; the
  waitlist with fills, re-releases and suspension moves; credit with cover:
  top-ups, lines, settlements, bills falling due, repayments) snapshot the
  Engine's core at several checkpoints.  Each checkpoint is restored into a
  fresh ``Core(engine._core_policy, seed)`` and compared; then the scenario
  is replayed to that checkpoint and the original and the restored core get
  the same seeded burst of core-level commands (by id), compared call by call
  (results, errors, events) and by state hash, with a snapshot of the
  restored core restored again half-way.
* The differential state machine of test_differential.py with one more rule:
  the compiled core is replaced, now and then, by a restore of its own
  snapshot, and must then keep agreeing with the reference model.
* Refusals: a Core with state (InvalidState), truncated data, every header
  byte flipped, wrong struct sizes, trailing bytes, a snapshot of another
  policy (shape or not), bad argument types; the target Core unchanged each
  time (and still restorable).
* The name indexes: never written, rebuilt after a restore, so
  ``cancel_named`` still checks owners.
* Speed on a big state (100,000 sessions x 20 slots, 1,000,000 bookings):
  MB/s printed (``-s`` shows it).
"""
from __future__ import annotations

import random
import re
import subprocess
import sys
import struct
from pathlib import Path

import numpy as np
import pytest
import test_differential as td
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule

import slotengine as se
from slotengine import errors
from slotengine._core import Core, Result
from slotengine.policy import CorePolicy

SECOND, MINUTE, HOUR, DAY = 1_000, 60_000, 3_600_000, 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
LIVE = (1, 2)  # HELD, BOOKED


# -- helpers ---------------------------------------------------------------------------

def roundtrip(core: Core, policy: CorePolicy, seed: int = 0) -> Core:
    """Snapshot ``core``, restore into a fresh Core, check they are equal; the copy."""
    data = core.snapshot()
    assert type(data) is bytes and data[:8] == b"SLOTCORE"
    copy = Core(policy, seed)
    copy.restore(data)
    assert copy.dump() == core.dump()
    assert copy.state_hash() == core.state_hash()
    copy._check_invariants()
    assert copy.snapshot() == data, "a restored core writes the same bytes"
    return copy


def _norm(x: object) -> object:
    """A comparable form of a command's result."""
    if isinstance(x, Result):
        return ("Result", x.as_tuple(), x.window, x.ticket, x.request, x.retry_after, x.ok)
    if isinstance(x, np.ndarray):
        return ("array", x.dtype.str, x.tolist())
    if isinstance(x, (tuple, list)):
        return type(x).__name__, [_norm(v) for v in x]
    if isinstance(x, dict):
        return {k: _norm(v) for k, v in x.items()}
    return x


class Twin:
    """The same core-level commands on two cores: results, errors and events must agree."""

    def __init__(self, a: Core, b: Core, policy: CorePolicy, rnd: random.Random) -> None:
        self.a, self.b, self.policy, self.rnd = a, b, policy, rnd
        self.calls = 0
        self.ok = 0

    def call(self, method: str, *args: object) -> object:
        out = []
        for core in (self.a, self.b):
            try:
                out.append(("ok", _norm(getattr(core, method)(*args))))
            except errors.SlotEngineError as exc:
                out.append(("error", type(exc).__name__, str(exc)))
        assert out[0] == out[1], f"{method}{args}: original {out[0]}, restored {out[1]}"
        self.calls += 1
        self.ok += out[0][0] == "ok"
        if self.rnd.random() < 0.7:  # else events pile up (a snapshot carries them)
            ea, eb = self.a.drain_events(), self.b.drain_events()
            assert ea == eb, f"{method}{args}: events differ\n{ea}\n{eb}"
        return out[0][1] if out[0][0] == "ok" else None

    def same(self) -> None:
        assert self.a.state_hash() == self.b.state_hash()
        assert self.a.dump() == self.b.dump()

    def swap(self, seed: int) -> None:
        """Replace the restored core by a restore of its own snapshot."""
        self.b = roundtrip(self.b, self.policy, seed)

    # -- a seeded burst of core-level commands -------------------------------------------

    def _time(self) -> int:
        a, rnd = self.a, self.rnd
        if rnd.random() < 0.15:
            timers = a.dump()["timers"]
            if timers:  # just before, at or after a timer
                due = rnd.choice(timers[:8])[0] + rnd.choice([-1, 0, 1])
                return max(a.now, due)
        return a.now + rnd.choice([0, 0, 1, 50, SECOND, 30 * SECOND, MINUTE, 10 * MINUTE, HOUR,
                                   6 * HOUR, DAY])

    def burst(self, n: int, swap_at: int | None = None, seed: int = 0) -> None:
        a, rnd, pol = self.a, self.rnd, self.policy
        nch = pol.n_channels
        ops = ["book", "hold", "book_many", "confirm", "cancel", "check_in", "advance",
               "join", "cancel_waitlist", "cancel_ticket", "flag", "unflag", "block", "unblock",
               "blacklist", "mark_known", "add_capacity", "suspend", "block_slot",
               "unblock_slot", "top_up", "refund", "open_line", "close_line", "set_limit",
               "repay", "settle", "add_session", "grow", "rng"]
        weights = [14, 5, 3, 4, 6, 5, 6, 6, 2, 2, 2, 1, 1, 1, 1, 2, 2, 1, 1, 1, 4, 1, 2, 1, 1,
                   3, 3, 1, 1, 1]
        for i in range(n):
            if swap_at is not None and i == swap_at:
                self.same()
                self.swap(seed)
            op = rnd.choices(ops, weights)[0]
            ns, nb, npt, na = a.n_sessions, a.n_bookings, a.n_patients, a.n_accounts
            t = self._time()
            s = rnd.randrange(ns) if ns else 0
            p = rnd.randrange(npt) if npt else 0
            acc = rnd.randrange(na) if na else 0
            c = rnd.randrange(nch)
            live = [b for b in range(nb) if a.booking_info(b)[6] in LIVE]
            if op in ("book", "hold") and ns and npt and na:
                self.call("book", acc, p, s, c, t, op == "hold")
            elif op == "book_many" and ns and npt and na:
                k = rnd.randint(1, 6)
                self.call("book_many", [rnd.randrange(na) for _ in range(k)],
                          [rnd.randrange(npt) for _ in range(k)],
                          [rnd.randrange(ns) for _ in range(k)], [rnd.randrange(nch)] * k,
                          [t] * k, rnd.random() < 0.3)
            elif op == "confirm" and live:
                b = rnd.choice(live)
                self.call("confirm", b, a.booking_info(b)[3], t)
            elif op == "cancel" and nb:
                b = rnd.choice(live) if live and rnd.random() < 0.9 else rnd.randrange(nb)
                owner = a.booking_info(b)[3] if rnd.random() < 0.9 else acc
                self.call("cancel", b, owner, t)
            elif op == "check_in" and nb:
                self.call("check_in", rnd.choice(live) if live else rnd.randrange(nb), t)
            elif op == "advance":
                self.call("advance", t)
            elif op == "join" and ns and npt and na:
                k = rnd.randint(1, min(ns, pol.wl_candidates))
                self.call("join_waitlist", acc, p, rnd.sample(range(ns), k), c,
                          rnd.randint(1, max(1, pol.wl_classes)), t + rnd.choice([MINUTE, DAY]), t)
            elif op == "cancel_waitlist" and a.n_requests:
                r = rnd.randrange(a.n_requests)
                self.call("cancel_waitlist", r, a.waitlist_info(r)[0], t)
            elif op == "cancel_ticket" and a.n_tickets:
                k = rnd.randrange(a.n_tickets)
                self.call("cancel_ticket", k, a.ticket_info(k)[2], t)
            elif op == "flag" and na and npt:
                kind = rnd.randint(0, 1)
                self.call("flag", kind, acc if kind == 0 else p, rnd.choice([1, 2]),
                          t + rnd.choice([MINUTE, HOUR, DAY]), t)
            elif op in ("unflag", "unblock") and na and npt:
                kind = rnd.randint(0, 1)
                self.call(op, kind, acc if kind == 0 else p, t)
            elif op == "block" and na and npt:
                kind = rnd.randint(0, 1)
                self.call("block", kind, acc if kind == 0 else p, t + rnd.choice([MINUTE, HOUR]), t)
            elif op == "blacklist" and na and npt:
                self.call("import_blacklist", [0, 1], [acc, p], [t + HOUR, t + DAY], t)
            elif op == "mark_known" and npt:
                self.call("mark_known", p, rnd.randint(0, 4), t)
            elif op == "add_capacity" and ns:
                self.call("add_capacity", s, rnd.choice([1, 2, 70]), c, t)
            elif op == "suspend" and ns and rnd.random() < 0.5:
                self.call("suspend", s, t)
            elif op in ("block_slot", "unblock_slot") and ns:
                self.call(op, s, rnd.randint(1, a.session_flags(s)[3]), t)
            elif op == "top_up" and npt:
                self.call("top_up", p, rnd.choice([100, 2_000, 50_000]), t)
            elif op == "refund" and npt:
                w = a.wallet(p)
                if w[0] > w[1]:
                    self.call("refund", p, rnd.randint(1, w[0] - w[1]), t)
            elif op == "open_line" and npt:
                self.call("open_line", p, rnd.choice([1, 2]), rnd.choice([-1, 5_000, 100_000]), t)
            elif op == "close_line" and npt:
                self.call("close_line", p, t)
            elif op == "set_limit" and npt:
                self.call("set_limit", p, rnd.choice([0, 3_000, 200_000]), t)
            elif op == "repay" and npt:
                used = a.wallet(p)[5]
                if used:
                    self.call("repay", p, rnd.choice([used, rnd.randint(1, used)]), t)
            elif op == "settle" and nb:
                arrived = [b for b in range(nb) if a.booking_info(b)[6] == 3
                           and a.booking_cover(b)[2] < 0]
                if arrived:
                    b = rnd.choice(arrived)
                    hb, hc, _ = a.booking_cover(b)
                    self.call("settle", b, rnd.choice([hb + hc, 0, 1_500, 30_000]), t)
            elif op == "add_session":
                start = t + rnd.choice([HOUR, DAY])
                quotas = [0] * nch
                quotas[pol.public_channel] = 3
                self.call("add_session", rnd.randint(0, 1), rnd.randint(0, 2), rnd.randint(0, 2),
                          0, start, start + 4 * HOUR, max(0, start - DAY), max(0, start - HOUR),
                          10 * MINUTE, 3, rnd.choice([0, 1_000]), quotas, [t] * nch, t,
                          rnd.choice([-1, 0, 1]))
            elif op == "grow":
                self.call("ensure_patients", npt + rnd.randint(0, 3))
                self.call("ensure_accounts", na + rnd.randint(0, 3))
            elif op == "rng":
                self.call("rng_next")
        self.same()
        self.b._check_invariants()


# -- Engine scenarios --------------------------------------------------------------------

def hospital_day(e: se.Engine):
    """A few days at two hospitals through the Engine's API; yields at checkpoints."""
    pol = e.policy
    rel = T0 + HOUR
    names = []
    for i in range(8):
        name = f"S{i}"
        names.append(name)
        e.add_session(name, hospital=f"H{i % 2}", department=f"D{i % 3}", doctor=f"Dr{i % 2}",
                      tier="expert" if i % 4 == 3 else "general",
                      starts_at=T0 + 2 * DAY + (i // 2) * DAY + (i % 2) * 4 * HOUR,
                      capacity=3 + i % 3, fee=0 if i == 5 else 1_500 + 500 * (i % 3),
                      release={ch: rel for ch in pol.channels}, now=T0)
    for j in range(24):  # a prepaid balance for most patients, a credit line for some
        if j % 4 == 0:
            e.credit.open_line(f"P{j}", limit=6_000, now=T0 + 2 * j + 1)
        elif j % 4 != 3:
            e.credit.top_up(f"P{j}", 2_000 if j % 3 else 20_000, now=T0 + 2 * j)
    e.import_blacklist([("account", "BOT", T0 + 30 * DAY), ("patient", "P23", T0 + 3 * DAY)],
                       now=T0 + 100)
    e.flag(account="A7", until=T0 + 10 * DAY, now=T0 + 101)
    e.block(patient="P19", until=T0 + 2 * HOUR, now=T0 + 102)
    yield "sessions, money, flags"

    # the pre-queue: requests before the release join the session's cohort
    t = rel - 2 * MINUTE
    for j in range(36):
        e.book("BOT" if j % 9 == 0 else f"A{j % 10}", f"P{j % 24}", names[j % 3], now=t + j * 500)
    yield "cohorts collecting"  # fair and slow lists, QUEUED tickets

    e.advance(rel + pol.cohort_seconds * SECOND + 1)
    yield "cohorts drawn, queues draining"

    t = e.now + MINUTE
    if e._core.n_tickets > 1:
        k = 1
        e.cancel_ticket(k, account=e._accounts.names[e._core.ticket_info(k)[2]], now=t)
    e.advance(t + 10 * MINUTE)
    for j in range(30):  # open booking and holds on the later sessions
        e.book(f"A{j % 12}", f"P{(j * 5) % 24}", names[3 + j % 5], hold=j % 4 == 0,
               now=e.now + j * SECOND)
    held = [b for b in range(e._core.n_bookings) if e._core.booking_info(b)[6] == 1]
    for b in held[: len(held) // 2]:
        e.confirm(b, account=e._accounts.names[e._core.booking_info(b)[3]], now=e.now + 1)
    yield "booked and holding"

    # the waitlist behind full sessions, then cancellations that free slots
    for j in range(10):
        e.join_waitlist(f"A{j}", f"P{(j + 11) % 24}", [names[3 + j % 4], names[4 + j % 4]],
                        deadline=T0 + 2 * DAY, now=e.now + SECOND)
    live = [b for b in range(e._core.n_bookings) if e._core.booking_info(b)[6] in LIVE]
    for b in live[::3]:
        e.cancel(b, account=e._accounts.names[e._core.booking_info(b)[3]], now=e.now + SECOND)
    e.block_slot(names[6], 1, now=e.now + 1)
    e.advance(e.now + 2 * MINUTE)  # some freed slots still RETURNING
    yield "waitlist and returning slots"

    e.advance(e.now + 10 * MINUTE)
    e.suspend(names[4], now=e.now + 1)  # moves or waitlists its bookings
    e.add_capacity(names[7], 2, now=e.now + 1)
    e.register_patient("P3", follow_up_at=["H1"], now=e.now + 1)
    yield "suspended, capacity added"

    # visits: check in (settles with cover at check-in), settle at the visit, no-shows
    starts = sorted((s["starts_at"], k) for k, s in enumerate(e._core.dump()["sessions"]))
    for start, sid in starts:
        e.advance(max(e.now, start + MINUTE))
        for b in range(e._core.n_bookings):
            info = e._core.booking_info(b)
            if info[0] == sid and info[6] == 2 and b % 3:
                e.check_in(b, now=e.now + 1)
                if e._core.booking_cover(b)[2] < 0:
                    e.credit.settle(b, 3_000 if b % 2 else None, now=e.now + 2)
    yield "visits and bills"

    e.advance(e.now + 27 * DAY)  # notices
    for j in range(0, 24, 2):
        owed = e._core.wallet(e._patients.ids[f"P{j}"])[5] if f"P{j}" in e._patients.ids else 0
        if owed:
            e.credit.repay(f"P{j}", owed, now=e.now + 1)
    e.advance(e.now + 5 * DAY)  # the rest fall overdue
    yield "bills repaid or overdue"


SCENARIO_POLICIES = {
    "fair+waitlist": se.Policy(outflow_per_second=2, noshow_release_minutes=15,
                               rerelease_seconds=(30, 300), early_flag=(3, 1)),
    # an early ring longer than an account's row holds: kept in Core._early
    "fair, long early ring": se.Policy(early_flag=(9, 1), early_seconds=60),
    "credit+waitlist": se.Policy(require_cover=True, settle_at="visit", on_suspend="waitlist",
                                 bill_due_days=3, bill_notice_days=1, outflow_per_second=0),
    "credit at check-in": se.Policy(require_cover=True, on_suspend="cancel", bar_first_visit_expert=True,
                                    rerelease_seconds=(0, 0), prequeue_minutes=0),
}


@pytest.mark.parametrize("name", list(SCENARIO_POLICIES))
def test_engine_scenario(name: str) -> None:
    policy = SCENARIO_POLICIES[name]
    seed = 20260101 + len(name)
    e = se.Engine(policy=policy, seed=seed)
    labels = []
    for label in hospital_day(e):  # every checkpoint round-trips (the Engine goes on)
        labels.append(label)
        roundtrip(e._core, e._core_policy, seed)
    d = e._core.dump()
    assert d["bookings"] and d["sessions"] and d["accounts"]
    if policy.require_cover:
        assert d["bills"] and d["movements"] and d["covers"]
    if policy.prequeue_minutes:
        assert d["tickets"] and d["flag_log"]
    assert d["requests"], "the scenario should reach the waitlist"
    # replay to each checkpoint; then the original and a restore get the same commands
    for k, label in enumerate(labels):
        e = se.Engine(policy=policy, seed=seed)
        steps = hospital_day(e)
        for _ in range(k + 1):
            next(steps)
        copy = roundtrip(e._core, e._core_policy, seed)
        twin = Twin(e._core, copy, e._core_policy, random.Random(k))
        twin.burst(70, swap_at=35, seed=seed)
        assert twin.ok > 20, f"{label}: too few commands succeeded ({twin.ok})"


def test_cohort_lists_round_trip() -> None:
    """Sessions collecting a cohort (Core._fair / _slow lists, saved as runs)."""
    e = se.Engine(policy=se.Policy(), seed=7)
    pol = e._core_policy
    rel = T0 + HOUR
    for i in range(5):
        e.add_session(f"S{i}", hospital="H", department="D", doctor="Dr", starts_at=T0 + DAY,
                      capacity=4, fee=0, release={"app": rel}, now=T0)
    e.flag(account="slow", until=T0 + DAY, now=T0 + 1)
    for j in range(20):  # sessions 1 and 3 only: runs skip empty lists
        e.book("slow" if j % 3 == 0 else f"A{j}", f"P{j}", f"S{1 + 2 * (j % 2)}",
               now=rel - MINUTE + j)
    d = e._core.dump()
    assert [bool(s["cohort"]) for s in d["sessions"]] == [False, True, False, True, False]
    lanes = {e._core.ticket_info(k)[5] for s in d["sessions"] for k in s["cohort"]}
    assert lanes == {0, 1}, "both the fair and the slow list are in use"
    copy = roundtrip(e._core, pol, 7)
    twin = Twin(e._core, copy, pol, random.Random(1))
    twin.rnd.random = lambda: 0.0  # always compare events
    twin.call("advance", rel + HOUR)
    twin.same()
    assert e._core.n_bookings > 0


# -- the differential machine, with snapshot swaps -----------------------------------------

class _SwapMixin:
    """Now and then replace the compiled core by a restore of its own snapshot."""

    swaps = 0

    @precondition(lambda self: hasattr(self, "fast"))
    @rule(data=st.data())
    def snapshot_swap(self, data: st.DataObject) -> None:
        seed = data.draw(st.integers(0, 2**64 - 1), label="restore_seed")
        self.fast = roundtrip(self.fast, self.policy, seed)
        type(self).swaps += 1


class _SwapCoreVsReference(_SwapMixin, td._CoreVsReference):
    pass


class _SwapCreditVsReference(_SwapMixin, td._CreditCoreVsReference):
    pass


# a third of the profile's examples each (the plain machines run the full count)
TestSnapshotDifferential = _SwapCoreVsReference.TestCase
TestSnapshotDifferential.settings = settings(
    TestSnapshotDifferential.settings, max_examples=max(10, settings().max_examples // 3))
TestSnapshotCreditDifferential = _SwapCreditVsReference.TestCase
TestSnapshotCreditDifferential.settings = settings(
    TestSnapshotCreditDifferential.settings, max_examples=max(10, settings().max_examples // 3))


def test_snapshot_soak() -> None:
    """Seeded waitlist and credit bursts (test_differential's soak), the compiled core
    swapped for a restore of itself before every burst, compared with the reference."""
    def adjust_wl(policy, rnd, seed):
        lo, hi = rnd.choice(td.RERELEASES)
        return policy._replace(rerelease_min_ms=lo, rerelease_max_ms=hi, prequeue_ms=0,
                               cohort_ms=0, early_count=0, suspend_action=seed % 3, cover=False)

    def adjust_cr(policy, rnd, seed):
        return policy._replace(prequeue_ms=0, cohort_ms=0, early_count=0, cover=True,
                               settle_at_check_in=seed % 2 == 0, suspend_action=seed % 3)

    def swapped(burst):
        def run(m, rnd):
            m.fast = roundtrip(m.fast, m.policy, rnd.getrandbits(64))
            burst(m, rnd)
        return run

    td._soak(_SwapWaitlist, range(500, 512), 8, adjust_wl, swapped(lambda m, r: m._burst(r, 10)))
    td._soak(_SwapCredit, range(1500, 1512), 8, adjust_cr,
             swapped(lambda m, r: m._money_burst(r, 12)))


class _SwapWaitlist(td._WaitlistCoreVsReference):
    pass


class _SwapCredit(td._CreditCoreVsReference):
    pass


# -- every Core field is accounted for -------------------------------------------------------

#: Core's state: saved by snapshot() (vectors, then scalars)
SAVED = [
    "_sessions", "_q_init", "_q_left", "_release", "_slot_bk", "_bits", "_bookings",
    "_patients", "_strikes", "_cancels", "_acct_hist", "_timers", "_events", "_known", "_sx",
    "_fair", "_slow", "_accts", "_early", "_acancels", "_pmarks", "_p_tq", "_tickets",
    "_flag_log", "_requests", "_rq_cold", "_rq_open", "_wq", "_wls", "_wl_of", "_wl_open",
    "_p_rq", "_a_rq", "_filled", "_returns", "_wallets", "_purses", "_bcover", "_rcover",
    "_bills", "_moves",
] + [
    "_now", "_rng", "_seq", "_n_free", "_n_known", "_known_shift", "_n_queued", "_n_marks",
    "_n_pmarks", "_wq_dead", "_wq_live", "_n_open", "_ncmd", "_money",
]
#: filled and consumed within one command: not saved
SCRATCH = ["_scratch", "_shuf", "_wq_keep", "_rq_scratch", "_left"]
#: bind_names' objects and the name indexes built from them: not saved
BINDINGS = [
    "_acc_ids", "_pat_ids", "_ses_ids", "_chan_ids", "_acc_names", "_pat_names", "_ses_names",
    "_aidx", "_pidx", "_sidx", "_aidx_n", "_pidx_n", "_sidx_n", "_nseed", "_slow_book",
    "_slow_cancel",
]
#: the journal writer (_journal.pxi): where records go, not engine state
JOURNAL = ["_jst", "_jrec", "_jsize", "_jbuf", "_jpos", "_jcap", "_jseq", "_jsync_every",
           "_jsync_n", "_jsync", "_jrotate", "_jnote", "_jnlen", "_jmsg", "_jview", "_jheld"]


def _core_fields(src: str) -> list[str]:
    """The cdef attributes of class Core, in _core.pyx's order."""
    body = src[src.index("cdef class Core:"):src.index("    def __init__(self, policy, seed):")]
    out = []
    for line in body.splitlines():
        m = re.match(r"    cdef (?:[\w\[\], ]+?) (_\w+(?:\[\d+\])?(?:, _\w+)*)\s*(?:#.*)?$", line)
        if m:
            out += [re.sub(r"\[\d+\]", "", x.strip()) for x in m.group(1).split(",")]
    return out


def test_every_core_field_is_classified() -> None:
    """A new cdef field of Core must be saved by _snapshot.pxi, or be policy (then in the
    policy digest), scratch or a binding: this test names every one (so that a field
    added by another change cannot be silently left out of snapshots)."""
    src_dir = Path(se.__file__).parent
    if not (src_dir / "_core.pyx").exists():
        pytest.skip("no source tree")
    fields = _core_fields((src_dir / "_core.pyx").read_text())
    assert len(fields) > 100 and len(set(fields)) == len(fields)
    snap_src = (src_dir / "_snapshot.pxi").read_text()
    digest = snap_src[snap_src.index("cdef uint64_t sn_policy_digest"):
                      snap_src.index("cdef void sn_scalars_get")]
    known = set(SAVED) | set(SCRATCH) | set(BINDINGS) | set(JOURNAL)
    for name in fields:
        if name in SAVED:
            assert f"self.{name}" in snap_src.split("# -- writing")[0], f"{name} is not saved"
            assert snap_src.count(f"self.{name}") >= 2, f"{name}: saved but not restored"
        elif name not in known:  # a policy value: part of the digest
            assert f"self.{name}" in digest, \
                f"Core.{name} is neither saved, scratch, a binding nor in the policy digest"
    assert set(SAVED) <= set(fields), f"gone: {set(SAVED) - set(fields)}"


# -- the name indexes -----------------------------------------------------------------------

def test_names_not_written_and_rebuilt() -> None:
    e = se.Engine(policy=se.Policy(prequeue_minutes=0, cohort_seconds=0), seed=1)
    e.add_session("S", hospital="H", department="D", doctor="Dr", starts_at=T0 + DAY,
                  capacity=6, fee=0, release={"app": T0}, now=T0)
    for j in range(4):
        e.book(f"acct-{j}", f"P{j}", "S", now=T0 + 1 + j)
    assert e.cancel(0, account="acct-0", now=T0 + 10).status == se.Status.CANCELLED
    assert e.cancel(1, account="acct-0", now=T0 + 11).reason == se.Reason.NOT_OWNER
    data = e._core.snapshot()  # the name cache is filled now: no pointer may be written
    words = set(struct.unpack(f"<{len(data) // 8}Q", data[: len(data) // 8 * 8]))
    for name in e._accounts.names:
        assert id(name) not in words, f"a pointer to {name!r} was written"
    # a new Engine's core, bound to the same names (the facade restores its tables)
    e2 = se.Engine(policy=e.policy, seed=1)
    for name in e._accounts.names:
        e2._accounts.intern(name)
    for name in e._patients.names:
        e2._patients.intern(name)
    for name in e._sessions.names:
        e2._sessions.intern(name)
    e2._meta = list(e._meta)
    e2._core.restore(data)
    assert e2._core.state_hash() == e._core.state_hash()
    for eng in (e, e2):  # cancel_named on both: owner checks, then a real cancel
        assert eng.cancel(2, account="acct-3", now=T0 + 20).reason == se.Reason.NOT_OWNER
        assert eng.cancel(2, account="acct-2", now=T0 + 21).status == se.Status.CANCELLED
        assert eng.cancel(3, account="acct-0", now=T0 + 22).reason == se.Reason.NOT_OWNER
        with pytest.raises(errors.UnknownAccount):
            eng.cancel(3, account="nobody", now=T0 + 23)
    assert e2._core.state_hash() == e._core.state_hash()
    e2._core._check_invariants()


# -- refusals: the target unchanged ----------------------------------------------------------

@pytest.fixture(scope="module")
def world() -> tuple[CorePolicy, bytes]:
    """A snapshot with some of everything (the credit scenario, through its visits)."""
    e = se.Engine(policy=SCENARIO_POLICIES["credit+waitlist"], seed=3)
    for label in hospital_day(e):
        if label == "visits and bills":
            break
    core = e._core
    assert core.n_bookings and core.n_requests and core.n_movements and core.n_bills
    return e._core_policy, core.snapshot()


@pytest.fixture(scope="module")
def snap(world: tuple[CorePolicy, bytes]) -> bytes:
    return world[1]


@pytest.fixture(scope="module")
def policy(world: tuple[CorePolicy, bytes]) -> CorePolicy:
    return world[0]


def _refused(data: object, policy: CorePolicy, err: type = errors.SnapshotError,
             match: str | None = None) -> None:
    core = Core(policy, 11)
    before = core.state_hash()
    with pytest.raises(err, match=match):
        core.restore(data)
    assert core.state_hash() == before
    assert core.rng_next() == Core(policy, 11).rng_next()


def test_restore_accepts_buffers(snap: bytes, policy: CorePolicy) -> None:
    want = Core(policy, 0)
    want.restore(snap)
    for data in (bytearray(snap), memoryview(snap), memoryview(bytearray(snap)),
                 np.frombuffer(snap, dtype=np.uint8)):
        core = Core(policy, 0)
        core.restore(data)
        assert core.state_hash() == want.state_hash()
    # an unaligned buffer is fine too
    core = Core(policy, 0)
    core.restore(memoryview(b"x" + snap)[1:])
    assert core.state_hash() == want.state_hash()


def test_restore_refuses_a_core_with_state(snap: bytes, policy: CorePolicy) -> None:
    makers = [
        lambda c: c.ensure_patients(1),
        lambda c: c.ensure_accounts(2),
        lambda c: c.advance(5),
        lambda c: c.add_session(0, 0, 0, 0, 100, 200, 50, 40, 10, 1, 0,
                                [1] + [0] * (policy.n_channels - 1), [0] * policy.n_channels, 0),
    ]
    for make in makers:
        core = Core(policy, 5)
        make(core)
        before = core.state_hash()
        with pytest.raises(errors.InvalidState):
            core.restore(snap)
        assert core.state_hash() == before
    done = Core(policy, 5)
    done.restore(snap)
    with pytest.raises(errors.InvalidState):  # a second restore too
        done.restore(snap)
    fresh = Core(policy, 5)
    fresh.rng_next()  # the generator alone is no state: restore replaces it
    fresh.restore(snap)
    assert fresh.state_hash() == done.state_hash()


def test_restore_refuses_truncated(snap: bytes, policy: CorePolicy) -> None:
    for cut in (0, 7, 8, 31, 32, 100, 500, len(snap) // 2, len(snap) - 8, len(snap) - 1):
        _refused(snap[:cut], policy, match="truncated|magic|trailing|inconsistent")


def test_restore_refuses_trailing_bytes(snap: bytes, policy: CorePolicy) -> None:
    for extra in (b"\0", b"\0" * 8, b"garbage!", snap[:64]):
        _refused(snap + extra, policy, match="trailing")


def _header(data: bytes) -> tuple[int, int, int, int]:
    """(header bytes, vectors, shape values, scalars)."""
    return struct.unpack_from("<4I", data, 16)


def test_restore_refuses_flipped_header_bytes(snap: bytes, policy: CorePolicy) -> None:
    head, _, nshape, nscalar = _header(snap)
    scalars = range(32 + 8 * nshape + 8, 32 + 8 * nshape + 8 + 8 * nscalar)
    for i in range(head):
        if i in scalars:
            continue  # state values (the clock, the generator): the file layer's CRC
        for bit in (0x01, 0x80):
            bad = bytearray(snap)
            bad[i] ^= bit
            _refused(bytes(bad), policy)


def test_restore_refuses_other_struct_sizes(snap: bytes, policy: CorePolicy) -> None:
    _, nvec, nshape, nscalar = _header(snap)
    sizes_at = 32 + 8 * nshape + 8 + 8 * nscalar
    sizes = list(struct.unpack_from(f"<{nvec}I", snap, sizes_at))
    assert 48 in sizes and 64 in sizes  # bookings, requests
    for k in range(nvec):
        bad = bytearray(snap)
        struct.pack_into("<I", bad, sizes_at + 4 * k, sizes[k] + 8)
        _refused(bytes(bad), policy, match="a different build")


def test_restore_refuses_other_versions_and_byte_order(snap: bytes, policy: CorePolicy) -> None:
    for version in (1, 3):  # version 1: 64-byte account rows, the early rings apart
        bad = bytearray(snap)
        struct.pack_into("<I", bad, 8, version)
        _refused(bytes(bad), policy, match=f"version {version}")
    bad = bytearray(snap)
    struct.pack_into(">I", bad, 12, 0x01020304)
    _refused(bytes(bad), policy, match="byte order")
    _refused(b"SLOTSNP1" + snap[8:], policy, match="magic")


def test_restore_refuses_other_policies(snap: bytes, policy: CorePolicy) -> None:
    _refused(snap, policy._replace(n_channels=policy.n_channels + 1), match="n_channels")
    _refused(snap, policy._replace(cover=False), match="cover")
    _refused(snap, policy._replace(ban_ms=(30, 60)), match="ban_ms")
    _refused(snap, policy._replace(hold_ms=policy.hold_ms + 1), match="different policy")
    _refused(snap, policy._replace(credit_terms=((1, 1, 1, 1), (2, 2, 2, 2))),
             match="different policy")
    # a snapshot of a core with three channels into one with four
    three = policy._replace(n_channels=3, public_channel=0)
    core = Core(three, 0)
    core.ensure_patients(2)
    core.ensure_accounts(2)
    core.add_session(0, 0, 0, 0, T0 + DAY, T0 + DAY + HOUR, T0, T0, MINUTE, 3, 0, [1, 1, 1],
                     [T0] * 3, T0)
    core.book(0, 0, 0, 0, T0 + 1, False)
    _refused(core.snapshot(), three._replace(n_channels=4), match="n_channels=3")


def test_restore_refuses_inconsistent_lengths(snap: bytes, policy: CorePolicy) -> None:
    """Counts that fit the data but not each other (the data re-laid around them)."""
    head, nvec, nshape, nscalar = _header(snap)
    sizes_at = 32 + 8 * nshape + 8 + 8 * nscalar
    sizes = struct.unpack_from(f"<{nvec}I", snap, sizes_at)
    counts_at = sizes_at + (4 * nvec + 7) // 8 * 8
    counts = list(struct.unpack_from(f"<{nvec}Q", snap, counts_at))
    body, pos = [], head
    for k in range(nvec):
        n = counts[k] * sizes[k]
        body.append(snap[pos:pos + n])
        pos += (n + 7) // 8 * 8
    assert pos == len(snap)

    def build(k: int, extra: int) -> bytes:
        cs = list(counts)
        cs[k] += extra
        out = bytearray(snap[:head])
        struct.pack_into(f"<{nvec}Q", out, counts_at, *cs)
        for j in range(nvec):
            part = body[j] + (b"\0" * sizes[j] * extra if j == k else b"")
            out += part + b"\0" * (-len(part) % 8)
        return bytes(out)

    assert build(0, 0) == snap
    for k in (1, 2, 3, 4, 5, 7, 8, 10, 13, 14, 19, 23, 27, 28, 31, 32, 38, 40):  # q_init ... rcover
        _refused(build(k, 1), policy, match="inconsistent")


def test_restore_refuses_bad_types(policy: CorePolicy) -> None:
    for bad in ("SLOTCORE", 12, None, [1, 2]):
        _refused(bad, policy, err=errors.InvalidType)
    strided = memoryview(bytes(range(64)))[::2]
    _refused(strided, policy, err=errors.InvalidArgument)


def _plain_policy() -> CorePolicy:
    """One channel, no rules in the way: a state of any size from book_many."""
    return CorePolicy(n_channels=1, public_channel=0, hold_ms=600_000, patient_limits=(),
                      one_per_department_day=False, account_patients=0, account_window_ms=0,
                      bar_first_visit_expert=False, ban_ms=(DAY,), strike_window_ms=DAY,
                      cancel_strikes=3, cancel_window_ms=DAY)


def _big(pol: CorePolicy, n_sessions: int, cap: int, n_bookings: int) -> Core:
    core = Core(pol, 1)
    core.ensure_patients(2 * n_bookings // 10)
    core.ensure_accounts(n_bookings // 10)
    for s in range(n_sessions):
        start = T0 + DAY + s * MINUTE
        core.add_session(s % 50, s % 7, 0, s // 1000, start, start + 4 * HOUR, start - DAY,
                         start - HOUR, 10 * MINUTE, cap, 0, [cap], [0], T0)
    rows = np.arange(n_bookings, dtype=np.int64)
    out = core.book_many(rows % (n_bookings // 10), rows % (2 * n_bookings // 10),
                         rows // (n_bookings // n_sessions), np.zeros(n_bookings, np.int64),
                         np.full(n_bookings, T0, np.int64), False)
    assert (out[0] == 1).all()
    return core


def test_restore_out_of_memory_leaves_the_core_fresh() -> None:
    """An allocation failing half-way through a restore: MemoryError, the Core as before.

    In a child process: a long test run's heap has freed memory the allocator reuses
    without asking for address space, so the limit would not bite there."""
    pytest.importorskip("resource")
    if not Path("/proc/self/statm").exists():
        pytest.skip("needs /proc")
    code = ("import importlib.util as u, sys; sys.path.insert(0, %r); "
            "s = u.spec_from_file_location('t', %r); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); m._oom_check()"
            % (str(Path(__file__).parent), __file__))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _oom_check() -> None:
    import resource
    statm = Path("/proc/self/statm")
    pol = _plain_policy()
    data = _big(pol, 2_000, 50, 100_000).snapshot()
    target = Core(pol, 1)
    before = target.state_hash()
    used = int(statm.read_text().split()[0]) * resource.getpagesize()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + len(data) // 2, hard))
    try:
        try:
            target.restore(data)
            raise AssertionError("restore did not raise MemoryError")
        except MemoryError:
            pass
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert target.state_hash() == before and target.n_bookings == 0
    target.restore(data)  # still fresh
    assert target.n_bookings == 100_000
    target._check_invariants()


# -- speed -------------------------------------------------------------------------------------

def test_big_state_round_trip() -> None:
    """100,000 sessions x 20 slots, 1,000,000 bookings round-trip (the speed of it is
    benchmarks/bench_journal.py's ``snapshot`` group)."""
    pol = _plain_policy()
    n_sessions, n_bookings = 100_000, 1_000_000
    core = _big(pol, n_sessions, 20, n_bookings)
    data = core.snapshot()
    copy = Core(pol, 1)
    copy.restore(data)
    assert copy.n_bookings == n_bookings and copy.n_sessions == n_sessions
    assert copy.snapshot() == data
    for i in (0, 1, 499_999, n_bookings - 1):
        assert copy.booking_info(i) == core.booking_info(i)
    assert copy.session_counts(n_sessions - 1) == core.session_counts(n_sessions - 1)
