"""FHIR R4 interop (``slotengine.fhir``, issue 8): export, validation, status mappings, import.

Every exported resource is validated with ``fhir.resources`` (its R4B models:
for Bundle, Schedule, Slot and Appointment they have exactly R4's elements)
and, since those models do not check code bindings, against R4's value sets
for the status codes and R4's invariant app-3.  Status mappings are checked
for each engine state, made through the public API; import is checked by
round trips (hand-picked and hypothesis-generated sessions) and by bad input
that must raise ``FHIRError`` naming resource and field, with the engine's
state hash unchanged.  Times are fixed int ms, never the wall clock.
"""
from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import LEDGER_ONLY
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from hypothesis import given
from hypothesis import strategies as st

import slotengine as se
from slotengine import fhir
from slotengine.errors import (
    InvalidArgument,
    InvalidType,
    TimeWentBackwards,
    UnknownSession,
)
from slotengine.fhir import EXT, SYSTEM, FHIRError
from slotengine.times import DAY, HOUR, MINUTE

T0 = 1_800_000_000_000  # 2027-01-15 16:00 in UTC+8
DAY0 = T0 // DAY * DAY  # a UTC midnight = 08:00 local
START = DAY0 + 10 * DAY  # 2027-01-25 08:00 local
T1 = T0 + HOUR
FAR = DAY0 + 300 * DAY

# R4 value sets (required bindings) the models do not check.
SLOT_STATUS = {"busy", "free", "busy-unavailable", "busy-tentative", "entered-in-error"}
APPOINTMENT_STATUS = {"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled",
                      "noshow", "entered-in-error", "checked-in", "waitlist"}
PARTICIPANT_STATUS = {"accepted", "declined", "tentative", "needs-action"}


# -- helpers -------------------------------------------------------------------------


def engine(backend: str = "core", seed: int = 3, **policy: Any) -> se.Engine:
    """Fair release and risk signals off; freed slots FREE at once unless asked."""
    pol = {**LEDGER_ONLY, "rerelease_seconds": (0, 0), **policy}
    return se.Engine(policy=se.Policy(**pol), seed=seed, backend=backend)


def add(e: se.Engine, name: str, start: int = START, capacity: int = 3, **kw: Any) -> None:
    kw.setdefault("release", {"app": T0})
    e.add_session(name, hospital=kw.pop("hospital", "协和"),
                  department=kw.pop("department", "心内科"), doctor=kw.pop("doctor", "Dr Li"),
                  starts_at=start, capacity=capacity, fee=kw.pop("fee", 6000), now=T0, **kw)


def validate(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Validate a Bundle and each of its resources; return the resources."""
    assert json.loads(json.dumps(bundle)) == bundle  # plain JSON
    Bundle.model_validate(bundle)
    resources = [e["resource"] for e in bundle["entry"]]
    for r in resources:
        get_fhir_model_class(r["resourceType"]).model_validate(r)
        if r["resourceType"] == "Slot":
            assert r["status"] in SLOT_STATUS
        elif r["resourceType"] == "Appointment":
            assert r["status"] in APPOINTMENT_STATUS
            assert all(p["status"] in PARTICIPANT_STATUS for p in r["participant"])
            # app-2 / app-3: start and end together, and only proposed, cancelled and
            # waitlist appointments may go without them
            assert ("start" in r) == ("end" in r)
            assert "start" in r or r["status"] in ("proposed", "cancelled", "waitlist")
    return resources


def by_id(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{r['resourceType']}/{r['id']}": r for r in resources}


def ext(resource: dict[str, Any], name: str) -> list[Any]:
    """The values of a resource's slotengine extension ``name``."""
    out = []
    for x in resource.get("extension", []):
        if x["url"] == EXT[name]:
            out.append({s["url"]: next(v for k, v in s.items() if k.startswith("value"))
                        for s in x["extension"]} if "extension" in x
                       else next(v for k, v in x.items() if k.startswith("value")))
    return out


def scene(backend: str = "core", **policy: Any) -> tuple[se.Engine, dict[str, int]]:
    """An engine with a booking in every state and a waitlist request in every state."""
    e = engine(backend, **policy)
    add(e, "AM", START, 3)  # ends START+4h: fulfilled and no-show
    add(e, "PM", START + 6 * HOUR, 2, department="Neuro")  # still open at the end: arrived
    add(e, "LATE", START + 2 * DAY, 6, tier="expert", slot_minutes=9,
        quotas={"app": 4, "phone": 2}, release={"app": T0, "phone": T0 + 5 * HOUR})
    add(e, "STOP", START + 2 * DAY, 2, department="Derm")  # suspended
    add(e, "FULL", START + 3 * DAY, 1, department="ENT")  # waitlist: open, withdrawn, expired
    add(e, "FILL", START + 4 * DAY, 1, department="Eye")  # waitlist: filled
    ids: dict[str, int] = {}

    def book(key: str, acc: str, pat: str, s: str, t: int = T1, hold: bool = False) -> None:
        r = e.book(acc, pat, s, now=t, hold=hold)
        assert r.booking is not None, (key, r)
        ids[key] = r.booking

    book("fulfilled", "A1", "P1", "AM")
    book("noshow", "A2", "P2", "AM")
    book("arrived", "A3", "P3", "PM")
    book("booked", "A4", "P4", "LATE")
    book("expired", "A5", "P5", "LATE", hold=True)
    book("cancelled", "A6", "P6", "LATE")
    e.cancel(ids["cancelled"], account="A6", now=T1)
    book("suspended", "A7", "P7", "STOP")
    e.suspend("STOP", now=T1)
    book("full", "A8", "P8", "FULL")
    ids["w_open"] = e.join_waitlist("B1", "Q1", ["FULL"], deadline=FAR, now=T1).request
    ids["w_withdrawn"] = e.join_waitlist("B2", "Q2", ["FULL"], deadline=FAR, now=T1).request
    e.cancel_waitlist(ids["w_withdrawn"], account="B2", now=T1)
    ids["w_expired"] = e.join_waitlist("B3", "Q3", ["FULL"], deadline=T1 + HOUR, now=T1).request
    book("filler", "A9", "P9", "FILL")
    ids["w_filled"] = e.join_waitlist("B4", "Q4", ["FILL", "FULL"], deadline=FAR, now=T1).request
    e.cancel(ids["filler"], account="A9", now=T1 + MINUTE)  # fills w_filled
    filled = e.waitlist(ids["w_filled"]).booking
    assert filled is not None
    ids["from_waitlist"] = filled
    e.block_slot("LATE", 6, now=T1 + MINUTE)
    e.check_in(ids["fulfilled"], now=START)
    e.advance(START + 6 * HOUR)  # AM has ended: P2 is a no-show
    e.check_in(ids["arrived"], now=START + 6 * HOUR + MINUTE)
    book("held", "A10", "P10", "LATE", t=START + 7 * HOUR, hold=True)
    e.advance(START + 7 * HOUR + MINUTE)
    return e, ids


@pytest.fixture(scope="module", params=["core", "reference"])
def world(request: pytest.FixtureRequest) -> tuple[se.Engine, dict[str, int]]:
    return scene(request.param)


# -- export: validity ------------------------------------------------------------------


def test_every_exported_resource_validates(world):
    e, _ = world
    sched = validate(fhir.schedule_bundle(e))
    appts = validate(fhir.appointment_bundle(e))
    both = validate(fhir.export_bundle(e))
    assert both == sched + appts
    assert [r["resourceType"] for r in sched].count("Schedule") == 6
    assert [r["resourceType"] for r in sched].count("Slot") == 3 + 2 + 6 + 2 + 1 + 1
    assert [r["id"] for r in appts] == [f"booking-{b}" for b in range(11)] + \
        [f"waitlist-{r}" for r in range(4)]
    # every reference inside the export resolves inside it
    known = set(by_id(both))
    for r in both:
        if r["resourceType"] == "Slot":
            assert r["schedule"]["reference"] in known
        if r["resourceType"] == "Appointment":
            for s in r.get("slot", []):
                assert s["reference"] in known
            for x in r["extension"]:
                if "valueReference" in x:
                    assert x["valueReference"]["reference"] in known


def test_slot_status_mapping(world):
    e, _ = world
    slots = {r["id"]: (r["status"], ext(r, "slot-state")[0])
             for r in validate(fhir.schedule_bundle(e)) if r["resourceType"] == "Slot"}
    assert slots == {
        "AM-1": ("busy", "arrived"), "AM-2": ("busy", "no-show"), "AM-3": ("free", "free"),
        "PM-1": ("busy", "arrived"), "PM-2": ("free", "free"),
        "LATE-1": ("busy", "booked"), "LATE-2": ("busy-tentative", "held"),
        "LATE-3": ("free", "free"), "LATE-4": ("free", "free"), "LATE-5": ("free", "free"),
        "LATE-6": ("busy-unavailable", "blocked"),
        "STOP-1": ("busy-unavailable", "cancelled"), "STOP-2": ("busy-unavailable", "cancelled"),
        "FULL-1": ("busy", "booked"), "FILL-1": ("busy", "booked"),
    }


def test_returning_slot_is_busy_unavailable(backend):
    e = engine(backend, rerelease_seconds=(60, 60))
    add(e, "S1", capacity=2)
    r = e.book("A", "P", "S1", now=T1)
    e.cancel(r.booking, account="A", now=T1)
    assert e.session_counts("S1").returning == 1
    slot = by_id(validate(fhir.schedule_bundle(e)))["Slot/S1-1"]
    assert (slot["status"], ext(slot, "slot-state")) == ("busy-unavailable", ["returning"])


def test_appointment_status_mapping(world):
    e, ids = world
    appts = by_id(validate(fhir.appointment_bundle(e)))
    expect = {
        # key: (status, participant status, booking-state, cancelationReason code)
        "fulfilled": ("fulfilled", "accepted", "arrived", None),  # arrived, session ended
        "arrived": ("arrived", "accepted", "arrived", None),
        "noshow": ("noshow", "accepted", "no-show", None),
        "booked": ("booked", "accepted", "booked", None),
        "held": ("pending", "tentative", "held", None),
        "expired": ("cancelled", "declined", "expired", "HOLD_EXPIRED"),
        "cancelled": ("cancelled", "declined", "cancelled", None),
        "suspended": ("cancelled", "declined", "cancelled", "SESSION_SUSPENDED"),
        "filler": ("cancelled", "declined", "cancelled", None),
        "from_waitlist": ("booked", "accepted", "booked", None),
    }
    for key, (status, part, state, code) in expect.items():
        a = appts[f"Appointment/booking-{ids[key]}"]
        assert a["status"] == status, key
        assert [p["status"] for p in a["participant"]] == [part, part, "accepted"], key
        assert ext(a, "booking-state") == [state], key
        if status == "cancelled":
            reason = a["cancelationReason"]
            assert (reason["coding"][0]["code"] if "coding" in reason else None) == code, key
            assert reason["text"]
        else:
            assert "cancelationReason" not in a, key
    held = appts[f"Appointment/booking-{ids['held']}"]
    assert ext(held, "hold-until") == ["2027-01-25T15:10:00+08:00"]  # 07:00 UTC + 10 min
    wl = appts[f"Appointment/booking-{ids['from_waitlist']}"]
    assert ext(wl, "waitlist-request") == [{"reference": f"Appointment/waitlist-{ids['w_filled']}"}]
    expect_w = {
        "w_open": ("waitlist", "needs-action", "open"),
        "w_filled": ("cancelled", "accepted", "filled"),
        "w_expired": ("cancelled", "declined", "expired"),
        "w_withdrawn": ("cancelled", "declined", "withdrawn"),
    }
    for key, (status, part, state) in expect_w.items():
        a = appts[f"Appointment/waitlist-{ids[key]}"]
        assert a["status"] == status, key
        assert [p["status"] for p in a["participant"]] == [part, part], key
        assert ext(a, "request-state") == [state], key
        assert "start" not in a and "slot" not in a
        if state == "open":
            assert "cancelationReason" not in a
        else:
            assert a["cancelationReason"]["coding"] == [
                {"system": SYSTEM["waitlist-outcome"], "code": state}]
    filled = appts[f"Appointment/waitlist-{ids['w_filled']}"]
    assert ext(filled, "waitlist-booking") == [
        {"reference": f"Appointment/booking-{ids['from_waitlist']}"}]
    assert ext(filled, "waitlist-session") == [{"reference": "Schedule/FILL"},
                                              {"reference": "Schedule/FULL"}]
    assert [p["start"] for p in filled["requestedPeriod"]] == ["2027-01-29T08:00:00+08:00",
                                                                "2027-01-28T08:00:00+08:00"]


def test_booking_appointment_fields(world):
    e, ids = world
    b = ids["booked"]
    a = by_id(validate(fhir.appointment_bundle(e)))[f"Appointment/booking-{b}"]
    assert a == {
        "resourceType": "Appointment",
        "id": f"booking-{b}",
        "extension": [
            {"url": EXT["booking-state"], "valueCode": "booked"},
            {"url": EXT["booking-channel"], "valueString": "app"},
            {"url": EXT["booking-quota"], "valueString": "app"},
        ],
        "identifier": [{"system": SYSTEM["booking"], "value": str(b)}],
        "status": "booked",
        "serviceType": [{"coding": [{"system": SYSTEM["tier"], "code": "expert"}],
                         "text": "expert"}],
        "specialty": [{"text": "心内科"}],
        "start": "2027-01-27T08:00:00+08:00",
        "end": "2027-01-27T08:09:00+08:00",
        "minutesDuration": 9,
        "slot": [{"reference": "Slot/LATE-1"}],
        "created": "2027-01-15T17:00:00+08:00",
        "participant": [
            {"type": [{"text": "patient"}],
             "actor": {"type": "Patient", "identifier": {"system": SYSTEM["patient"], "value": "P4"},
                       "display": "P4"},
             "status": "accepted"},
            {"type": [{"text": "booking account"}],
             "actor": {"type": "RelatedPerson",
                       "identifier": {"system": SYSTEM["account"], "value": "A4"},
                       "display": "A4"},
             "status": "accepted"},
            {"actor": {"type": "Practitioner", "display": "Dr Li"}, "status": "accepted"},
        ],
    }


def test_fulfilled_once_the_visit_is_settled():
    e = engine(settle_at="visit")
    add(e, "S1")
    r = e.book("A", "P", "S1", now=T1)
    e.check_in(r.booking, now=START)
    status = lambda: by_id(validate(fhir.appointment_bundle(e)))["Appointment/booking-0"]["status"]
    assert status() == "arrived"
    assert e.credit.settle(r.booking, now=START + MINUTE).ok
    assert status() == "fulfilled"


def test_schedule_carries_the_session():
    e = engine()
    add(e, "S1", capacity=5, tier="associate", slot_minutes=12, fee=123_456_789_012,
        hospital="协和", department="心内科", doctor="Dr 李", quotas={"app": 3, "referral": 2},
        release={"app": T0, "referral": T0 - DAY + 1})
    sched = by_id(validate(fhir.schedule_bundle(e)))["Schedule/S1"]
    info = e.session("S1")
    assert sched["identifier"] == [{"system": SYSTEM["session"], "value": "S1"}]
    assert sched["active"] is True
    assert sched["actor"] == [{"type": "Location", "display": "协和"},
                              {"type": "HealthcareService", "display": "心内科"},
                              {"type": "Practitioner", "display": "Dr 李"}]
    assert sched["serviceType"][0]["coding"][0]["code"] == "associate"
    assert sched["specialty"] == [{"text": "心内科"}]
    assert ext(sched, "fee-fen") == [123_456_789_012]
    channels = ext(sched, "channel")
    assert [c["name"] for c in channels] == list(e.policy.channels)
    assert {c["name"]: c["quota"] for c in channels if c["quota"]} == {"app": 3, "referral": 2}
    assert channels[0]["release"] == "2027-01-15T16:00:00+08:00"
    assert channels[4]["release"] == "2027-01-14T16:00:00.001+08:00"  # milliseconds kept
    assert channels[1]["release"] == "2027-01-18T08:30:00+08:00"  # the policy's default
    assert sched["planningHorizon"] == {"start": "2027-01-25T08:00:00+08:00",
                                        "end": "2027-01-25T12:00:00+08:00"}
    assert {c["name"]: datetime.fromisoformat(c["release"]).timestamp() * 1000
            for c in channels} == {k: float(v) for k, v in info.release.items()}


@pytest.mark.parametrize("offset,text", [(480, "2027-01-25T08:00:00+08:00"),
                                         (0, "2027-01-25T00:00:00+00:00"),
                                         (-210, "2027-01-24T20:30:00-03:30")])
def test_times_use_the_policy_offset(offset, text):
    e = engine(utc_offset_minutes=offset)
    add(e, "S1", capacity=1)
    slot = by_id(validate(fhir.schedule_bundle(e)))["Slot/S1-1"]
    assert slot["start"] == text
    assert datetime.fromisoformat(slot["start"]).timestamp() * 1000 == START


# -- export: determinism and selection ---------------------------------------------------


def test_exports_are_deterministic_and_change_nothing():
    e1, _ = scene("core")
    e2, _ = scene("reference")
    h = e1.state_hash()
    text = json.dumps(fhir.export_bundle(e1), ensure_ascii=False)
    assert json.dumps(fhir.export_bundle(e1), ensure_ascii=False) == text
    assert json.dumps(fhir.export_bundle(e2), ensure_ascii=False) == text  # either backend
    assert e1.state_hash() == h


def test_sessions_selects_in_engine_order(world):
    e, ids = world
    one = fhir.schedule_bundle(e, ["LATE", "AM"])
    assert one == fhir.schedule_bundle(e, ("AM", "LATE", "AM"))
    assert [r["resource"]["id"] for r in one["entry"]
            if r["resource"]["resourceType"] == "Schedule"] == ["AM", "LATE"]
    appts = fhir.appointment_bundle(e, ["FULL"])
    assert [r["resource"]["id"] for r in appts["entry"]] == [
        f"booking-{ids['full']}", "waitlist-0", "waitlist-1", "waitlist-2", "waitlist-3"]
    assert fhir.export_bundle(e, []) == {"resourceType": "Bundle", "type": "collection",
                                         "entry": []}
    with pytest.raises(UnknownSession):
        fhir.schedule_bundle(e, ["NOPE"])
    with pytest.raises(InvalidType):
        fhir.schedule_bundle(e, "AM")  # a str is not a list of ids
    with pytest.raises(InvalidType):
        fhir.export_bundle(object())  # type: ignore[arg-type]


def test_unicode_session_ids_get_valid_fhir_ids():
    e = engine()
    names = ["心内科 上午", "x.abc", "a" * 59, "S-1", "S-1-2"]
    for n in names:
        add(e, n, capacity=2)
    res = validate(fhir.export_bundle(e))
    scheds = [r for r in res if r["resourceType"] == "Schedule"]
    assert [s["identifier"][0]["value"] for s in scheds] == names
    rids = [s["id"] for s in scheds]
    assert rids[3:] == ["S-1", "S-1-2"]
    assert all(r.startswith("x.") and len(r) == 42 for r in rids[:3])
    assert len(by_id(res)) == len(res)  # ids are unique per resource type
    e2 = engine()
    assert fhir.import_bundle(e2, fhir.schedule_bundle(e), now=T0) == names
    assert fhir.schedule_bundle(e2) == fhir.schedule_bundle(e)


# -- import ----------------------------------------------------------------------------


def simple() -> se.Engine:
    """Sessions with no bookings, in every state import can recreate."""
    e = engine()
    add(e, "S1", capacity=5, tier="expert", slot_minutes=9, quotas={"app": 3, "phone": 2},
        release={"app": T0, "phone": T0 + 123})
    add(e, "S2", START + DAY + 30 * 1000, capacity=4, department="Neuro", doctor="Dr Wang")
    add(e, "S3", START + 2 * DAY, capacity=2, hospital="H2")
    e.block_slot("S1", 2, now=T0)
    e.block_slot("S1", 5, now=T0)
    e.add_capacity("S2", 3, now=T0)  # 加号 into the public channel
    e.suspend("S3", now=T0)
    return e


@pytest.mark.parametrize("backend", ["core", "reference"])
def test_round_trip(backend):
    a = simple()
    b = engine(backend)
    add(b, "OTHER")  # import adds to what is there
    out = fhir.schedule_bundle(a)
    assert fhir.import_bundle(b, json.dumps(out), now=T0) == ["S1", "S2", "S3"]
    assert fhir.schedule_bundle(b, ["S1", "S2", "S3"]) == out
    assert fhir.export_bundle(b, ["S1", "S2", "S3"]) == fhir.export_bundle(a)
    for s in ("S1", "S2", "S3"):
        assert b.session(s) == a.session(s)
        assert b.session_counts(s) == a.session_counts(s)
    b._check_invariants()
    # the imported sessions take bookings like the originals
    assert b.book("A", "P", "S1", now=T1).slot == 1
    assert b.book("A2", "P2", "S1", now=T1).slot == 3


def test_added_capacity_counts_as_public_quota():
    """The engine does not record which channel a 加号 went to: the export counts it public."""
    a = engine()
    add(a, "S1", capacity=2, quotas={"app": 1, "phone": 1}, release={"app": T0, "phone": T0})
    a.add_capacity("S1", 2, channel="phone", now=T0)
    quotas = {c["name"]: c["quota"] for c in ext(by_id(validate(fhir.schedule_bundle(a)))[
        "Schedule/S1"], "channel") if c["quota"]}
    assert quotas == {"app": 3, "phone": 1}
    b = engine()
    fhir.import_bundle(b, fhir.schedule_bundle(a), now=T0)
    assert fhir.schedule_bundle(b) == fhir.schedule_bundle(a)
    assert b.session("S1").capacity == 4


def test_import_of_a_foreign_bundle_uses_defaults():
    """No slotengine identifiers or channels, references by fullUrl, UTC times."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0c7ef3a2-0000-4000-8000-000000000001",
         "resource": {"resourceType": "Schedule", "id": "dr-li-am",
                      "extension": [{"url": EXT["fee-fen"], "valueInteger": 5000},
                                    {"url": "http://example.org/other", "valueString": "x"}],
                      "actor": [{"reference": "Practitioner/p1", "display": "Dr Li"},
                                {"type": "Location", "display": "协和"},
                                {"type": "HealthcareService", "display": "心内科"}]},
         "request": {"method": "POST", "url": "Schedule"}},
        *({"resource": {"resourceType": "Slot", "status": "free",
                        "schedule": {"reference": "urn:uuid:0c7ef3a2-0000-4000-8000-000000000001"},
                        "start": f"2027-01-25T00:{m:02d}:00Z", "end": f"2027-01-25T00:{m + 15:02d}:00Z"}}
          for m in (0, 15, 30)),
    ]}
    bundle["entry"][3]["resource"]["schedule"]["reference"] = "https://h.example/fhir/Schedule/dr-li-am"
    e = engine()
    assert fhir.import_bundle(e, bundle, now=T0) == ["dr-li-am"]
    i = e.session("dr-li-am")
    assert (i.hospital, i.department, i.doctor, i.tier, i.fee) == ("协和", "心内科", "Dr Li", "general", 5000)
    assert (i.starts_at, i.slot_minutes, i.capacity) == (START, 15, 3)
    assert i.quota_left["app"] == 3
    assert i.release["app"] == START - 7 * DAY + 30 * MINUTE  # 08:30 local, 7 days ahead
    # other value[x] types for the channel extension's parts
    bundle["entry"][0]["resource"].update(id="dr-li-pm", extension=[
        {"url": EXT["fee-fen"], "valueDecimal": 5000},
        {"url": EXT["channel"], "extension": [{"url": "name", "valueString": "app"},
                                              {"url": "quota", "valueInteger": 1},
                                              {"url": "release", "valueDateTime": "2027-01-20T00:00:00Z"}]},
        {"url": EXT["channel"], "extension": [{"url": "quota", "valuePositiveInt": 2},
                                              {"url": "name", "valueString": "phone"}]}])
    bundle["entry"][3]["resource"]["schedule"]["reference"] = "Schedule/dr-li-pm"
    assert fhir.import_bundle(e, bundle, now=T0) == ["dr-li-pm"]
    i = e.session("dr-li-pm")
    assert (i.quota_left["app"], i.quota_left["phone"]) == (1, 2)
    assert i.release["app"] == DAY0 + 5 * DAY


def test_import_rejects_bookings():
    e, _ = scene()
    b = engine()
    h = b.state_hash()
    with pytest.raises(FHIRError) as info:
        fhir.import_bundle(b, fhir.schedule_bundle(e), now=T0)
    assert (info.value.resource, info.value.field) == ("Slot/AM-1", "status")
    with pytest.raises(FHIRError) as info:
        fhir.import_bundle(b, fhir.export_bundle(e, ["STOP"]), now=T0)
    assert (info.value.resource, info.value.field) == ("Bundle.entry[3]", "resource.resourceType")
    assert b.state_hash() == h


def test_import_checks_now():
    b = engine()
    add(b, "OLD")
    b.advance(T1)
    h = b.state_hash()
    with pytest.raises(InvalidType):
        fhir.import_bundle(b, fhir.schedule_bundle(simple()), now=datetime(2027, 1, 15, 18))
    with pytest.raises(TimeWentBackwards):
        fhir.import_bundle(b, fhir.schedule_bundle(simple()), now=T0)
    assert b.state_hash() == h
    assert fhir.import_bundle(b, {"resourceType": "Bundle", "type": "collection"}, now=T1) == []


def test_fhir_error_names_resource_and_field():
    err = FHIRError("Slot/S1-3", "start", "bad")
    assert isinstance(err, InvalidArgument) and isinstance(err, ValueError)
    assert str(err) == "Slot/S1-3: start: bad"
    back = pickle.loads(pickle.dumps(err))
    assert (back.resource, back.field, str(back)) == ("Slot/S1-3", "start", str(err))


# -- bad input ---------------------------------------------------------------------------


def base() -> dict[str, Any]:
    """S1 (3 slots, app 2 + phone 1) and S2 (2 slots): entries 0-3 and 4-6."""
    e = engine()
    add(e, "S1", capacity=3, quotas={"app": 2, "phone": 1})
    add(e, "S2", START + DAY, capacity=2)
    return fhir.schedule_bundle(e)


def res(b: dict[str, Any], n: int) -> dict[str, Any]:
    return b["entry"][n]["resource"]


def setp(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    """Set ``entry[n].resource`` dotted path (list indexes as numbers) to value; None deletes."""
    n, *keys = path.split(".")

    def go(b: dict[str, Any]) -> None:
        obj: Any = res(b, int(n))
        for k in keys[:-1]:
            obj = obj[int(k)] if k.isdigit() else obj[k]
        last = keys[-1]
        if value is _DELETE:
            del obj[int(last) if last.isdigit() else last]
        else:
            obj[int(last) if last.isdigit() else last] = value
    return go


_DELETE = object()


def shift_slot(n: int, start_min: int, end_min: int) -> Callable[[dict[str, Any]], None]:
    def go(b: dict[str, Any]) -> None:
        r = res(b, n)
        for k, d in (("start", start_min), ("end", end_min)):
            t = datetime.fromisoformat(r[k]) + timedelta(minutes=d)
            r[k] = t.isoformat()
    return go


def swap(i: int, j: int) -> Callable[[dict[str, Any]], None]:
    def go(b: dict[str, Any]) -> None:
        b["entry"][i], b["entry"][j] = b["entry"][j], b["entry"][i]
    return go


def append(resource: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda b: b["entry"].append({"resource": resource})


def huge(b: dict[str, Any]) -> None:
    """S2 gets 65,536 one-minute slots."""
    slot = {k: v for k, v in res(b, 5).items() if k != "extension"}
    t0 = datetime.fromisoformat(slot["start"])
    times = [(t0 + timedelta(minutes=k)).isoformat() for k in range(65537)]
    b["entry"][5:7] = [{"resource": dict(slot, id=f"S2-{k + 1}", start=times[k], end=times[k + 1])}
                       for k in range(65536)]


BAD: list[tuple[str, Any, str, str]] = [
    # (case, the bundle (a mutation of base(), or a value), resource, field)
    ("not JSON", "{'resourceType': 'Bundle'", "Bundle", "(json)"),
    ("JSON of a list", "[]", "Bundle", "resourceType"),
    ("huge JSON number", '{"resourceType": "Bundle", "n": ' + "9" * 5000 + "}", "Bundle", "(json)"),
    ("not a dict", 42, "Bundle", "resourceType"),
    ("a Schedule, not a Bundle", res(base(), 0), "Bundle", "resourceType"),
    ("a Patient, not a Bundle", lambda b: b.update(resourceType="Patient"), "Bundle", "resourceType"),
    ("bad Bundle.type", lambda b: b.update(type="bag"), "Bundle", "type"),
    ("entry not a list", lambda b: b.update(entry={}), "Bundle", "entry"),
    ("entry not an object", lambda b: b["entry"].insert(1, "Slot"), "Bundle.entry[1]", "(entry)"),
    ("entry without resource", lambda b: b["entry"].insert(2, {"fullUrl": "x"}),
     "Bundle.entry[2]", "resource"),
    ("unknown resource type", append({"resourceType": "Patient", "id": "p"}),
     "Bundle.entry[7]", "resource.resourceType"),
    ("an Appointment", append({"resourceType": "Appointment", "status": "booked"}),
     "Bundle.entry[7]", "resource.resourceType"),
    ("empty Schedule.id, no identifier", lambda b: (setp("0.id", "")(b), setp("0.identifier", _DELETE)(b)),
     "Bundle.entry[0]", "id"),
    ("Schedule.id an int", setp("0.id", 7), "Bundle.entry[0]", "id"),
    ("empty session identifier", setp("0.identifier.0.value", ""), "Schedule/S1", "identifier"),
    ("blank session identifier", setp("0.identifier.0.value", " \u3000"), "Schedule/S1", "identifier"),
    ("control character in id", setp("0.identifier.0.value", "S\n1"), "Schedule/S1", "identifier"),
    ("identifier not a list", setp("0.identifier", {"value": "S1"}), "Schedule/S1", "identifier"),
    ("duplicate id in bundle", setp("4.identifier.0.value", "S1"), "Schedule/S2", "identifier"),
    ("session exists in the engine", setp("4.identifier.0.value", "OLD"), "Schedule/S2", "identifier"),
    ("two Schedules, one id", setp("4.id", "S1"), "Schedule/S1", "id"),
    ("missing fee", setp("0.extension.0.url", "http://example.org/fee"),
     "Schedule/S1", "extension:fee-fen"),
    ("fee a string", setp("0.extension.0.valueDecimal", "6000"),
     "Schedule/S1", "extension:fee-fen.valueDecimal"),
    ("fee a float", setp("0.extension.0.valueDecimal", 60.5),
     "Schedule/S1", "extension:fee-fen.valueDecimal"),
    ("fee a bool", setp("0.extension.0.valueDecimal", True),
     "Schedule/S1", "extension:fee-fen.valueDecimal"),
    ("negative fee", setp("0.extension.0.valueDecimal", -1),
     "Schedule/S1", "extension:fee-fen.valueDecimal"),
    ("huge fee", setp("0.extension.0.valueDecimal", 10**13),
     "Schedule/S1", "extension:fee-fen.valueDecimal"),
    ("no actors", setp("0.actor", _DELETE), "Schedule/S1", "actor"),
    ("no Practitioner", setp("0.actor", [{"type": "Location", "display": "H"},
                                         {"type": "HealthcareService", "display": "D"}]),
     "Schedule/S1", "actor"),
    ("empty doctor", setp("0.actor.2.display", ""), "Schedule/S1", "actor[2].display"),
    ("doctor not a string", setp("0.actor.2.display", ["Dr Li"]), "Schedule/S1", "actor[2].display"),
    ("unknown actor type", setp("0.actor.0.type", "Device"), "Schedule/S1", "actor[0].type"),
    ("two Practitioners", setp("0.actor.1.type", "Practitioner"), "Schedule/S1", "actor[2].type"),
    ("unknown tier", setp("0.serviceType.0.coding.0.code", "professor"),
     "Schedule/S1", "serviceType[0].coding[0].code"),
    ("active not a bool", setp("0.active", "yes"), "Schedule/S1", "active"),
    ("unknown channel", setp("0.extension.1.extension.0.valueString", "fax"),
     "Schedule/S1", "extension[1].name"),
    ("quota missing", setp("0.extension.1.extension", [{"url": "name", "valueString": "app"}]),
     "Schedule/S1", "extension[1].quota"),
    ("huge quota", setp("0.extension.1.extension.1.valueUnsignedInt", 70000),
     "Schedule/S1", "extension[1].quota"),
    ("negative quota", setp("0.extension.1.extension.1.valueUnsignedInt", -2),
     "Schedule/S1", "extension[1].quota"),
    ("quotas do not sum to the slots", setp("0.extension.1.extension.1.valueUnsignedInt", 1),
     "Schedule/S1", "extension:channel"),
    ("naive release", setp("0.extension.1.extension.2.valueInstant", "2027-01-15T16:00:00"),
     "Schedule/S1", "extension[1].release"),
    ("naive slot start", setp("2.start", "2027-01-25T08:10:00"), "Slot/S1-2", "start"),
    ("date-only start", setp("1.start", "2027-01-25"), "Slot/S1-1", "start"),
    ("no such date", setp("1.start", "2027-02-30T08:00:00+08:00"), "Slot/S1-1", "start"),
    ("start an int", setp("1.start", START), "Slot/S1-1", "start"),
    ("offset out of range", setp("1.start", "2027-01-25T08:00:00+15:00"), "Slot/S1-1", "start"),
    ("finer than a millisecond", setp("1.start", "2027-01-25T08:00:00.0001+08:00"),
     "Slot/S1-1", "start"),
    ("before 1970", setp("1.start", "1969-12-31T23:59:59Z"), "Slot/S1-1", "start"),
    ("too late for the engine", lambda b: [setp(f"{n}.{k}", f"9999-12-31T{h}:00:00Z")(b) for n, h0 in
                                           ((5, 21), (6, 22)) for k, h in (("start", h0), ("end", h0 + 1))],
     "Slot/S2-1", "start"),
    ("end missing", setp("1.end", _DELETE), "Slot/S1-1", "end"),
    ("end before start", setp("1.end", "2027-01-25T07:59:00+08:00"), "Slot/S1-1", "end"),
    ("not whole minutes", lambda b: [setp(f"{n}.{k}", v)(b) for n, k, v in (
        (1, "end", "2027-01-25T08:00:30+08:00"), (2, "start", "2027-01-25T08:00:30+08:00"))],
     "Slot/S1-1", "end"),
    ("non-contiguous slots", shift_slot(2, 1, 1), "Slot/S1-2", "start"),
    ("unequal slot lengths", shift_slot(3, 0, 1), "Slot/S1-3", "end"),
    ("slots out of order", swap(2, 3), "Slot/S1-3", "start"),
    ("slot status busy", setp("1.status", "busy"), "Slot/S1-1", "status"),
    ("slot status busy-tentative", setp("1.status", "busy-tentative"), "Slot/S1-1", "status"),
    ("slot status not a code", setp("1.status", "booked"), "Slot/S1-1", "status"),
    ("slot of an unknown schedule", setp("1.schedule.reference", "Schedule/NOPE"),
     "Slot/S1-1", "schedule.reference"),
    ("slot without schedule", setp("1.schedule", _DELETE), "Slot/S1-1", "schedule"),
    ("empty slot id", setp("1.id", ""), "Bundle.entry[1]", "id"),
    ("two slots, one id", setp("2.id", "S1-1"), "Slot/S1-1", "id"),
    ("slot number disagrees", setp("2.extension.0.valuePositiveInt", 7),
     "Slot/S1-2", "extension[0].valuePositiveInt"),
    ("modifierExtension", setp("1.modifierExtension", [{"url": "http://x", "valueBoolean": True}]),
     "Slot/S1-1", "modifierExtension"),
    ("schedule without slots", lambda b: b["entry"].__delitem__(slice(5, 7)),
     "Schedule/S2", "capacity"),
    ("huge capacity", huge, "Schedule/S2", "capacity"),
]


@pytest.mark.parametrize("case,bad,resource,field", BAD, ids=[c[0] for c in BAD])
def test_bad_input(case, bad, resource, field):
    e = engine()
    add(e, "OLD")
    h, n = e.state_hash(), len(e.dump()["names"]["sessions"])
    bundle: Any = bad
    if callable(bad):
        bundle = base()
        bad(bundle)
    with pytest.raises(FHIRError) as info:
        fhir.import_bundle(e, bundle, now=T0)
    err = info.value
    assert (err.resource, err.field) == (resource, field), str(err)
    assert str(err).startswith(f"{resource}: {field}: ")
    assert e.state_hash() == h and len(e.dump()["names"]["sessions"]) == n
    # the unmutated bundle imports (the case, not the base, is at fault)
    if callable(bad):
        assert fhir.import_bundle(e, base(), now=T0) == ["S1", "S2"]


# -- hypothesis: random sessions round-trip ------------------------------------------------

_names = st.sampled_from(["H1", "协和", "Dr Li", "心内科", "Neuro", "Dr 王", "x"])
_ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9.\-]{1,70}", fullmatch=True),
    st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")),
            min_size=1, max_size=20),
).filter(lambda s: bool(s.strip()) and s.isprintable())


@st.composite
def sessions(draw: Any) -> list[dict[str, Any]]:
    ids = draw(st.lists(_ids, min_size=1, max_size=4, unique=True))
    out = []
    for name in ids:
        capacity = draw(st.integers(1, 12))
        channels = draw(st.lists(st.sampled_from(["app", "window", "phone", "referral"]),
                                 min_size=1, max_size=3, unique=True))
        cuts = sorted(draw(st.lists(st.integers(0, capacity), min_size=len(channels) - 1,
                                    max_size=len(channels) - 1)))
        parts = [b - a for a, b in zip([0, *cuts], [*cuts, capacity])]
        kw = {"hospital": draw(_names), "department": draw(_names), "doctor": draw(_names),
              "tier": draw(st.sampled_from(["general", "associate", "expert"])),
              "starts_at": START + draw(st.integers(0, 30 * DAY)),
              "slot_minutes": draw(st.integers(1, 60)), "capacity": capacity,
              "fee": draw(st.integers(0, 10**12)), "quotas": dict(zip(channels, parts)),
              "release": {ch: T0 - draw(st.integers(0, 60 * DAY))
                          for ch in draw(st.lists(st.sampled_from(channels), unique=True))}}
        out.append({"name": name, "kw": kw, "added": draw(st.integers(0, 3)),
                    "blocked": draw(st.sets(st.integers(1, capacity))),
                    "suspended": draw(st.booleans())})
    return out


@given(sessions(), st.sampled_from(["core", "reference"]))
def test_random_sessions_round_trip(specs, backend):
    a = engine(backend)
    for s in specs:
        a.add_session(s["name"], now=T0, **s["kw"])
        if s["added"]:
            a.add_capacity(s["name"], s["added"], now=T0)
        for k in sorted(s["blocked"]):
            a.block_slot(s["name"], k, now=T0)
        if s["suspended"]:
            a.suspend(s["name"], now=T0)
    out = fhir.export_bundle(a)
    validate(out)
    b = engine(backend)
    names = [s["name"] for s in specs]
    assert fhir.import_bundle(b, json.dumps(out, ensure_ascii=False), now=T0) == names
    assert fhir.export_bundle(b) == out
    for n in names:
        assert b.session(n) == a.session(n)
        assert b.session_counts(n) == a.session_counts(n)
    b._check_invariants()


def test_a_check_the_reader_misses_is_caught_by_the_dry_run(monkeypatch):
    """Import runs the plan on a scratch engine first: an engine refusal changes nothing."""
    monkeypatch.setattr(fhir._Reader, "finish", lambda self, p: (
        p.kwargs.update(starts_at=p.slots[0][1], slot_minutes=1, capacity=len(p.slots))))
    e = engine()
    add(e, "OLD")
    h = e.state_hash()
    bundle = base()
    bundle["entry"][4]["resource"]["extension"][1]["extension"][1]["valueUnsignedInt"] = 1
    with pytest.raises(FHIRError) as info:
        fhir.import_bundle(e, bundle, now=T0)  # S2's quotas sum to 1, not 2: add_session refuses
    assert (info.value.resource, info.value.field) == ("Schedule/S2", "(session)")
    assert "quotas sum to 1" in str(info.value)
    assert e.state_hash() == h


def test_the_example_in_docs_runs(capsys):
    """docs/fhir.md's example is real code."""
    text = (Path(__file__).parent.parent / "docs" / "fhir.md").read_text(encoding="utf-8")
    example = text.split("## Example\n\n```python\n", 1)[1].split("```", 1)[0]
    exec(compile(example, "docs/fhir.md", "exec"), {})  # noqa: S102 (our own doc)
    assert capsys.readouterr().out == "Slot/x-1 schedule.reference\n"


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a JSON document."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


_JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
    st.sampled_from(["", " ", "x", "Schedule/S1", "2027-01-25T08:00:00", "2027-01-25T08:00:00Z",
                     "free", "busy", "Practitioner", EXT["fee-fen"], EXT["channel"], "app"]),
    st.lists(st.none(), max_size=2), st.dictionaries(st.sampled_from(["url", "value"]),
                                                     st.none(), max_size=2),
)


@given(st.data())
def test_any_mutation_raises_fhir_error_or_imports(data):
    """A valid bundle with random parts replaced or deleted: FHIRError (engine unchanged) or
    sessions created; never another exception."""
    bundle = base()
    paths = _paths(bundle)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths[1:]))
        parent: Any = bundle
        try:
            for k in path[:-1]:
                parent = parent[k]
            if data.draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = data.draw(_JUNK)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed this path
    e = engine()
    add(e, "OLD")
    h = e.state_hash()
    try:
        created = fhir.import_bundle(e, bundle, now=T0)
    except FHIRError:
        assert e.state_hash() == h
    else:
        assert len(e.dump()["names"]["sessions"]) == 1 + len(created)
        e._check_invariants()
