"""FHIR R4 interop: sessions as Schedule + Slot, bookings and waitlist requests as Appointment.

Plain dicts in, plain dicts out (``json.dumps`` works on every result): the
library does not depend on a FHIR package at run time; the tests validate
every exported resource with ``fhir.resources``.  The full mapping is in
docs/fhir.md; in short:

* a session is one ``Schedule`` (id ``Schedule/<session>``; the session id
  itself in ``identifier``; hospital, department and doctor as display-only
  ``actor`` references to Location, HealthcareService and Practitioner; the
  tier in ``serviceType``; ``active`` false once suspended) plus one ``Slot``
  per slot number (``Slot/<session>-<k>``), whose ``status`` says free,
  busy (booked, arrived, no-show), busy-tentative (held) or busy-unavailable
  (blocked, returning, or the session suspended).  What FHIR has no element
  for (the fee in integer fen, per-channel quotas and release times, the
  engine's own slot state) rides in extensions under ``BASE_URL``;
* a booking is ``Appointment/booking-<n>`` (held -> pending, booked ->
  booked, arrived -> arrived, or fulfilled once the session has ended or the
  visit was settled, no-show -> noshow, cancelled and expired -> cancelled);
  a waitlist request is ``Appointment/waitlist-<n>`` (open -> waitlist;
  filled, expired and withdrawn -> cancelled, with the outcome in
  ``cancelationReason``: R4's invariant app-3 lets only proposed, cancelled
  and waitlist appointments go without a start and end).

Exports are deterministic: the same engine state gives the same JSON (no
wall clock, stable ids, engine order).  Times are ISO 8601 in the policy's
zone (``Policy.utc_offset_minutes``, e.g. ``+08:00``), whole seconds unless
the engine time has milliseconds.

``import_bundle`` is the way back for sessions: it checks a whole Bundle of
Schedule and Slot resources before it creates anything, so bad input raises
``FHIRError`` naming the resource and the field and leaves the engine as it
was.  ``import_bundle(e2, schedule_bundle(e1))`` recreates e1's sessions.
"""
from __future__ import annotations

import gc
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from .engine import BookingInfo, Engine, SessionInfo, WaitlistInfo
from .errors import (
    InvalidArgument,
    InvalidType,
    SlotEngineError,
    TimeWentBackwards,
    UnknownSession,
)
from .outcomes import BookingState, Reason, RequestState, Tier
from .times import MAX_MS, MINUTE, from_ms, to_ms

__all__ = [
    "BASE_URL",
    "EXT",
    "SYSTEM",
    "FHIRError",
    "appointment_bundle",
    "export_bundle",
    "import_bundle",
    "schedule_bundle",
]

#: Namespace of slotengine's extensions, identifier systems and code systems.
BASE_URL = "https://slotengine.dev/fhir"
_SD = BASE_URL + "/StructureDefinition/"

#: Extension URLs, by short name (docs/fhir.md describes each).
EXT = {
    name: _SD + name
    for name in (
        "fee-fen", "channel", "slot-number", "slot-state", "booking-state", "booking-channel",
        "booking-quota", "hold-until", "end-reason", "waitlist-request", "request-state",
        "waitlist-priority", "waitlist-deadline", "waitlist-session", "waitlist-booking",
    )
}
#: Identifier systems and code systems.
SYSTEM = {
    "session": BASE_URL + "/sid/session",
    "patient": BASE_URL + "/sid/patient",
    "account": BASE_URL + "/sid/account",
    "booking": BASE_URL + "/sid/booking",
    "request": BASE_URL + "/sid/waitlist-request",
    "tier": BASE_URL + "/CodeSystem/tier",
    "reason": BASE_URL + "/CodeSystem/reason",
    "waitlist-outcome": BASE_URL + "/CodeSystem/waitlist-outcome",
}


class FHIRError(InvalidArgument):
    """Bad FHIR input: ``resource`` ("Slot/S1-3", "Bundle.entry[4]") and ``field`` ("start")."""

    def __init__(self, resource: str, field: str, problem: str) -> None:
        super().__init__(f"{resource}: {field}: {problem}")
        self.resource = resource
        self.field = field
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.resource, self.field, self.problem))


# -- mappings ------------------------------------------------------------------------

#: Engine slot state (the canonical dump's code) -> (FHIR Slot.status, slot-state code).
_SLOT_STATES = {
    0: ("free", "free"),
    1: ("busy-tentative", "held"),
    2: ("busy", "booked"),
    3: ("busy", "arrived"),
    4: ("busy", "no-show"),
    5: ("busy-unavailable", "cancelled"),  # the slots of a suspended session
    6: ("busy-unavailable", "blocked"),
    7: ("busy-unavailable", "returning"),  # freed, hidden until its re-release
}
_SLOT_STATUSES = ("busy", "free", "busy-unavailable", "busy-tentative", "entered-in-error")

#: BookingState -> (Appointment.status, participant status, booking-state code).
_BOOKING = {
    BookingState.HELD: ("pending", "tentative", "held"),
    BookingState.BOOKED: ("booked", "accepted", "booked"),
    BookingState.ARRIVED: ("arrived", "accepted", "arrived"),  # "fulfilled" once done
    BookingState.NO_SHOW: ("noshow", "accepted", "no-show"),
    BookingState.CANCELLED: ("cancelled", "declined", "cancelled"),
    BookingState.EXPIRED: ("cancelled", "declined", "expired"),
}
#: RequestState -> (Appointment.status, participant status, request-state code, outcome text).
_REQUEST = {
    RequestState.OPEN: ("waitlist", "needs-action", "open", ""),
    RequestState.FILLED: ("cancelled", "accepted", "filled",
                          "filled: the patient was booked into a slot"),
    RequestState.EXPIRED: ("cancelled", "declined", "expired",
                           "expired: no slot was freed before the deadline"),
    RequestState.CANCELLED: ("cancelled", "declined", "withdrawn",
                             "withdrawn by the account"),
}
_TIERS = tuple(t.name.lower() for t in Tier)
# Schedule.actor types that carry a session's names.
_ACTORS = {"Location": "hospital", "HealthcareService": "department", "Practitioner": "doctor"}
_BUNDLE_TYPES = ("document", "message", "transaction", "transaction-response", "batch",
                 "batch-response", "history", "searchset", "collection")
_FHIR_ID = re.compile(r"[A-Za-z0-9.\-]{1,58}")  # leaves room for "-<k>" in a Slot id
_MAX_ID_LEN = 256
_MAX_FEE = 10**12
_MAX_CAPACITY = 65535


# -- export --------------------------------------------------------------------------


def schedule_bundle(engine: Engine, sessions: Iterable[str] | None = None) -> dict[str, Any]:
    """A "collection" Bundle: per session its Schedule, then one Slot per slot number.

    ``sessions`` (default all) picks sessions by id; the Bundle lists them in
    the engine's order either way.  O(engine state): it reads the canonical
    ``dump()`` once for slot states and the quota split.
    """
    with _gc_paused():
        ex = _Export(engine, sessions)
        return _bundle(ex.schedule_entries())


def appointment_bundle(engine: Engine, sessions: Iterable[str] | None = None) -> dict[str, Any]:
    """A "collection" Bundle of Appointments: every booking (any state), then every waitlist request.

    With ``sessions``, the bookings in those sessions and the requests that
    name any of them as a candidate.  Ordered by booking id, then request id.
    """
    with _gc_paused():
        ex = _Export(engine, sessions)
        return _bundle(ex.appointment_entries())


def export_bundle(engine: Engine, sessions: Iterable[str] | None = None) -> dict[str, Any]:
    """``schedule_bundle`` and ``appointment_bundle`` in one "collection" Bundle."""
    with _gc_paused():
        ex = _Export(engine, sessions)
        return _bundle(ex.schedule_entries() + ex.appointment_entries())


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cycle collector while building many small dicts (none form cycles):
    otherwise it walks the growing heap again and again (as in Engine.events; an
    export of 62,000 resources took 2.8 s with it running, 2.0 s without)."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": r} for r in resources]}


def _resource_id(session: str) -> str:
    """The FHIR id of a session's Schedule (a Slot's is ``<this>-<k>``).

    FHIR ids are ``[A-Za-z0-9.-]{1,64}``; session ids may be any printable
    unicode.  Ids that fit are used as they are; others (and any starting
    with "x.", so the two kinds never meet) become "x." and 40 hex digits of
    their SHA-256.  The session id itself is always in Schedule.identifier.
    """
    if _FHIR_ID.fullmatch(session) and not session.startswith("x."):
        return session
    return "x." + hashlib.sha256(session.encode("utf-8")).hexdigest()[:40]


class _Export:
    """One consistent read of the engine for an export."""

    def __init__(self, engine: Engine, sessions: Iterable[str] | None) -> None:
        if not isinstance(engine, Engine):
            raise InvalidType(f"engine must be a slotengine.Engine, not {type(engine).__name__}")
        self.e = engine
        self.dump = engine.dump()
        names = engine.sessions()
        if sessions is None:
            picked = set(names)
        else:
            if isinstance(sessions, (str, bytes)) or not isinstance(sessions, Iterable):
                raise InvalidType("sessions must be an iterable of session ids (or None for all)")
            picked = set()
            for s in sessions:
                picked.add(engine.session(s).id)  # UnknownSession / InvalidType for bad ids
        self.order = [(i, s) for i, s in enumerate(names) if s in picked]
        self.picked = picked
        pol = engine.policy
        self.tz = timezone(timedelta(minutes=pol.utc_offset_minutes))
        self.channels = pol.channels
        self.public = pol.public_channel
        self.settle_at_visit = pol.settle_at == "visit"
        self._info: dict[str, SessionInfo] = {}

    def info(self, session: str) -> SessionInfo:
        i = self._info.get(session)
        if i is None:
            i = self._info[session] = self.e.session(session)
        return i

    def t(self, ms: int) -> str:
        return _iso(ms, self.tz)

    # Schedules and Slots

    def schedule_entries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, name in self.order:
            info = self.info(name)
            core = self.dump["sessions"][i]
            rid = _resource_id(name)
            out.append(self.schedule(info, core, rid))
            states = core["slot_states"]
            step = info.slot_minutes * MINUTE
            for k in range(1, info.capacity + 1):
                status, state = _SLOT_STATES[states[k - 1]]
                if info.suspended:
                    status = "busy-unavailable"
                start = info.starts_at + (k - 1) * step
                out.append({
                    "resourceType": "Slot",
                    "id": f"{rid}-{k}",
                    "extension": [
                        {"url": EXT["slot-number"], "valuePositiveInt": k},
                        {"url": EXT["slot-state"], "valueCode": state},
                    ],
                    "schedule": {"reference": f"Schedule/{rid}"},
                    "status": status,
                    "start": self.t(start),
                    "end": self.t(start + step),
                })
        return out

    def schedule(self, info: SessionInfo, core: dict[str, Any], rid: str) -> dict[str, Any]:
        # The quota split add_session was given; capacity added since (加号) is
        # counted in the public channel's quota, as the engine does not record
        # which channel's quota a 加号 went to (see docs/fhir.md).
        quotas = dict(zip(self.channels, core["quotas"]))
        quotas[self.public] += info.capacity - sum(quotas.values())
        channels = [
            {"url": EXT["channel"], "extension": [
                {"url": "name", "valueString": ch},
                {"url": "quota", "valueUnsignedInt": quotas[ch]},
                {"url": "release", "valueInstant": self.t(info.release[ch])},
            ]}
            for ch in self.channels
        ]
        return {
            "resourceType": "Schedule",
            "id": rid,
            "extension": [{"url": EXT["fee-fen"], "valueDecimal": info.fee}, *channels],
            "identifier": [{"system": SYSTEM["session"], "value": info.id}],
            "active": not info.suspended,
            "serviceType": [_tier(info.tier)],
            "specialty": [{"text": info.department}],
            "actor": [
                {"type": "Location", "display": info.hospital},
                {"type": "HealthcareService", "display": info.department},
                {"type": "Practitioner", "display": info.doctor},
            ],
            "planningHorizon": {"start": self.t(info.starts_at), "end": self.t(info.ends_at)},
        }

    # Appointments

    def appointment_entries(self) -> list[dict[str, Any]]:
        out = []
        for b in range(len(self.dump["bookings"])):
            info = self.e.booking(b)
            if info.session in self.picked:
                out.append(self.booking(info))
        for r in range(len(self.dump["requests"])):
            w = self.e.waitlist(r)
            if any(s in self.picked for s in w.sessions):
                out.append(self.request(w))
        return out

    def booking(self, b: BookingInfo) -> dict[str, Any]:
        s = self.info(b.session)
        status, part, state = _BOOKING[b.state]
        if b.state == BookingState.ARRIVED and (
                s.closed or (self.settle_at_visit and b.charged is not None)):
            status = "fulfilled"  # the session has ended, or the visit was settled
        ext: list[dict[str, Any]] = [
            {"url": EXT["booking-state"], "valueCode": state},
            {"url": EXT["booking-channel"], "valueString": b.channel},
            {"url": EXT["booking-quota"], "valueString": b.quota},
        ]
        if b.state == BookingState.HELD:
            ext.append({"url": EXT["hold-until"], "valueInstant": self.t(b.hold_until)})
        if b.end_reason != Reason.NONE:
            ext.append({"url": EXT["end-reason"], "valueCoding": _reason(b.end_reason)})
        if b.request is not None:
            ext.append({"url": EXT["waitlist-request"],
                        "valueReference": {"reference": f"Appointment/waitlist-{b.request}"}})
        a: dict[str, Any] = {
            "resourceType": "Appointment",
            "id": f"booking-{b.id}",
            "extension": ext,
            "identifier": [{"system": SYSTEM["booking"], "value": str(b.id)}],
            "status": status,
        }
        if status == "cancelled":
            why = b.end_reason
            if why == Reason.NONE and b.state == BookingState.EXPIRED:
                why = Reason.HOLD_EXPIRED  # an expired hold records no end reason of its own
            if why != Reason.NONE:
                a["cancelationReason"] = {"coding": [_reason(why)], "text": why.message}
            else:
                a["cancelationReason"] = {"text": "cancelled by the account"}
        a["serviceType"] = [_tier(s.tier)]
        a["specialty"] = [{"text": s.department}]
        a["start"] = self.t(b.window[0])
        a["end"] = self.t(b.window[1])
        a["minutesDuration"] = s.slot_minutes
        a["slot"] = [{"reference": f"Slot/{_resource_id(b.session)}-{b.slot}"}]
        a["created"] = self.t(b.created_at)
        a["participant"] = [
            _person("Patient", "patient", b.patient, part),
            _person("RelatedPerson", "account", b.account, part),
            {"actor": {"type": "Practitioner", "display": s.doctor}, "status": "accepted"},
        ]
        return a

    def request(self, w: WaitlistInfo) -> dict[str, Any]:
        status, part, state, outcome = _REQUEST[w.state]
        ext: list[dict[str, Any]] = [
            {"url": EXT["request-state"], "valueCode": state},
            {"url": EXT["booking-channel"], "valueString": w.channel},
            {"url": EXT["waitlist-priority"], "valueString": w.priority},
            {"url": EXT["waitlist-deadline"], "valueDateTime": self.t(w.deadline)},
        ]
        ext += [{"url": EXT["waitlist-session"],
                 "valueReference": {"reference": f"Schedule/{_resource_id(s)}"}}
                for s in w.sessions]
        if w.booking is not None:
            ext.append({"url": EXT["waitlist-booking"],
                        "valueReference": {"reference": f"Appointment/booking-{w.booking}"}})
        a: dict[str, Any] = {
            "resourceType": "Appointment",
            "id": f"waitlist-{w.id}",
            "extension": ext,
            "identifier": [{"system": SYSTEM["request"], "value": str(w.id)}],
            "status": status,
        }
        if outcome:
            a["cancelationReason"] = {
                "coding": [{"system": SYSTEM["waitlist-outcome"], "code": state}],
                "text": outcome if w.booking is None else f"{outcome} (Appointment/booking-{w.booking})",
            }
        a["created"] = self.t(w.created_at)
        a["participant"] = [
            _person("Patient", "patient", w.patient, part),
            _person("RelatedPerson", "account", w.account, part),
        ]
        a["requestedPeriod"] = [
            {"start": self.t(i.starts_at), "end": self.t(i.ends_at)}
            for i in (self.info(s) for s in w.sessions)
        ]
        return a


def _person(kind: str, system: str, name: str, status: str) -> dict[str, Any]:
    """A participant named by identifier and display (engine ids are not FHIR ids)."""
    return {
        "type": [{"text": "booking account" if system == "account" else "patient"}],
        "actor": {"type": kind, "identifier": {"system": SYSTEM[system], "value": name},
                  "display": name},
        "status": status,
    }


def _tier(tier: str) -> dict[str, Any]:
    return {"coding": [{"system": SYSTEM["tier"], "code": tier}], "text": tier}


def _reason(reason: Reason) -> dict[str, Any]:
    return {"system": SYSTEM["reason"], "code": reason.name, "display": reason.message}


def _iso(ms: int, tz: timezone) -> str:
    """ISO 8601 with the zone's offset; milliseconds only when there are some."""
    return from_ms(ms, tz).isoformat(timespec="milliseconds" if ms % 1000 else "seconds")


# -- import --------------------------------------------------------------------------


_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class _Plan:
    """One session to create: add_session's arguments, then blocks and a suspension."""

    where: str  # "Schedule/<id>" for errors
    id_field: str  # where its session id came from: "id" or "identifier"
    ref_keys: list[str]
    session: str
    kwargs: dict[str, Any]
    suspend: bool
    slots: list[tuple[str, int, int, str]] = field(default_factory=list)  # where, start, end, status


def import_bundle(engine: Engine, bundle: dict[str, Any] | str, *, now: object) -> list[str]:
    """Create a session from each Schedule of ``bundle`` and its Slots; returns their ids, in order.

    ``bundle`` is a Bundle dict or its JSON text.  A Schedule's session id is
    its slotengine identifier, else its ``id``; its Slots (``schedule``
    referencing ``Schedule/<id>`` or the entry's ``fullUrl``) give capacity,
    start and slot length, and must be contiguous, of equal length and in
    order.  Slots marked busy-unavailable are blocked; an inactive Schedule
    is suspended.  Everything is checked before the first session is made:
    bad input raises ``FHIRError`` (resource and field) and changes nothing.
    """
    if not isinstance(engine, Engine):
        raise InvalidType(f"engine must be a slotengine.Engine, not {type(engine).__name__}")
    t = to_ms(now, "now")
    if t < engine.now:
        raise TimeWentBackwards(f"now={t} is earlier than the engine clock {engine.now}")
    plans = _Reader(engine).read(bundle)
    _dry_run(engine, plans, t)
    for p in plans:
        _apply(engine, p, t)
    return [p.session for p in plans]


def _apply(engine: Engine, p: _Plan, t: int) -> None:
    engine.add_session(p.session, now=t, **p.kwargs)
    if p.suspend:
        engine.suspend(p.session, now=t)
        return
    for k, (_, _, _, status) in enumerate(p.slots, 1):
        if status == "busy-unavailable":
            engine.block_slot(p.session, k, now=t)


def _dry_run(engine: Engine, plans: list[_Plan], t: int) -> None:
    """Run the plan on a scratch engine first: whatever the checks missed fails there."""
    scratch = Engine(engine.policy, engine.seed, backend=engine.backend)
    for p in plans:
        try:
            _apply(scratch, p, t)
        except SlotEngineError as exc:
            raise FHIRError(p.where, "(session)", f"the engine refuses it: {exc}") from None


class _Reader:
    """Checks a Bundle and turns it into plans, raising FHIRError at the first problem."""

    def __init__(self, engine: Engine) -> None:
        self.e = engine
        pol = engine.policy
        self.channels = pol.channels
        self.session_minutes = pol.session_minutes

    def read(self, bundle: object) -> list[_Plan]:
        if isinstance(bundle, str):
            try:
                bundle = json.loads(bundle)
            except ValueError as exc:  # JSONDecodeError, and ints too long to convert
                raise FHIRError("Bundle", "(json)", f"not valid JSON: {exc}") from None
        if not isinstance(bundle, dict):
            raise FHIRError("Bundle", "resourceType",
                            f"expected a Bundle (a dict or JSON text), not {type(bundle).__name__}")
        if bundle.get("resourceType") != "Bundle":
            raise FHIRError("Bundle", "resourceType",
                            f"expected 'Bundle', not {bundle.get('resourceType')!r}")
        kind = bundle.get("type")
        if kind not in _BUNDLE_TYPES:
            raise FHIRError("Bundle", "type", f"{kind!r} is not a Bundle type")
        entries = bundle.get("entry", [])
        if not isinstance(entries, list):
            raise FHIRError("Bundle", "entry", f"must be a list, not {type(entries).__name__}")
        plans: list[_Plan] = []
        refs: dict[str, _Plan] = {}
        ids: set[str] = set()
        slot_ids: set[str] = set()
        slots: list[tuple[int, dict[str, Any]]] = []
        for n, entry in enumerate(entries):
            where = f"Bundle.entry[{n}]"
            if not isinstance(entry, dict):
                raise FHIRError(where, "(entry)", f"must be an object, not {type(entry).__name__}")
            res = entry.get("resource")
            if not isinstance(res, dict):
                raise FHIRError(where, "resource", "missing, or not an object")
            rtype = res.get("resourceType")
            if rtype == "Schedule":
                p = self.schedule(n, entry, res)
                if p.session in ids:
                    raise FHIRError(p.where, p.id_field,
                                    f"session {p.session!r} appears twice in the bundle")
                ids.add(p.session)
                for key in p.ref_keys:
                    if key in refs:
                        raise FHIRError(p.where, "id", f"{key!r} names two Schedules")
                    refs[key] = p
                plans.append(p)
            elif rtype == "Slot":
                rid = res.get("id")
                if rid is not None:
                    sw = _where("Slot", res, n)
                    if rid in slot_ids:
                        raise FHIRError(sw, "id", "two Slots have this id")
                    slot_ids.add(rid)
                slots.append((n, res))
            else:
                raise FHIRError(where, "resource.resourceType",
                                f"{rtype!r} cannot be imported: import_bundle takes Schedule "
                                "and Slot resources only")
        for n, res in slots:
            self.slot(n, res, refs)
        for p in plans:
            self.finish(p)
        return plans

    # Schedule

    def schedule(self, n: int, entry: dict[str, Any], res: dict[str, Any]) -> _Plan:
        rid = res.get("id")
        where = f"Bundle.entry[{n}]"
        if rid is not None:
            if not isinstance(rid, str) or not rid.strip():
                raise FHIRError(where, "id", "must be a non-empty string")
            where = f"Schedule/{rid}"
        _no_modifiers(res, where)
        ident = _session_identifier(res, where)
        id_field = "id" if ident is None else "identifier"
        if ident is not None:
            session = self.name(ident, where, "identifier")
        elif rid is not None:
            session = self.name(rid, where, "id")
        else:
            raise FHIRError(where, "id", "a Schedule needs an id or a slotengine session identifier")
        try:
            self.e.session(session)
        except UnknownSession:
            pass
        else:
            raise FHIRError(where, id_field, f"session {session!r} already exists in the engine")
        keys = []
        if rid is not None:
            keys.append(f"Schedule/{rid}")
        full = entry.get("fullUrl")
        if full is not None:
            if not isinstance(full, str) or not full:
                raise FHIRError(where, "fullUrl", "must be a non-empty string")
            keys.append(full)
        active = res.get("active", True)
        if active is not True and active is not False:
            raise FHIRError(where, "active", f"must be true or false, not {active!r}")
        names = self.actors(res, where)
        kwargs: dict[str, Any] = dict(names, tier=self.tier(res, where),
                                      fee=self.fee(res, where))
        quotas, release = self.channel_extensions(res, where)
        if quotas is not None:
            kwargs["quotas"] = quotas
        if release:
            kwargs["release"] = release
        horizon = res.get("planningHorizon")
        if horizon is not None:
            if not isinstance(horizon, dict):
                raise FHIRError(where, "planningHorizon", "must be a Period object")
            for end in ("start", "end"):
                if end in horizon:
                    _instant(horizon[end], where, f"planningHorizon.{end}")
        return _Plan(where, id_field, keys, session, kwargs, not active)

    def name(self, value: object, where: str, fname: str) -> str:
        """An engine id or name: a non-empty printable string of at most 256 characters."""
        if not isinstance(value, str):
            raise FHIRError(where, fname, f"must be a string, not {type(value).__name__}")
        if not value.strip():
            raise FHIRError(where, fname, "must be a non-empty string")
        if len(value) > _MAX_ID_LEN:
            raise FHIRError(where, fname, f"longer than {_MAX_ID_LEN} characters")
        if not value.isprintable():
            raise FHIRError(where, fname, f"{value!r} contains control characters")
        return value

    def actors(self, res: dict[str, Any], where: str) -> dict[str, str]:
        actors = res.get("actor")
        if not isinstance(actors, list) or not actors:
            raise FHIRError(where, "actor", "must list the Location (hospital), HealthcareService "
                                            "(department) and Practitioner (doctor)")
        found: dict[str, str] = {}
        for i, a in enumerate(actors):
            f = f"actor[{i}]"
            if not isinstance(a, dict):
                raise FHIRError(where, f, "must be a Reference object")
            kind = a.get("type")
            ref = a.get("reference")
            if kind is None and isinstance(ref, str) and "/" in ref:
                kind = ref.split("/", 1)[0]
            if not isinstance(kind, str) or kind not in _ACTORS:
                raise FHIRError(where, f + ".type", f"{kind!r}: expected one of {sorted(_ACTORS)}")
            key = _ACTORS[kind]
            if key in found:
                raise FHIRError(where, f + ".type", f"a second {kind} actor")
            found[key] = self.name(a.get("display"), where, f + ".display")
        for kind, key in _ACTORS.items():
            if key not in found:
                raise FHIRError(where, "actor", f"no {kind} actor (the {key})")
        return found

    def tier(self, res: dict[str, Any], where: str) -> str:
        types = res.get("serviceType", [])
        if not isinstance(types, list):
            raise FHIRError(where, "serviceType", "must be a list of CodeableConcepts")
        tier = None
        for i, cc in enumerate(types):
            codings = cc.get("coding", []) if isinstance(cc, dict) else None
            if not isinstance(codings, list):
                raise FHIRError(where, f"serviceType[{i}]", "must be a CodeableConcept")
            for j, c in enumerate(codings):
                if isinstance(c, dict) and c.get("system") == SYSTEM["tier"]:
                    code = c.get("code")
                    if code not in _TIERS:
                        raise FHIRError(where, f"serviceType[{i}].coding[{j}].code",
                                        f"{code!r}: expected one of {list(_TIERS)}")
                    if tier is not None and tier != code:
                        raise FHIRError(where, f"serviceType[{i}].coding[{j}].code",
                                        f"a second tier {code!r}")
                    tier = code
        return tier or "general"

    def fee(self, res: dict[str, Any], where: str) -> int:
        ext = _extensions(res, where, EXT["fee-fen"])
        if not ext:
            raise FHIRError(where, "extension:fee-fen", "missing: the fee in integer fen")
        if len(ext) > 1:
            raise FHIRError(where, "extension:fee-fen", "given more than once")
        key, value = _value(ext[0][1], "valueDecimal", "valueInteger", "valueUnsignedInt")
        return _int(value, where, f"extension:fee-fen.{key}", 0, _MAX_FEE)

    def channel_extensions(self, res: dict[str, Any], where: str
                           ) -> tuple[dict[str, int] | None, dict[str, int]]:
        quotas: dict[str, int] = {}
        release: dict[str, int] = {}
        exts = _extensions(res, where, EXT["channel"])
        for i, ext in exts:
            f = f"extension[{i}]"
            subs = ext.get("extension")
            if not isinstance(subs, list):
                raise FHIRError(where, f + ".extension", "a channel extension needs name and quota")
            parts: dict[str, Any] = {}
            for j, sub in enumerate(subs):
                if not isinstance(sub, dict) or sub.get("url") not in ("name", "quota", "release"):
                    raise FHIRError(where, f"{f}.extension[{j}].url",
                                    "expected 'name', 'quota' or 'release'")
                if sub["url"] in parts:
                    raise FHIRError(where, f"{f}.extension[{j}].url", f"a second {sub['url']!r}")
                parts[sub["url"]] = sub
            ch = parts.get("name", {}).get("valueString")
            if ch not in self.channels:
                raise FHIRError(where, f + ".name",
                                f"{ch!r} is not a channel of this engine's policy {list(self.channels)}")
            if ch in quotas:
                raise FHIRError(where, f + ".name", f"channel {ch!r} given twice")
            if "quota" not in parts:
                raise FHIRError(where, f + ".quota", f"missing for channel {ch!r}")
            _, value = _value(parts["quota"], "valueUnsignedInt", "valueInteger", "valuePositiveInt")
            quotas[ch] = _int(value, where, f + ".quota", 0, _MAX_CAPACITY)
            if "release" in parts:
                _, value = _value(parts["release"], "valueInstant", "valueDateTime")
                release[ch] = _instant(value, where, f + ".release")
        return (quotas if exts else None), release

    # Slot

    def slot(self, n: int, res: dict[str, Any], refs: dict[str, _Plan]) -> None:
        where = _where("Slot", res, n)
        _no_modifiers(res, where)
        sched = res.get("schedule")
        if not isinstance(sched, dict):
            raise FHIRError(where, "schedule", "missing: a Reference to its Schedule")
        ref = sched.get("reference")
        if not isinstance(ref, str) or not ref:
            raise FHIRError(where, "schedule.reference", "must be a non-empty string")
        p = refs.get(ref)
        if p is None and "/Schedule/" in ref:  # an absolute URL: match on its last two parts
            p = refs.get("Schedule/" + ref.rsplit("/Schedule/", 1)[1])
        if p is None:
            raise FHIRError(where, "schedule.reference", f"{ref!r} is no Schedule in this bundle")
        status = res.get("status")
        if status not in _SLOT_STATUSES:
            raise FHIRError(where, "status", f"{status!r} is not a Slot status {list(_SLOT_STATUSES)}")
        if status not in ("free", "busy-unavailable"):
            raise FHIRError(where, "status", f"{status!r}: only free and busy-unavailable slots can "
                                             "be imported (bookings and holds go through the engine)")
        start = _instant(res.get("start"), where, "start")
        end = _instant(res.get("end"), where, "end")
        if end <= start:
            raise FHIRError(where, "end", "must be later than start")
        if p.slots:
            _, s0, e0, _ = p.slots[0]
            _, _, prev_end, _ = p.slots[-1]
            if start != prev_end:
                raise FHIRError(where, "start", f"must equal the previous Slot's end "
                                                f"{_iso(prev_end, timezone.utc)}: a session's slots "
                                                "are contiguous and in order")
            if end - start != e0 - s0:
                raise FHIRError(where, "end", "every Slot of a Schedule has the same length")
        else:
            length = end - start
            if length % MINUTE or not 1 <= length // MINUTE <= 24 * 60:
                raise FHIRError(where, "end", "a slot lasts a whole number of minutes, 1 to 1440")
        k = len(p.slots) + 1
        for i, ext in _extensions(res, where, EXT["slot-number"]):
            if ext.get("valuePositiveInt") != k:
                raise FHIRError(where, f"extension[{i}].valuePositiveInt",
                                f"slot number {ext.get('valuePositiveInt')!r}, but it is Slot "
                                f"{k} of its Schedule")
        if k > _MAX_CAPACITY:
            raise FHIRError(p.where, "capacity", f"more than {_MAX_CAPACITY} Slots")
        p.slots.append((where, start, end, status))

    def finish(self, p: _Plan) -> None:
        if not p.slots:
            raise FHIRError(p.where, "capacity", "no Slot references this Schedule")
        _, start, end, _ = p.slots[0]
        if start + self.session_minutes * MINUTE > MAX_MS:
            raise FHIRError(p.slots[0][0], "start", "too late for the engine (year 9999)")
        capacity = len(p.slots)
        quotas = p.kwargs.get("quotas")
        if quotas is not None and sum(quotas.values()) != capacity:
            raise FHIRError(p.where, "extension:channel",
                            f"channel quotas sum to {sum(quotas.values())}, but the Schedule has "
                            f"{capacity} Slots")
        p.kwargs.update(starts_at=start, slot_minutes=(end - start) // MINUTE, capacity=capacity)


def _where(kind: str, res: dict[str, Any], n: int) -> str:
    rid = res.get("id")
    if isinstance(rid, str) and rid.strip():
        return f"{kind}/{rid}"
    if rid is not None:
        raise FHIRError(f"Bundle.entry[{n}]", "id", "must be a non-empty string")
    return f"Bundle.entry[{n}]"


def _no_modifiers(res: dict[str, Any], where: str) -> None:
    if res.get("modifierExtension"):
        raise FHIRError(where, "modifierExtension", "not understood, so the resource cannot be imported")


def _session_identifier(res: dict[str, Any], where: str) -> object:
    """The value of the slotengine session identifier, if any (checked by the caller)."""
    idents = res.get("identifier")
    if idents is None:
        return None
    if not isinstance(idents, list):
        raise FHIRError(where, "identifier", "must be a list of Identifiers")
    values = [i.get("value") for i in idents
              if isinstance(i, dict) and i.get("system") == SYSTEM["session"]]
    if len(values) > 1:
        raise FHIRError(where, "identifier", "two slotengine session identifiers")
    if values and values[0] is None:
        raise FHIRError(where, "identifier", "the slotengine session identifier has no value")
    return values[0] if values else None


def _extensions(res: dict[str, Any], where: str, url: str) -> list[tuple[int, dict[str, Any]]]:
    """(index, extension) of the resource's extensions with ``url``."""
    exts = res.get("extension", [])
    if not isinstance(exts, list):
        raise FHIRError(where, "extension", "must be a list")
    out = []
    for i, ext in enumerate(exts):
        if not isinstance(ext, dict) or not isinstance(ext.get("url"), str):
            raise FHIRError(where, f"extension[{i}]", "an extension is an object with a url")
        if ext["url"] == url:
            out.append((i, ext))
    return out


def _value(ext: dict[str, Any], *keys: str) -> tuple[str, object]:
    """(key, value) of the first of ``keys`` (value[x] types) the extension has."""
    for key in keys:
        if key in ext:
            return key, ext[key]
    return keys[0], None


def _int(value: object, where: str, fname: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise FHIRError(where, fname, f"must be an integer, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise FHIRError(where, fname, f"{value} is outside {lo}..{hi}")
    return value


def _instant(value: object, where: str, fname: str) -> int:
    """Engine ms of a FHIR instant: date, time to the second and a zone offset, required."""
    if not isinstance(value, str):
        raise FHIRError(where, fname, f"must be an instant string, not {type(value).__name__}")
    m = _INSTANT.fullmatch(value)
    if m is None:
        raise FHIRError(where, fname, f"{value!r} is not an instant like 2026-12-01T08:00:00+08:00 "
                                      "(date, time and a zone offset; naive times are refused)")
    y, mo, d, h, mi, s, frac, zone = m.groups()
    if frac and frac[3:].strip("0"):
        raise FHIRError(where, fname, f"{value!r} is finer than a millisecond")
    try:
        if zone == "Z":
            tz = timezone.utc
        else:
            oh, om = int(zone[1:3]), int(zone[4:6])
            if oh > 14 or om > 59 or (oh == 14 and om):
                raise ValueError("offset out of range")
            sign = 1 if zone[0] == "+" else -1
            tz = timezone(sign * timedelta(hours=oh, minutes=om))
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=tz)
    except ValueError as exc:
        raise FHIRError(where, fname, f"{value!r} is not a valid time: {exc}") from None
    ms = (dt - _EPOCH) // timedelta(milliseconds=1) + int((frac or "0")[:3].ljust(3, "0"))
    if not 0 <= ms <= MAX_MS:
        raise FHIRError(where, fname, f"{value!r} is outside the engine's range (1970 to 9999)")
    return ms
