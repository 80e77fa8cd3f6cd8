"""The rush simulator: scenarios, files, determinism, hand-checkable outcomes, policy order."""
from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import slotengine as se
from slotengine import simulate as sim
from slotengine.errors import InvalidArgument, InvalidType

# One expert session of 2 app slots; one ring account whose bots fire for 2
# identities within 50 ms of the release; 4 genuine patients tap after 300 ms.
TINY = sim.Scenario(
    seed=3, hospitals=1, departments=1, halves=1, slots={"expert": 2}, quota_shares={},
    genuine=4, elderly_share=0, referral_share=0, followup_share=0,
    rings=1, ring_accounts=1, account_identities=2, identity_targets=1,
    cancel_rate=0, noshow_rate=0, handoff_rate=0, resale_rate=1.0, blacklist_share=0,
)


@pytest.fixture(scope="module")
def small() -> dict[str, sim.Metrics]:
    return sim.compare("small")


# -- scenarios -------------------------------------------------------------------------

def test_presets_are_valid_and_city_is_city_scale():
    assert set(sim.PRESETS) == {"small", "city"}
    city = sim.PRESETS["city"]
    n_sessions = city.hospitals * city.departments * city.days * city.halves * 3
    assert n_sessions >= 20_000  # tens of thousands of sessions
    assert city.genuine >= 1_000_000


def test_generate_shapes_and_orders():
    w = sim.generate(sim.PRESETS["small"])
    sc = w.scenario
    assert w.n_sessions == sc.hospitals * sc.departments * 3 * sc.halves * sc.days
    assert (np.diff(w.rush_time) >= 0).all()
    assert (np.diff(w.later_time) >= 0).all()
    assert (w.quotas.sum(axis=1) == w.session_capacity).all()
    bots = w.patient_kind[w.rush_patient] == sim.SCALPER
    app_release = w.release[w.rush_session, 0]
    # bots fire within bot_reaction_ms of the app release, genuine app taps later
    assert ((w.rush_time[bots] - app_release[bots]) < sc.bot_reaction_ms).all()
    genuine_app = ~bots & (w.rush_channel == 0)
    assert ((w.rush_time[genuine_app] - app_release[genuine_app]) >= 300).all()
    # every scalper identity belongs to a ring account, every bot row targets an expert session
    assert (w.account_kind[w.patient_account[w.patient_kind == sim.SCALPER]] == sim.SCALPER).all()
    assert (w.session_tier[w.rush_session[bots]] == 0).all()
    assert set(np.unique(w.rush_channel[~bots]).tolist()) == {0, 1, 2, 3}


def test_generate_is_seeded():
    a, b = sim.generate(sim.PRESETS["small"]), sim.generate(sim.PRESETS["small"])
    c = sim.generate(dataclasses.replace(sim.PRESETS["small"], seed=2))
    for f in ("rush_time", "rush_patient", "rush_session", "later_time", "later_who", "noshow"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.rush_time, c.rush_time)


@pytest.mark.parametrize("change, err", [
    ({"hospitals": 0}, InvalidArgument),
    ({"hospitals": 2.0}, InvalidType),
    ({"seed": True}, InvalidType),
    ({"cancel_rate": 1.5}, InvalidArgument),
    ({"noshow_rate": "0.1"}, InvalidType),
    ({"elderly_share": 0.5, "referral_share": 0.4, "followup_share": 0.2}, InvalidArgument),
    ({"handoff_rate": 0.6, "resale_rate": 0.6}, InvalidArgument),
    ({"slots": {"expert": 0, "associate": 0, "general": 0}}, InvalidArgument),
    ({"slots": {"surgeon": 3}}, InvalidArgument),
    ({"slots": {"expert": 2.5}}, InvalidType),
    ({"slots": [10, 20, 30]}, InvalidType),
    ({"fees": {"expert": -1}}, InvalidArgument),
    ({"quota_shares": {"phone": 0.7, "referral": 0.7}}, InvalidArgument),
    ({"quota_shares": {"app": 0.1}}, InvalidArgument),
    ({"release_days": {"phone": 3}}, InvalidArgument),
    ({"days": 7}, InvalidArgument),
    ({"spread_seconds": 0}, InvalidArgument),
    ({"slots": {"general": 10}}, InvalidArgument),  # rings but no expert sessions
])
def test_bad_fields_are_clear_errors(change, err):
    with pytest.raises(err, match="Scenario"):
        dataclasses.replace(sim.PRESETS["small"], **change)


def test_missing_tiers_default():
    sc = sim.Scenario(slots={"expert": 4}, tier_demand={"expert": 1.0})
    assert dict(sc.slots) == {"expert": 4, "associate": 0, "general": 0}
    assert sc.fees["general"] == 1_000 and sc.release_days["app"] == 7


def test_from_json_and_toml(tmp_path):
    j = tmp_path / "s.json"
    j.write_text(json.dumps({"seed": 9, "genuine": 40, "slots": {"expert": 3, "general": 5},
                             "noshow_rate": 0}))
    sc = sim.Scenario.from_file(j)
    assert (sc.seed, sc.genuine, sc.slots["expert"], sc.slots["associate"]) == (9, 40, 3, 0)
    assert sc.noshow_rate == 0.0 and type(sc.noshow_rate) is float
    t = tmp_path / "s.toml"
    t.write_text('preset = "small"\nseed = 9\ngenuine = 40\nnoshow_rate = 0\n'
                 '[slots]\nexpert = 3\ngeneral = 5\n')
    if sys.version_info >= (3, 11):
        assert sim.Scenario.from_file(str(t)) == sc
        assert sim.run(sim.generate(sc), "lottery") == sim.run(sim.generate(sc), "lottery")
    else:  # pragma: no cover - only on 3.10
        with pytest.raises(InvalidArgument, match="tomllib"):
            sim.Scenario.from_file(t)
    city = tmp_path / "c.json"
    city.write_text(json.dumps({"preset": "city", "genuine": 100}))
    c = sim.Scenario.from_file(city)
    assert c.hospitals == sim.PRESETS["city"].hospitals and c.genuine == 100


@pytest.mark.parametrize("name, text, err, match", [
    ("a.json", '{"seed": 1, "hospitalz": 2}', InvalidArgument, "unknown scenario field.*hospitalz"),
    ("a.json", '{"seed": 1,', InvalidArgument, "not valid JSON"),
    ("a.json", "[1, 2]", InvalidType, "one table"),
    ("a.json", '{"preset": "town"}', InvalidArgument, "unknown preset"),
    ("a.json", '{"preset": ["small"]}', InvalidArgument, "unknown preset"),
    ("a.json", '{"genuine": -5}', InvalidArgument, "genuine"),
    ("a.json", '{"slots": {"expert": "ten"}}', InvalidType, "slots"),
    ("a.toml", "seed = = 1", InvalidArgument, "not valid TOML"),
    ("a.yaml", "seed: 1", InvalidArgument, ".json or .toml"),
    ("a.json", b"\xff\xfe", InvalidArgument, "not valid JSON"),
])
def test_bad_files_are_clear_errors(tmp_path, name, text, err, match):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    if name.endswith(".toml") and sys.version_info < (3, 11):  # pragma: no cover
        match = "tomllib"
    with pytest.raises(err, match=match):
        sim.Scenario.from_file(p)


def test_missing_file(tmp_path):
    with pytest.raises(InvalidArgument, match="cannot read"):
        sim.Scenario.from_file(tmp_path / "nope.json")


# -- runs ---------------------------------------------------------------------------------

def test_small_preset_runs_every_policy(small):
    assert list(small) == ["fcfs", "lottery", "lottery+slow", "+waitlist", "+credit"]
    for m in small.values():
        assert m.expert_slots_taken > 0 and m.requests > 0
        for rate in (m.scalper_expert_share, m.genuine_success_rate, m.utilization,
                     m.false_positive_rate, m.true_positive_rate):
            assert 0.0 <= rate <= 1.0
        assert m.requests_per_second > 0 and m.engine_seconds > 0
        row = m.as_row()
        assert row["policy"] == m.policy and "scalper expert share" in row


def test_lottery_policies_beat_fcfs_on_scalper_share(small):
    fcfs = small["fcfs"].scalper_expert_share
    assert fcfs > 0.3
    for name in ("lottery", "lottery+slow", "+waitlist", "+credit"):
        assert small[name].scalper_expert_share < fcfs / 2, name
    assert small["lottery+slow"].scalper_expert_share <= small["lottery"].scalper_expert_share
    assert small["+credit"].scalper_expert_share <= small["+waitlist"].scalper_expert_share


def test_flags_and_waitlist_behave(small):
    for name in ("fcfs", "lottery"):  # risk signals off, no blacklist
        assert small[name].flagged_genuine == small[name].flagged_scalper == 0
        assert small[name].waitlist_joined == 0 and small[name].waitlist_fill_rate is None
    slow = small["lottery+slow"]
    assert slow.flagged_scalper > 0 and slow.flagged_genuine == 0
    wl = small["+waitlist"]
    assert wl.waitlist_joined > 0 and wl.waitlist_fill_rate is not None
    assert 0.0 < wl.waitlist_fill_rate <= 1.0 and wl.waitlist_median_ms is not None
    # hand-offs reach the buyer when a freed slot is free at once, never past the waitlist
    assert small["fcfs"].handoffs > 0
    assert wl.handoffs == small["+credit"].handoffs == 0
    # FCFS serves as they come; a lottery serves when the 60 s cohort closes
    assert small["fcfs"].genuine_median_ms < 60_000 <= small["lottery"].genuine_median_ms


@pytest.mark.parametrize("name", list(sim.POLICIES))
def test_engine_invariants_hold_after_a_run(name):
    sc = dataclasses.replace(sim.PRESETS["small"], days=2, genuine=600, cancel_rate=0.2)
    sim.run(sim.generate(sc), name, check_invariants=True)


def test_deterministic():
    w1 = sim.generate(sim.PRESETS["small"])
    w2 = sim.generate(sim.PRESETS["small"])
    for name in ("lottery+slow", "+credit"):
        a, b = sim.run(w1, name), sim.run(w2, name)
        assert a == b
        assert dataclasses.replace(a, engine_seconds=0.0) == a  # timing is not compared
    assert sim.run(w1, "fcfs") == sim.run(w1, "fcfs")  # a World can be replayed


def test_tiny_fcfs_bots_take_both_slots():
    m = sim.run(sim.generate(TINY), "fcfs")
    assert m.expert_slots_taken == 2
    assert m.scalper_expert_share == 1.0
    assert m.genuine_success_rate == 0.0 and m.genuine_median_ms is None
    assert m.requests == 2 + 4 + 4 * TINY.retries  # rush rows, then each loser retries
    assert m.utilization == 1.0  # the identities were resold: everybody shows up


def test_tiny_lottery_share_over_seeds():
    # 2 bot and 4 genuine tickets in one cohort, 2 slots: E[bots among the first 2] = 2/3
    shares = [sim.run(sim.generate(dataclasses.replace(TINY, seed=s)), "lottery").scalper_expert_share
              for s in range(300)]
    assert set(shares) <= {0.0, 0.5, 1.0}
    assert abs(statistics.mean(shares) - 1 / 3) < 0.06


@pytest.mark.parametrize("seed", [3, 11])
def test_tiny_lottery_matches_a_hand_driven_engine(seed):
    """The same 6 requests, fed by hand through the public API, draw the same winners."""
    sc = dataclasses.replace(TINY, seed=seed)
    w = sim.generate(sc)
    e = se.Engine(sim.POLICIES["lottery"].policy, seed=seed)
    e.add_session(w.session_names[0], hospital="H000", department="D000", doctor="Dr", tier="expert",
                  starts_at=int(w.session_start[0]), slot_minutes=120, capacity=2, fee=10_000,
                  release={ch: int(w.release[0, c]) for c, ch in enumerate(sim.CHANNELS)}, now=w.t0)
    e.intern_patients([f"P{i}" for i in range(len(w.patient_kind))])
    e.intern_accounts([f"A{i}" for i in range(len(w.account_kind))])
    for t, p in zip(w.rush_time.tolist(), w.rush_patient.tolist()):
        r = e.book(f"A{int(w.patient_account[p])}", f"P{p}", w.session_names[0], "app", now=t)
        assert r.status == se.Status.QUEUED or r.reason == se.Reason.FULL  # a tap after the cohort
    served = [ev for ev in e.advance(w.t_after) if ev.kind == se.EventKind.TICKET_SERVED]
    winners = [int(ev.patient[1:]) for ev in served]
    bots = sum(int(w.patient_kind[p]) == sim.SCALPER for p in winners)
    assert len(winners) == 2
    assert sim.run(w, "lottery").scalper_expert_share == bots / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_waitlist_gets_the_first_cancellation(seed):
    # 3 genuine patients, 2 slots, no bots; everybody who holds a slot cancels some day.
    # The loser joins the waitlist within 30 minutes of the rush and receives the
    # slot of the first cancellation, in the same step.
    sc = dataclasses.replace(TINY, seed=seed, rings=0, genuine=3, cancel_rate=1.0)
    w = sim.generate(sc)
    m = sim.run(w, "+waitlist", check_invariants=True)
    assert (m.waitlist_joined, m.waitlist_fill_rate, m.genuine_success_rate) == (1, 1.0, 1.0)
    join = {p: t for t, k, p in zip(w.later_time, w.later_kind, w.later_who) if k == sim._JOIN}
    cancel = {p: t for t, k, p in zip(w.later_time, w.later_kind, w.later_who) if k == sim._CANCEL}
    expected = {min(cancel[p] for p in cancel if p != loser) - join[loser] for loser in join}
    assert m.waitlist_median_ms in expected
    # without a waitlist the loser only gets a slot if a retry lands after a cancellation
    assert sim.run(w, "lottery").waitlist_joined == 0


@pytest.mark.parametrize("seed", [0, 5])
def test_tiny_bots_snipe_cancellations(seed):
    # 2 genuine patients take both slots of one expert session and both cancel later; one
    # bought identity's bot watches the session.  It takes the first freed slot within
    # bot_reaction_ms; the second attempt is refused (that identity already holds the session).
    sc = dataclasses.replace(TINY, seed=seed, genuine=2, account_identities=1, identity_targets=0,
                             cancel_rate=1.0, snipe_rate=1.0)
    w = sim.generate(sc)
    assert ((w.later_sniper >= 0) == (w.later_kind == sim._CANCEL)).all()
    assert (w.later_snipe_ms[w.later_sniper >= 0] <= sc.bot_reaction_ms).all()
    for name in ("fcfs", "lottery"):
        m = sim.run(w, name, check_invariants=True)
        assert m.sniped == 1 and m.expert_slots_taken == 1 and m.scalper_expert_share == 1.0
    calm = sim.generate(dataclasses.replace(sc, snipe_rate=0.0))
    assert (calm.later_sniper == -1).all()
    assert sim.run(calm, "lottery").sniped == 0
    # the other draws of the world do not depend on snipe_rate
    assert (calm.later_time == w.later_time).all() and (calm.rush_time == w.rush_time).all()


def test_credit_keeps_unfunded_identities_out():
    sc = dataclasses.replace(sim.PRESETS["small"], scalper_funded_share=0.0, blacklist_share=0.0)
    m = sim.run(sim.generate(sc), "+credit")
    assert m.scalper_expert_share == 0.0


def test_bad_run_arguments():
    w = sim.generate(TINY)
    with pytest.raises(InvalidArgument, match="unknown policy"):
        sim.run(w, "lotto")
    with pytest.raises(InvalidType):
        sim.run(TINY, "fcfs")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="unknown preset"):
        sim.compare("town")
    with pytest.raises(InvalidArgument, match="unknown policy"):
        sim.compare(TINY, ["fcfs", "nope"])
    custom = sim.PolicySetup("strict", se.Policy(account_patients=2))
    assert sim.run(w, custom).policy == "strict"
    out = sim.compare(TINY, ["fcfs", custom])  # own setups too, keyed by name
    assert list(out) == ["fcfs", "strict"] and out["strict"] == sim.run(w, custom)
    with pytest.raises(InvalidArgument, match="repeat"):
        sim.compare(TINY, ["fcfs", sim.POLICIES["fcfs"]])
    with pytest.raises(InvalidType, match="not one"):
        sim.compare(TINY, "fcfs")  # type: ignore[arg-type]


def test_city_preset_smoke_at_reduced_size():
    sc = dataclasses.replace(sim.PRESETS["city"], hospitals=4, departments=4, days=2,
                             genuine=6_000, rings=8)
    out = sim.compare(sc, ["fcfs", "+credit"])
    assert out["+credit"].scalper_expert_share < out["fcfs"].scalper_expert_share


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32), genuine=st.integers(0, 300), rings=st.integers(0, 3),
       days=st.integers(1, 3), noshow=st.floats(0, 0.5), handoff=st.floats(0, 0.5))
def test_any_small_city_runs(seed, genuine, rings, days, noshow, handoff):
    sc = sim.Scenario(seed=seed, hospitals=1, departments=2, days=days, genuine=genuine, rings=rings,
                      ring_accounts=2, noshow_rate=noshow, handoff_rate=handoff, resale_rate=0.3)
    w = sim.generate(sc)
    for name in ("fcfs", "+credit"):
        m = sim.run(w, name)
        assert m.genuine_patients == genuine
        assert 0.0 <= m.scalper_expert_share <= 1.0 and 0.0 <= m.utilization <= 1.0
        assert m.no_shows + round(m.utilization * int(w.session_capacity.sum())) <= int(
            w.session_capacity.sum())


# -- timelines, progress, the reference backend ---------------------------------------------

def test_timelines_agree_with_the_metrics(small):
    w = sim.generate(sim.PRESETS["small"])
    expert_slots = int(w.session_capacity[w.session_tier == 0].sum())
    for name, m in small.items():
        t = m.timeline
        assert t is not None and t.expert_slots == expert_slots
        for a in (t.taken_ms, t.genuine_wait_ms, t.waitlist_wait_ms):
            assert (np.diff(a) >= 0).all()  # sorted
        assert len(t.taken_by_scalper) == len(t.taken_ms) and (t.taken_ms >= 0).all()
        assert len(t.genuine_wait_ms) == round(m.genuine_success_rate * m.genuine_patients)
        if m.genuine_median_ms is not None:
            assert float(np.median(t.genuine_wait_ms)) == m.genuine_median_ms
        n_filled = round((m.waitlist_fill_rate or 0.0) * m.waitlist_joined)
        assert len(t.waitlist_wait_ms) == n_filled
        if n_filled:
            assert float(np.median(t.waitlist_wait_ms)) == m.waitlist_median_ms
        at = np.array([0, 10, 1_000, 59_999, 60_001, 10**12])
        everyone, scalpers = t.taken_curve(at)
        assert (np.diff(everyone) >= 0).all() and (scalpers <= everyone).all()
        assert everyone[-1] == len(t.taken_ms) / expert_slots
        assert scalpers[-1] == t.taken_by_scalper.sum() / expert_slots
        if name == "fcfs":  # bots take slots within ms of the release
            assert scalpers[2] > 0.3
        else:               # nothing is served before the 60 s cohort closes
            assert everyone[3] == 0.0 and everyone[4] > 0.5


def test_to_dict_is_json_with_percentiles(small):
    for m in small.values():
        d = m.to_dict()
        assert "timeline" not in d and d["policy"] == m.policy
        json.dumps(d)
        p = d["genuine_wait_ms_p10_p50_p90"]
        assert p is not None and p[0] <= p[1] <= p[2] and p[1] == m.genuine_median_ms
        assert (d["waitlist_wait_ms_p10_p50_p90"] is None) == (m.waitlist_median_ms is None)


def test_progress_names_each_phase():
    sc = dataclasses.replace(sim.PRESETS["small"], days=2)
    w = sim.generate(sc)
    phases: list[str] = []
    sim.run(w, "+waitlist", progress=phases.append)
    assert phases == ["setup", "rush", "day 1/2", "day 2/2", "metrics"]
    assert sim.run_phases(w) == len(phases)
    with pytest.raises(InvalidType, match="progress"):
        sim.run(w, "fcfs", progress="loud")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="backend"):
        sim.run(w, "fcfs", backend="fast")
    with pytest.raises(InvalidType, match="backend"):
        sim.run(w, "fcfs", backend=None)  # type: ignore[arg-type]
    assert phases == ["setup", "rush", "day 1/2", "day 2/2", "metrics"]  # a World is not changed
    assert sim.run(w, "+waitlist") == sim.run(sim.generate(sc), "+waitlist")


def test_the_reference_backend_gives_the_same_metrics(small):
    """The simulator drives either engine: the plain model agrees on every measured field."""
    w = sim.generate(sim.PRESETS["small"])
    for name, m in small.items():
        assert sim.run(w, name, backend="reference") == m, name


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32), genuine=st.integers(0, 200), rings=st.integers(0, 2),
       cancel=st.floats(0, 0.5))
def test_reference_agrees_on_any_small_city(seed, genuine, rings, cancel):
    sc = sim.Scenario(seed=seed, hospitals=1, departments=1, days=2, genuine=genuine, rings=rings,
                      ring_accounts=2, cancel_rate=cancel)
    w = sim.generate(sc)
    for name in ("fcfs", "+waitlist", "+credit"):
        assert sim.run(w, name) == sim.run(w, name, backend="reference"), name


def test_importable_without_matplotlib():
    code = ("import sys; sys.modules['matplotlib'] = None; import slotengine.simulate as s; "
            "print(sorted(s.POLICIES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "fcfs" in out.stdout
