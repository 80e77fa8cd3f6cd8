"""slotengine.testing: the hypothesis strategies users build their own tests from.

Every strategy must produce input the Engine accepts (quotas summing to
capacity, releases before starts, time-ordered streams), be reproducible
under a fixed seed, and ``run_rush`` must leave an engine whose invariants
hold.  The example property test (examples/property_test_example.py) must
pass, run by pytest in a subprocess.  Settings come from the loaded
hypothesis profile (tests/conftest.py) unless a test needs its own.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, find, given, seed, settings
from hypothesis import strategies as st

import slotengine as se
import slotengine.testing as sst
from slotengine.times import DAY, MINUTE

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "property_test_example.py"
#: First come, first served with the risk signals off: no request is ever QUEUED.
FCFS = se.Policy(prequeue_minutes=0, cohort_seconds=0, early_flag=(0, 1), cancel_flag=(0, 30),
                 patients_flag=(0, 30), rebook_seconds=0)


def _examples(strategy: st.SearchStrategy[Any], n: int = 15, at: int = 20261124) -> list[Any]:
    """The first ``n`` examples a test seeded with ``at`` sees: no shrinking, no database."""
    seen: list[Any] = []

    @seed(at)
    @settings(max_examples=n, database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(x: Any) -> None:
        seen.append(x)

    collect()
    return seen


def _spec_ok(spec: dict[str, Any], policy: se.Policy) -> None:
    """One add_session dict is well formed (before the Engine sees it)."""
    assert sum(spec["quotas"].values()) == spec["capacity"] >= 1
    assert set(spec["quotas"]) <= set(policy.channels)
    assert set(spec["release"]) <= set(policy.channels)
    assert policy.public_channel in spec["quotas"]
    assert all(type(t) is int and 0 <= t < spec["starts_at"] for t in spec["release"].values())
    assert type(spec["fee"]) is int and spec["fee"] >= 0 and spec["fee"] % 100 == 0
    assert spec["tier"] in ("general", "associate", "expert")


def _engine_with(policy: se.Policy, specs: list[dict[str, Any]]) -> se.Engine:
    engine = se.Engine(policy=policy, seed=1)
    for spec in specs:
        engine.add_session(**spec)
    for spec in specs:
        info = engine.session(spec["session"])
        assert info.capacity == spec["capacity"] and info.fee == spec["fee"]
        assert dict(info.quota_left) == {ch: spec["quotas"].get(ch, 0) for ch in policy.channels}
        for ch, t in spec["release"].items():
            assert info.release[ch] == t
    engine._check_invariants()
    return engine


# -- policies ----------------------------------------------------------------------------

@given(sst.policies())
def test_policies_are_valid(policy: se.Policy) -> None:
    assert isinstance(policy, se.Policy)
    se.Engine(policy=policy, seed=0)._check_invariants()


@given(sst.policies(hold_minutes=7, cohort_seconds=0, on_suspend=st.sampled_from(["cancel"]),
                    channels=("web", "desk")))
def test_policies_hold_fixed_fields(policy: se.Policy) -> None:
    assert (policy.hold_minutes, policy.cohort_seconds, policy.on_suspend) == (7, 0, "cancel")
    assert policy.channels == ("web", "desk") and policy.public_channel == "web"
    assert dict(policy.release_days) == {}


def test_policies_vary_and_refuse_unknown_fields() -> None:
    drawn = _examples(sst.policies(), 100)
    assert any(p.cohort_seconds == 0 for p in drawn) and any(p.cohort_seconds for p in drawn)
    assert any(p.require_cover for p in drawn) and not all(p.require_cover for p in drawn)
    assert len({(p.hold_minutes, p.account_patients) for p in drawn}) > 10
    with pytest.raises(TypeError, match="hold_minute"):
        sst.policies(hold_minute=3)


# -- sessions ----------------------------------------------------------------------------

@given(st.data())
def test_session_specs_are_accepted(data: st.DataObject) -> None:
    policy = data.draw(sst.policies())
    specs = data.draw(sst.session_specs(policy=policy, max_size=5))
    ids = [s["session"] for s in specs]
    assert len(ids) == len(set(ids)) and 1 <= len(ids) <= 5
    for spec in specs:
        _spec_ok(spec, policy)
    _engine_with(policy, specs)


@given(st.data())
def test_session_specs_follow_their_arguments(data: st.DataObject) -> None:
    policy = se.Policy(channels=("web", "desk", "phone"), public_channel="desk",
                       release_days={})
    start = se.to_ms(sst.DEFAULT_START) + 3 * DAY
    release = start - 2 * DAY
    specs = data.draw(sst.sessions(min_size=2, max_size=3, prefix="X-", policy=policy,
                                   start=start, release_at=release, days=2,
                                   hospitals=["H"], max_capacity=3))
    assert [s["session"] for s in specs] == [f"X-{i}" for i in range(len(specs))]
    for spec in specs:
        _spec_ok(spec, policy)
        assert spec["hospital"] == "H" and spec["capacity"] <= 3
        assert start <= spec["starts_at"] <= start + 2 * DAY + 330 * MINUTE
        assert spec["release"]["desk"] == release
    _engine_with(policy, specs)


def test_session_spec_refuses_a_release_after_the_start() -> None:
    with pytest.raises(ValueError, match="not before"):
        find(sst.session_spec("S", release_at=sst.DEFAULT_START + DAY), lambda s: True,
             settings=settings(database=None))


# -- arrivals ----------------------------------------------------------------------------

@given(st.data())
def test_arrival_streams_are_ordered_and_accepted(data: st.DataObject) -> None:
    policy = data.draw(sst.policies())
    specs = data.draw(sst.session_specs(policy=policy))
    stream = data.draw(sst.arrival_streams(specs, policy=policy, max_size=30))
    assert 1 <= len(stream) <= 30
    assert [a.now for a in stream] == sorted(a.now for a in stream)
    quotas = {s["session"]: s["quotas"] for s in specs}
    for a in stream:
        assert type(a.now) is int and a.session in quotas
        assert a.channel is None or quotas[a.session][a.channel] > 0
    engine = _engine_with(policy, specs)
    for a in stream:
        r = engine.book(**a._asdict())  # never raises: valid ids, known channels, time forward
        assert isinstance(r.status, se.Status)
    engine._check_invariants()


def test_arrival_streams_have_bursts_retries_and_families() -> None:
    specs = _examples(sst.session_specs(min_size=2), 1)[0]
    release = specs[0]["release"]["app"]

    def rushy(stream: list[sst.Arrival]) -> bool:
        per_account = Counter(a.account for a in {(a.account, a.patient): a for a in stream}.values())
        repeats = Counter((a.patient, a.session) for a in stream)
        burst = [a for a in stream if release <= a.now < release + 1000]
        early = [a for a in stream if a.now < release]
        return (max(per_account.values()) >= 3 and max(repeats.values()) >= 2
                and len(burst) >= 5 and bool(early))

    assert any(rushy(stream) for stream in _examples(sst.arrival_streams(specs), 100))


# -- reproducibility ---------------------------------------------------------------------

def _draws(strategy: st.SearchStrategy[Any], n: int = 15) -> list[str]:
    """The first ``n`` examples under a fixed seed, as reprs (so Policies compare too)."""
    return [repr(x) for x in _examples(strategy, n)]


@pytest.mark.parametrize("make", [
    lambda: sst.policies(),
    lambda: sst.session_specs(),
    lambda: sst.arrival_streams(_examples(sst.session_specs(min_size=2), 1)[0]),
    lambda: sst.rush_scenarios(),
], ids=["policies", "session_specs", "arrival_streams", "rush_scenarios"])
def test_strategies_reproduce_under_a_fixed_seed(make: Callable[[], Any]) -> None:
    first = _draws(make())
    assert first == _draws(make())
    assert len(set(first)) > 1


# -- scenarios ---------------------------------------------------------------------------

@given(sst.rush_scenarios())
def test_run_rush_keeps_the_invariants(scenario: sst.Scenario) -> None:
    events: list[se.Event] = []
    engine, results = sst.run_rush(scenario, events=events)
    sst.check_rush(engine, results)
    assert len(results) == len(list(scenario.steps()))
    assert [step.now for step, _ in results] == sorted(step.now for step, _ in results)
    live = [(b.session, b.slot) for b in sst.all_bookings(engine) if b.state in sst.LIVE]
    assert len(live) == len(set(live))  # no slot double-booked
    for spec in scenario.sessions:
        counts = engine.session_counts(spec["session"])
        assert sum(counts) == engine.session(spec["session"]).capacity
    for step, r in results:
        if isinstance(step, sst.Cancellation) and r is not None:
            assert r.status in (se.Status.CANCELLED, se.Status.REJECTED)
    assert engine.now >= scenario.end
    for step, r in results:  # by the end every queued request was served or failed
        if isinstance(step, sst.Arrival) and r is not None and r.status == se.Status.QUEUED:
            assert engine.ticket(r.ticket).state != se.TicketState.QUEUED
    assert len(events) >= sum(1 for step, r in results
                              if isinstance(step, sst.Arrival) and r.status == se.Status.QUEUED)


@given(sst.rush_scenarios(policy=FCFS, max_arrivals=20))
def test_run_rush_is_deterministic_and_backend_independent(scenario: sst.Scenario) -> None:
    a, ra = sst.run_rush(scenario)
    b, rb = sst.run_rush(scenario)
    ref, rr = sst.run_rush(scenario, backend="reference")
    assert a.state_hash() == b.state_hash() == ref.state_hash()
    tuples = [[r if r is None or isinstance(r, int) else r.as_tuple() for _, r in rs]
              for rs in (ra, rb, rr)]  # a suspension's result is a count
    assert tuples[0] == tuples[1] == tuples[2]
    assert all(isinstance(s, sst.Suspension) or r is None or r.status != se.Status.QUEUED
               for s, r in ra)  # FCFS: no cohorts


def test_build_engine_adds_the_sessions_only() -> None:
    scenario = next(s for s in _examples(sst.rush_scenarios(min_sessions=2), 30)
                    if s.cancellations)
    engine = sst.build_engine(scenario)
    assert engine.now == 0 and sst.all_bookings(engine) == []
    for spec in scenario.sessions:
        assert engine.session(spec["session"]).capacity == spec["capacity"]
    steps = list(scenario.steps())
    assert len(steps) == (len(scenario.arrivals) + len(scenario.cancellations) + len(scenario.joins)
                          + len(scenario.suspensions))
    for c in scenario.cancellations:
        assert c.now > scenario.arrivals[c.arrival].now


def test_rushes_reach_the_interesting_paths() -> None:
    # Across a few seeded scenarios: served and failed cohort tickets, sold-out
    # sessions, successful cancellations, holds.
    # Hypothesis' generation can vary with its version and with timing, so look at up to
    # four seeded batches and stop once every path was reached.
    wanted = {se.EventKind.COHORT_DRAWN, se.EventKind.TICKET_SERVED, se.EventKind.TICKET_FAILED,
              (se.Status.CANCELLED, se.Reason.NONE), (se.Status.HELD, se.Reason.NONE),
              (se.Status.BOOKED, se.Reason.NONE), (se.Status.REJECTED, se.Reason.FULL),
              (se.Status.REJECTED, se.Reason.DUPLICATE_SESSION),
              (se.Status.WAITLISTED, se.Reason.NONE), se.EventKind.SESSION_SUSPENDED}
    seen: set[Any] = set()
    strategy = sst.rush_scenarios(policy=sst.policies(require_cover=False))
    for at in (20261124, 1, 2, 3):
        for scenario in _examples(strategy, 60, at):
            events: list[se.Event] = []
            _, results = sst.run_rush(scenario, events=events)
            seen |= {(r.status, r.reason) for step, r in results
                     if r is not None and not isinstance(step, sst.Suspension)}
            seen |= {e.kind for e in events}
        if wanted <= seen:
            break
    assert wanted <= seen, wanted - seen


def test_run_rush_fills_a_waitlist_join_from_a_cancellation() -> None:
    # One slot: P0 books it, P1 finds it full and joins the waitlist, P0 cancels: P1 has it.
    spec = _examples(sst.session_spec("S0", policy=FCFS), 1)[0]
    spec = dict(spec, capacity=1, quotas={FCFS.public_channel: 1})
    t = spec["release"][FCFS.public_channel] + 1_000
    arrivals = [sst.Arrival("A0", "P0", "S0", None, t), sst.Arrival("A1", "P1", "S0", None, t + 1)]
    join = sst.WaitlistJoin("A1", "P1", ("S0",), t + se.DAY, None, t + se.MINUTE)
    scenario = sst.Scenario(FCFS, 7, [spec], arrivals, [sst.Cancellation(0, t + 2 * se.MINUTE)],
                            [join])
    events: list[se.Event] = []
    engine, results = sst.run_rush(scenario, events=events)
    sst.check_rush(engine, results)
    assert [r.status for _, r in results] == [se.Status.BOOKED, se.Status.REJECTED,
                                              se.Status.WAITLISTED, se.Status.CANCELLED]
    filled = [e for e in events if e.kind == se.EventKind.WAITLIST_FILLED]
    assert len(filled) == 1 and filled[0].patient == "P1"
    assert engine.waitlist(results[2][1].request).state == se.RequestState.FILLED


def test_credit_scenarios_fund_most_patients_and_reach_no_cover() -> None:
    seen: set[Any] = set()
    for scenario in _examples(sst.rush_scenarios(policy=sst.policies(require_cover=True)), 40):
        patients = {a.patient for a in scenario.arrivals}
        funded = dict(scenario.funds)
        assert set(funded) <= patients and all(fen > 0 for fen in funded.values())
        engine, results = sst.run_rush(scenario)
        sst.check_rush(engine, results)
        for p in patients:  # holds stay on the card and nobody checks in: balances are as funded
            assert engine.credit.statement(p).balance == funded.get(p, 0)
        seen |= {(r.status, r.reason) for step, r in results
                 if isinstance(step, sst.Arrival) and r is not None}
    assert (se.Status.REJECTED, se.Reason.NO_COVER) in seen
    assert {(se.Status.BOOKED, se.Reason.NONE), (se.Status.QUEUED, se.Reason.NONE)} & seen


# -- the example and the optional import ---------------------------------------------------

def test_example_property_test_passes_under_pytest() -> None:
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(EXAMPLE)], check=False, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_only_slotengine_testing_imports_hypothesis() -> None:
    code = ("import sys, slotengine, slotengine.threadsafe, slotengine.journal; "
            "assert 'hypothesis' not in sys.modules, 'hypothesis imported'; "
            "import slotengine.testing; assert 'hypothesis' in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
