"""Policy: documented defaults, validation, and the integer form both engines read."""
from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

import slotengine as se
from slotengine.errors import InvalidType, PolicyError, SlotEngineError
from slotengine.policy import CorePolicy
from slotengine.times import DAY, MINUTE


def test_documented_defaults():
    p = se.Policy()
    assert p.channels == ("app", "window", "kiosk", "phone", "referral", "followup")
    assert p.public_channel == "app"
    assert p.utc_offset_minutes == 480  # China Standard Time
    assert dict(p.release_days) == {"referral": 28, "followup": 14}
    assert p.release_days_default == 7
    assert p.release_minute_of_day == 8 * 60 + 30
    assert p.rollover_minutes == 24 * 60
    assert p.session_minutes == 240
    assert p.hold_minutes == 10
    assert p.cancel_cutoff_minutes == 480  # 16:00 the day before
    assert p.patient_limits == ((2, 1), (3, 7), (5, 90))
    assert p.one_per_department_day is True
    assert (p.account_patients, p.account_window_days) == (5, 30)
    assert p.bar_first_visit_expert is False
    assert p.ban_days == (30, 60, 90)
    assert p.strike_window_days == 365
    assert (p.cancel_strikes, p.cancel_window_days) == (3, 30)


def test_release_lead_days():
    p = se.Policy()
    assert [p.release_lead_days(ch) for ch in p.channels] == [7, 7, 7, 7, 28, 14]
    assert se.Policy(release_days_default=14, release_days={}).release_lead_days("referral") == 14


def test_compile_gives_the_integer_form():
    c = se.Policy().compile()
    assert isinstance(c, CorePolicy)
    assert c == CorePolicy(
        n_channels=6,
        public_channel=0,
        hold_ms=10 * MINUTE,
        patient_limits=((2, DAY), (3, 7 * DAY), (5, 90 * DAY)),
        one_per_department_day=True,
        account_patients=5,
        account_window_ms=30 * DAY,
        bar_first_visit_expert=False,
        ban_ms=(30 * DAY, 60 * DAY, 90 * DAY),
        strike_window_ms=365 * DAY,
        cancel_strikes=3,
        cancel_window_ms=30 * DAY,
        prequeue_ms=5 * MINUTE,
        cohort_ms=60_000,
        outflow_gap_ms=0,
        slow_delay_ms=30_000,
        slow_interval_ms=10_000,
        slow_burst=2,
        early_ms=2_000,
        early_count=5,
        early_window_ms=DAY,
        cancel_flag_count=4,
        cancel_flag_window_ms=30 * DAY,
        patients_flag_count=4,
        patients_flag_window_ms=30 * DAY,
        rebook_ms=10_000,
        flag_ms=30 * DAY,
        wl_classes=3,
        wl_candidates=3,
        wl_per_patient=3,
        wl_session_cap=500,
        rerelease_min_ms=30_000,
        rerelease_max_ms=300_000,
        noshow_grace_ms=0,
        suspend_action=1,
    )
    for name in ("n_channels", "public_channel", "hold_ms", "account_patients",
                 "account_window_ms", "strike_window_ms", "cancel_strikes", "cancel_window_ms"):
        assert type(getattr(c, name)) is int, name
    assert all(type(x) is int for row in c.patient_limits for x in row)
    assert all(type(x) is int for x in c.ban_ms)
    assert type(c.one_per_department_day) is bool and type(c.bar_first_visit_expert) is bool


def test_compile_of_a_custom_policy():
    p = se.Policy(channels=["web", "desk"], public_channel="desk", hold_minutes=5,
                  patient_limits=[[1, 2]], ban_days=[7], one_per_department_day=False,
                  bar_first_visit_expert=True, account_patients=0, cancel_strikes=0,
                  release_days={"web": 3})
    assert p.channels == ("web", "desk") and p.patient_limits == ((1, 2),) and p.ban_days == (7,)
    c = p.compile()
    assert (c.n_channels, c.public_channel, c.hold_ms) == (2, 1, 5 * MINUTE)
    assert c.patient_limits == ((1, 2 * DAY),) and c.ban_ms == (7 * DAY,)
    assert (c.one_per_department_day, c.bar_first_visit_expert) == (False, True)
    assert (c.account_patients, c.cancel_strikes) == (0, 0)
    assert se.Policy(patient_limits=()).compile().patient_limits == ()


def test_policy_is_frozen_and_copies_its_mappings():
    days = {"referral": 21}
    p = se.Policy(release_days=days)
    days["referral"] = 1
    assert p.release_days["referral"] == 21
    assert isinstance(p.release_days, MappingProxyType)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.hold_minutes = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        p.release_days["referral"] = 1  # type: ignore[index]


@pytest.mark.parametrize("kw", [
    dict(utc_offset_minutes=-14 * 60), dict(utc_offset_minutes=14 * 60),
    dict(release_days_default=0), dict(release_days_default=366),
    dict(release_minute_of_day=0), dict(release_minute_of_day=1439),
    dict(rollover_minutes=0), dict(session_minutes=1), dict(session_minutes=1440),
    dict(hold_minutes=1), dict(hold_minutes=1440),
    dict(cancel_cutoff_minutes=-1440), dict(cancel_cutoff_minutes=30 * 1440),
    dict(account_patients=0), dict(account_patients=1000), dict(account_window_days=1),
    dict(strike_window_days=3660), dict(cancel_strikes=0), dict(cancel_strikes=100),
    dict(patient_limits=((1000, 3660),) * 8), dict(ban_days=(0,)), dict(ban_days=[3660] * 5),
    dict(channels=("a",), public_channel="a", release_days={}),
    dict(channels=tuple(f"c{i}" for i in range(32)), public_channel="c0", release_days={}),
    dict(channels=("门诊", "窗口"), public_channel="门诊", release_days={"窗口": 3}),
    dict(waitlist_candidates=1), dict(waitlist_candidates=8), dict(waitlist_per_patient=100),
    dict(waitlist_per_session=1), dict(waitlist_per_session=1_000_000),
    dict(rerelease_seconds=(0, 0)), dict(rerelease_seconds=[86400, 86400]),
    dict(noshow_release_minutes=1440), dict(on_suspend="cancel"), dict(on_suspend="waitlist"),
    dict(waitlist_classes=("所有人",), waitlist_class_of_channel={}),
    dict(waitlist_classes=tuple("abcdefgh"), waitlist_class_of_channel={"app": "h"}),
])
def test_boundary_values_are_accepted(kw):
    p = se.Policy(**kw)
    p.compile()
    se.Engine(policy=p, backend="reference")


@pytest.mark.parametrize("kw", [
    dict(utc_offset_minutes=-14 * 60 - 1), dict(utc_offset_minutes=14 * 60 + 1),
    dict(release_days_default=-1), dict(release_days_default=367),
    dict(release_minute_of_day=-1), dict(release_minute_of_day=1440),
    dict(rollover_minutes=-1), dict(rollover_minutes=366 * 1440 + 1),
    dict(session_minutes=0), dict(session_minutes=1441),
    dict(hold_minutes=0), dict(hold_minutes=-10), dict(hold_minutes=1441),
    dict(cancel_cutoff_minutes=-1441), dict(cancel_cutoff_minutes=30 * 1440 + 1),
    dict(account_patients=-1), dict(account_patients=1001),
    dict(account_window_days=0), dict(strike_window_days=0), dict(strike_window_days=3661),
    dict(cancel_strikes=-1), dict(cancel_strikes=101), dict(cancel_window_days=0),
    # channels
    dict(channels=()), dict(channels=("app", "app")), dict(channels="app"),
    dict(channels=tuple(f"c{i}" for i in range(33)), public_channel="c0", release_days={}),
    dict(channels=("web",)), dict(public_channel="fax"), dict(public_channel=""),
    # release days
    dict(release_days={"fax": 3}), dict(release_days={"referral": -1}),
    dict(release_days={"referral": 367}),
    # limit tables
    dict(patient_limits=((0, 1),)), dict(patient_limits=((1, 0),)), dict(patient_limits=((1001, 1),)),
    dict(patient_limits=((1, 3661),)), dict(patient_limits=((1, 1, 1),)), dict(patient_limits=((1,),)),
    dict(patient_limits=((1, 1),) * 9), dict(patient_limits=(5,)),
    dict(ban_days=()), dict(ban_days=[]), dict(ban_days=(-1,)), dict(ban_days=(3661,)),
    # waitlist
    dict(waitlist_candidates=0), dict(waitlist_candidates=9), dict(waitlist_per_patient=0),
    dict(waitlist_per_session=0), dict(waitlist_per_session=1_000_001),
    dict(rerelease_seconds=(10, 5)), dict(rerelease_seconds=(-1, 5)),
    dict(rerelease_seconds=(0, 86401)), dict(noshow_release_minutes=-1),
    dict(noshow_release_minutes=1441), dict(on_suspend="drop"),
    dict(waitlist_classes=()), dict(waitlist_classes=("a", "a")), dict(waitlist_classes=("",)),
    dict(waitlist_classes=tuple("abcdefghi")), dict(waitlist_classes="public"),
    dict(waitlist_class_of_channel={"fax": "public"}),
    dict(waitlist_class_of_channel={"app": "vip"}),
])
def test_out_of_range_values_are_policy_errors(kw):
    with pytest.raises(PolicyError) as info:
        se.Policy(**kw)
    assert type(info.value) is PolicyError and isinstance(info.value, SlotEngineError)
    assert isinstance(info.value, ValueError)
    assert "Policy." in str(info.value)


@pytest.mark.parametrize("kw", [
    dict(hold_minutes=10.0), dict(hold_minutes="10"), dict(hold_minutes=None),
    dict(hold_minutes=True), dict(account_patients=5.0), dict(cancel_strikes=False),
    dict(one_per_department_day=1), dict(bar_first_visit_expert="no"),
    dict(release_days=None), dict(release_days=[("referral", 28)]),
    dict(patient_limits=None), dict(patient_limits={(2, 1)}),
    dict(waitlist_candidates=2.0), dict(rerelease_seconds=30), dict(rerelease_seconds=(1, 2, 3)),
    dict(on_suspend=1), dict(waitlist_class_of_channel=[("app", "public")]),
])
def test_wrong_types_are_invalid_type(kw):
    with pytest.raises(InvalidType) as info:
        se.Policy(**kw)
    assert isinstance(info.value, TypeError) and isinstance(info.value, SlotEngineError)


def test_engine_uses_the_policy_channels():
    p = se.Policy(channels=("web", "desk"), public_channel="desk", release_days={})
    e = se.Engine(policy=p, backend="reference")
    assert list(e.channel_ids(["web", "desk", None])) == [0, 1, 1]
    with pytest.raises(se.errors.UnknownChannel):
        e.channel_ids(["app"])


def test_waitlist_defaults_and_classes():
    p = se.Policy()
    assert p.waitlist_classes == ("referral", "followup", "public")
    assert (p.waitlist_candidates, p.waitlist_per_patient, p.waitlist_per_session) == (3, 3, 500)
    assert p.rerelease_seconds == (30, 300) and p.noshow_release_minutes == 0
    assert p.on_suspend == "move"
    assert [p.waitlist_class(ch) for ch in p.channels] == [
        "public", "public", "public", "public", "referral", "followup"]
    c = se.Policy(on_suspend="cancel", rerelease_seconds=[0, 0], noshow_release_minutes=15,
                  waitlist_classes=("vip", "all"), waitlist_class_of_channel={}).compile()
    assert (c.suspend_action, c.rerelease_min_ms, c.rerelease_max_ms) == (0, 0, 0)
    assert (c.noshow_grace_ms, c.wl_classes) == (15 * MINUTE, 2)
    assert se.Policy(on_suspend="waitlist").compile().suspend_action == 2
    # a hand-built CorePolicy keeps the plain ledger: freed slots free at once, suspend cancels
    bare = CorePolicy(*se.Policy().compile()[:12])
    assert (bare.rerelease_max_ms, bare.noshow_grace_ms, bare.suspend_action) == (0, 0, 0)
