"""A small HTTP service embedding one durable slotengine (standard library only).

One ``Engine.open(directory)`` behind ``slotengine.LockedEngine``; a
``ThreadingHTTPServer`` runs each request on its own thread and every engine
call goes through the facade's lock.  JSON in, JSON out.

**What a 2xx acknowledgement guarantees.**  The engine journals a command's
inputs before the call returns, and the response is written only after the
call returned, so an acknowledged command is in the journal.  How durable
that is depends on ``--durability`` (docs/durability.md):

* ``fsync`` (default): the record was ``fdatasync``-ed before the response:
  it survives a killed process *and* a power loss.  Requests finishing at
  the same time share one sync (LockedEngine's group commit), so concurrent
  clients do not pay one disk write each.
* ``grouped``: survives a killed process; a power loss may lose the last
  ``group_ms`` (10 ms) of acknowledgements.
* ``process``: survives a killed process (the record is in the journal's
  shared mapping), not a power loss.

**Time.**  The engine never reads the clock: every command takes ``now``.
The service passes the wall clock (or the engine clock, if that is ahead:
explicit times may have moved it) unless the request body carries ``"now"``
(ISO 8601 with an offset, or int ms since the epoch), which tests and
replays use to be deterministic.  An explicit ``now`` earlier than the
engine clock is refused (400 ``TimeWentBackwards``).  Times in responses are
ISO 8601 strings in the policy's UTC offset, with milliseconds.

    python examples/service/server.py --dir /var/lib/slots --port 8080 --demo-sessions

See examples/service/README.md for the endpoints and the status code table.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import re
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, unquote, urlsplit

import slotengine as se
from slotengine import Reason, Status, errors

__all__ = ["REASON_STATUS", "ERROR_STATUS", "App", "SlotService", "make_server", "main"]

# -- status codes -------------------------------------------------------------------

#: HTTP status of a REJECTED result, for every reason a command can give.
#: 403: the engine will not do it *for this party* (blocked, banned, not the
#: owner, a rule about the patient).  409: the request is fine but conflicts
#: with the current state of the session, booking or the patient's other
#: bookings (it may succeed later or elsewhere; a session not yet released,
#: suspended or closed is a state of the session, not a permission, hence 409
#: and not 403).  429: slow-lane throttle, with ``Retry-After``.  402: the fee
#: is not covered.
REASON_STATUS: dict[Reason, int] = {
    Reason.SESSION_SUSPENDED: 409,
    Reason.SESSION_CLOSED: 409,
    Reason.NOT_RELEASED: 409,
    Reason.PATIENT_BANNED: 403,
    Reason.DUPLICATE_SESSION: 409,
    Reason.DUPLICATE_DEPARTMENT_DAY: 409,
    Reason.PATIENT_LIMIT: 409,
    Reason.ACCOUNT_PATIENT_LIMIT: 409,
    Reason.FIRST_VISIT_EXPERT: 403,
    Reason.DUPLICATE_TICKET: 409,
    Reason.DUPLICATE_WAITLIST: 409,
    Reason.WAITLIST_PATIENT_CAP: 409,
    Reason.BLOCKED: 403,
    Reason.THROTTLED: 429,
    Reason.FLAGGED: 403,  # only ever a waitlist skip reason; listed for completeness
    Reason.FULL: 409,
    Reason.QUOTA_EXHAUSTED: 409,
    Reason.SLOTS_LEFT: 409,
    Reason.WAITLIST_FULL: 409,
    Reason.NO_COVER: 402,
    Reason.CREDIT_SUSPENDED: 402,
    Reason.NOT_OWNER: 403,
    Reason.NOT_ACTIVE: 409,
    Reason.CANCEL_CUTOFF: 409,
    Reason.HOLD_EXPIRED: 409,
    Reason.NOT_HELD: 409,
    Reason.NOT_CONFIRMED: 409,
    Reason.SLOT_RELEASED: 409,  # a no-show's end reason, never a command's
}

#: HTTP status of an exception, most specific class first (``isinstance`` order).
ERROR_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (errors.DuplicateId, 409),
    (errors.UnknownChannel, 400),  # a channel is a value of the request, not a resource
    (errors.UnknownId, 404),
    (errors.InvalidType, 400),
    (errors.InvalidArgument, 400),  # TimeWentBackwards and PolicyError included
    (errors.InvalidState, 409),
    (errors.JournalError, 503),
)

MAX_BODY = 8 << 20  # bytes; a FHIR bundle import is the largest body
EVENT_LOG = 10_000  # events kept for GET /events


class HTTPError(Exception):
    """An error the service itself raises (bad JSON, no such route): status and class name."""

    def __init__(self, status: int, name: str, message: str,
                 headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


# -- JSON of engine values ------------------------------------------------------------


class Codec:
    """Times in and out (the policy's UTC offset), and engine records as JSON dicts."""

    def __init__(self, policy: se.Policy) -> None:
        self.tz = timezone(timedelta(minutes=policy.utc_offset_minutes))

    def iso(self, ms: int | None) -> str | None:
        if ms is None:
            return None
        return se.from_ms(ms, self.tz).isoformat(timespec="milliseconds")

    @staticmethod
    def time(value: object, name: str) -> int:
        """ISO 8601 with an offset, or int ms: engine ms (naive times refused)."""
        if isinstance(value, str):
            try:
                dt = datetime.fromisoformat(value)
            except ValueError:
                raise errors.InvalidArgument(f"{name} is not an ISO 8601 time: {value!r}") from None
            return se.to_ms(dt, name)  # refuses a naive time with InvalidType
        if type(value) is int:
            return se.to_ms(value, name)
        raise errors.InvalidType(f"{name} must be an ISO 8601 string or int ms, "
                                 f"not {_json_type(value)}")

    def result(self, r: Any) -> dict[str, Any]:
        reason = Reason(r.reason)
        return {
            "status": Status(r.status).name,
            "reason": reason.name,
            "reason_code": int(reason),
            "message": reason.message,
            "slot": r.slot,
            "window": None if r.window is None else [self.iso(r.window[0]), self.iso(r.window[1])],
            "booking": r.booking,
            "ticket": r.ticket,
            "request": r.request,
            "retry_after_ms": r.retry_after,
        }

    def booking(self, b: se.BookingInfo) -> dict[str, Any]:
        return {
            "id": b.id, "session": b.session, "slot": b.slot,
            "window": [self.iso(b.window[0]), self.iso(b.window[1])],
            "patient": b.patient, "account": b.account, "channel": b.channel, "quota": b.quota,
            "state": b.state.name, "created_at": self.iso(b.created_at),
            "changed_at": self.iso(b.changed_at),
            "hold_until": self.iso(b.hold_until) if b.hold_until else None,
            "end_reason": b.end_reason.name, "request": b.request,
            "held_balance": b.held_balance, "held_credit": b.held_credit, "charged": b.charged,
        }

    def session(self, s: se.SessionInfo, counts: se.SlotCounts, waiting: int) -> dict[str, Any]:
        return {
            "id": s.id, "hospital": s.hospital, "department": s.department, "doctor": s.doctor,
            "tier": s.tier, "starts_at": self.iso(s.starts_at), "ends_at": self.iso(s.ends_at),
            "slot_minutes": s.slot_minutes, "capacity": s.capacity, "fee": s.fee,
            "release": {ch: self.iso(t) for ch, t in s.release.items()},
            "quota_left": dict(s.quota_left),
            "cancel_cutoff_at": self.iso(s.cancel_cutoff_at), "suspended": s.suspended,
            "closed": s.closed, "counts": counts._asdict(), "waitlist": waiting,
        }

    def ticket(self, t: se.TicketInfo, p: se.TicketPosition) -> dict[str, Any]:
        return {
            "id": t.id, "session": t.session, "patient": t.patient, "account": t.account,
            "channel": t.channel, "hold": t.hold, "lane": t.lane,
            "submitted_at": self.iso(t.submitted_at), "state": t.state.name, "draw": t.draw,
            "cohort_size": t.cohort_size, "served_at": self.iso(t.served_at),
            "booking": t.booking, "reason": t.reason.name,
            "position": {"ahead": p.ahead, "estimate_ms": p.estimate_ms},
        }

    def waitlist(self, w: se.WaitlistInfo) -> dict[str, Any]:
        return {
            "id": w.id, "account": w.account, "patient": w.patient, "channel": w.channel,
            "priority": w.priority, "state": w.state.name, "sessions": list(w.sessions),
            "created_at": self.iso(w.created_at), "deadline": self.iso(w.deadline),
            "changed_at": self.iso(w.changed_at), "booking": w.booking, "session": w.session,
            "skip_reason": w.skip_reason.name, "held": w.held,
        }

    def event(self, seq: int, e: se.Event) -> dict[str, Any]:
        return {
            "seq": seq, "kind": e.kind.name, "at": self.iso(e.at), "session": e.session,
            "booking": e.booking, "patient": e.patient, "account": e.account,
            "detail": e.detail, "slot": e.slot, "reason": e.reason.name,
        }

    @staticmethod
    def cover(c: se.Cover) -> dict[str, Any]:
        return {"ok": c.ok, "reason": c.reason.name, "from_balance": c.from_balance,
                "from_credit": c.from_credit}

    @staticmethod
    def line(x: se.Line) -> dict[str, Any]:
        return {"kind": x.kind, "state": x.state.name, "limit": x.limit, "used": x.used,
                "held": x.held, "available": x.available}


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


class Body:
    """A request's JSON object, read field by field; fields nobody read are an error."""

    def __init__(self, data: object) -> None:
        if not isinstance(data, dict):
            raise HTTPError(400, "InvalidType", f"the body must be a JSON object, not {_json_type(data)}")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def get(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise HTTPError(400, "InvalidArgument", f"missing field {key!r}")
            return default
        return self.data[key]

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise HTTPError(400, "InvalidArgument", f"unknown field(s): {', '.join(extra)}")


# -- the application --------------------------------------------------------------------

Handler = Callable[["App", list[str], dict[str, list[str]], Body], Reply]
ROUTES: list[tuple[str, re.Pattern[str], str]] = []


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    """Register ``App.<fn>`` for ``method`` and a path pattern (``{}`` is one path segment)."""
    regex = re.compile("^" + pattern.replace("{}", "([^/]+)") + "$")

    def deco(fn: Handler) -> Handler:
        ROUTES.append((method, regex, fn.__name__))
        return fn
    return deco


def _int_param(text: str, name: str) -> int:
    if not re.fullmatch(r"-?[0-9]{1,19}", text):
        raise errors.InvalidType(f"{name} must be an integer id, not {text!r}")
    return int(text)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class App:
    """The endpoints, over one LockedEngine.  HTTP-free: ``dispatch`` takes a parsed request."""

    def __init__(self, locked: se.LockedEngine) -> None:
        self.locked = locked
        self.codec = Codec(locked.policy)
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENT_LOG)
        self.event_seq = 0
        self._events_lock = threading.RLock()

    # -- plumbing ---------------------------------------------------------------------

    def dispatch(self, method: str, path: str, query: str, raw: bytes) -> Reply:
        """Route one request; every error becomes a JSON reply, never an exception."""
        try:
            allowed = []
            for m, regex, name in ROUTES:
                match = regex.match(path)
                if match is None:
                    continue
                allowed.append(m)
                if m != method:
                    continue
                params = [unquote(p, errors="strict") for p in match.groups()]
                body = Body(self._parse(raw) if method == "POST" else {})
                handler: Handler = getattr(App, name)
                return handler(self, params, parse_qs(query, keep_blank_values=True), body)
            if allowed:
                raise HTTPError(405, "MethodNotAllowed", f"{method} is not allowed on {path}",
                                {"Allow": ", ".join(sorted(set(allowed)))})
            raise HTTPError(404, "NotFound", f"no route {path}")
        except HTTPError as exc:
            return Reply(exc.status, {**_error(exc.name, str(exc)), **exc.extra}, exc.headers)
        except UnicodeDecodeError as exc:
            return Reply(400, _error("InvalidArgument", f"not UTF-8: {exc}"))
        except errors.SlotEngineError as exc:
            status = next(s for cls, s in ERROR_STATUS + ((errors.SlotEngineError, 400),)
                          if isinstance(exc, cls))
            return Reply(status, _error(type(exc).__name__, str(exc)))

    @staticmethod
    def _parse(raw: bytes) -> object:
        if not raw.strip():
            return {}
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
            raise HTTPError(400, "MalformedJSON", f"the body is not valid JSON: {exc}") from None

    def _at(self, body: Body) -> int | None:
        """The request's explicit ``now`` (ms), or None: the service's clock then."""
        value = body.get("now")
        return None if value is None else self.codec.time(value, "now")

    def _command(self, fn: Callable[[int], Any], now: int | None) -> Any:
        """Run ``fn(now)``; without an explicit time, at the wall clock (or the engine clock).

        Another request may move the engine clock between reading it and our
        turn at the lock; a defaulted time is then simply taken again.
        """
        if now is not None:
            return fn(now)
        for _ in range(100):
            t = max(_wall_ms(), self.locked.now)
            try:
                return fn(t)
            except errors.TimeWentBackwards:
                continue
        raise HTTPError(503, "Busy", "the engine clock kept moving ahead; try again")

    def _result(self, r: Any, ok_status: int) -> Reply:
        """A command's Result: ``ok_status`` if done, else the reason's status."""
        out = self.codec.result(r)
        if Status(r.status) != Status.REJECTED:
            return Reply(ok_status, out)
        reason = Reason(r.reason)
        headers = {}
        if reason == Reason.THROTTLED:
            headers["Retry-After"] = str(max(1, math.ceil(r.retry_after / 1000)))
        out["explain"] = self.locked.explain(r)
        return Reply(REASON_STATUS[reason], out, headers)

    def _log(self, events: list[se.Event]) -> list[dict[str, Any]]:
        with self._events_lock:
            out = []
            for e in events:
                out.append(self.codec.event(self.event_seq, e))
                self.event_seq += 1
            self.events.extend(out)
            return out

    def tick(self) -> list[dict[str, Any]]:
        """The host's clock tick: advance the engine to now and log the events."""
        with self._events_lock:
            return self._log(self._command(self.locked.advance, None))

    # -- service ----------------------------------------------------------------------

    @route("GET", "/health")
    def health(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        lk = self.locked
        return Reply(200, {"ok": True, "durability": lk.durability, "now": self.codec.iso(lk.now),
                           "journal_seq": lk.journal_seq, "sessions": len(lk.sessions())})

    @route("GET", "/state-hash")
    def state_hash(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        """Debug: the whole state's hash (O(state)), to show a refused request changed nothing."""
        with self.locked.lock:
            return Reply(200, {"state_hash": self.locked.state_hash(),
                               "journal_seq": self.locked.journal_seq,
                               "commands": self.locked.commands})

    # -- sessions (the host's schedule) ---------------------------------------------------

    @route("GET", "/sessions")
    def list_sessions(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        with self.locked.lock:
            return Reply(200, {"sessions": [self._session(s) for s in self.locked.sessions()]})

    def _session(self, name: str) -> dict[str, Any]:
        lk = self.locked
        return self.codec.session(lk.session(name), lk.session_counts(name),
                                  len(lk.session_waitlist(name)))

    @route("GET", "/sessions/{}")
    def get_session(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        with self.locked.lock:
            return Reply(200, self._session(params[0]))

    @route("POST", "/sessions")
    def add_session(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        """Admin: add a session (hospital, department, doctor, tier, starts_at, capacity, fee, ...)."""
        name = body.get("id", required=True)
        kw: dict[str, Any] = {k: body.get(k, required=True)
                              for k in ("hospital", "department", "doctor", "capacity", "fee")}
        kw["starts_at"] = self.codec.time(body.get("starts_at", required=True), "starts_at")
        for k in ("tier", "slot_minutes", "quotas"):
            if k in body.data:
                kw[k] = body.get(k)
        release = body.get("release")
        if release is not None:
            if not isinstance(release, dict):
                raise errors.InvalidType("release must be an object of channel -> time")
            kw["release"] = {ch: self.codec.time(t, f"release[{ch!r}]") for ch, t in release.items()}
        now = self._at(body)
        body.done()
        self._command(lambda t: self.locked.add_session(name, now=t, **kw), now)
        return Reply(201, self._session(name))

    @route("POST", "/sessions/{}/suspend")
    def suspend(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        """Admin: 停诊.  The affected bookings' events are in ``GET /events`` after a tick."""
        now = self._at(body)
        body.done()
        n = self._command(lambda t: self.locked.suspend(params[0], now=t), now)
        return Reply(200, {"session": params[0], "bookings_affected": n})

    @route("POST", "/sessions/{}/capacity")
    def add_capacity(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        """Admin: 加号, ``{"n": 2, "channel": "app"}``."""
        n, channel, now = body.get("n", required=True), body.get("channel"), self._at(body)
        body.done()
        cap = self._command(lambda t: self.locked.add_capacity(params[0], n, channel=channel, now=t),
                            now)
        return Reply(200, {"session": params[0], "capacity": cap})

    # -- bookings ---------------------------------------------------------------------

    @route("POST", "/bookings")
    def book(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        account = body.get("account", required=True)
        patient = body.get("patient", required=True)
        session = body.get("session", required=True)
        channel, hold, now = body.get("channel"), body.get("hold", False), self._at(body)
        body.done()
        r = self._command(lambda t: self.locked.book(account, patient, session, channel,
                                                     now=t, hold=hold), now)
        return self._result(r, 202 if Status(r.status) == Status.QUEUED else 201)

    @route("GET", "/bookings/{}")
    def get_booking(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        return Reply(200, self.codec.booking(self.locked.booking(_int_param(params[0], "booking"))))

    def _lifecycle(self, params: list[str], body: Body, what: str) -> Reply:
        b = _int_param(params[0], "booking")
        account: Any = body.get("account", required=True) if what != "check_in" else None
        now = self._at(body)
        body.done()
        lk = self.locked
        if what == "cancel":
            r = self._command(lambda t: lk.cancel(b, account=account, now=t), now)
        elif what == "confirm":
            r = self._command(lambda t: lk.confirm(b, account=account, now=t), now)
        else:
            r = self._command(lambda t: lk.check_in(b, now=t), now)
        return self._result(r, 200)

    @route("POST", "/bookings/{}/cancel")
    def cancel(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        return self._lifecycle(params, body, "cancel")

    @route("POST", "/bookings/{}/confirm")
    def confirm(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        return self._lifecycle(params, body, "confirm")

    @route("POST", "/bookings/{}/check-in")
    def check_in(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        return self._lifecycle(params, body, "check_in")

    # -- fair release tickets -----------------------------------------------------------

    @route("GET", "/tickets/{}")
    def get_ticket(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        k = _int_param(params[0], "ticket")
        with self.locked.lock:
            return Reply(200, self.codec.ticket(self.locked.ticket(k), self.locked.position(k)))

    @route("POST", "/tickets/{}/cancel")
    def cancel_ticket(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        k = _int_param(params[0], "ticket")
        account, now = body.get("account", required=True), self._at(body)
        body.done()
        r = self._command(lambda t: self.locked.cancel_ticket(k, account=account, now=t), now)
        return self._result(r, 200)

    @route("POST", "/advance")
    def advance(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        """The host's clock tick: runs timers (cohort draws, expiries) and returns the events."""
        now = self._at(body)
        body.done()
        with self._events_lock:  # events are logged in the order the engine drained them
            events = self._command(self.locked.advance, now)
            return Reply(200, {"now": self.codec.iso(self.locked.now), "events": self._log(events)})

    @route("GET", "/events")
    def get_events(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        """Events drained so far (by ``/advance`` or the ticker), ``?after=SEQ``; not durable."""
        after = _int_param(q.get("after", ["-1"])[-1], "after")
        with self._events_lock:
            return Reply(200, {"events": [e for e in self.events if e["seq"] > after]})

    # -- waitlist -----------------------------------------------------------------------

    @route("POST", "/waitlist")
    def join_waitlist(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        account = body.get("account", required=True)
        patient = body.get("patient", required=True)
        sessions = body.get("sessions", required=True)
        deadline = self.codec.time(body.get("deadline", required=True), "deadline")
        channel, priority, now = body.get("channel"), body.get("priority"), self._at(body)
        body.done()
        r = self._command(lambda t: self.locked.join_waitlist(
            account, patient, sessions, deadline=deadline, channel=channel, priority=priority,
            now=t), now)
        return self._result(r, 202)

    @route("GET", "/waitlist/{}")
    def get_waitlist(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        return Reply(200, self.codec.waitlist(self.locked.waitlist(_int_param(params[0], "request"))))

    @route("POST", "/waitlist/{}/cancel")
    def cancel_waitlist(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        k = _int_param(params[0], "request")
        account, now = body.get("account", required=True), self._at(body)
        body.done()
        r = self._command(lambda t: self.locked.cancel_waitlist(k, account=account, now=t), now)
        return self._result(r, 200)

    # -- credit -------------------------------------------------------------------------

    @route("GET", "/credit/{}")
    def get_credit(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        """The patient's money; with ``?fee=N`` also whether N fen could be covered now."""
        patient = params[0]
        credit = self.locked.credit
        with self.locked.lock:
            st = credit.statement(patient)
            out: dict[str, Any] = {"patient": st.patient, "balance": st.balance,
                                   "balance_held": st.balance_held, "line": self.codec.line(st.line),
                                   "owed": st.owed, "available": st.available,
                                   "bills": len(st.bills)}
            if "fee" in q:
                out["check"] = self.codec.cover(credit.check(patient, _int_param(q["fee"][-1], "fee")))
        return Reply(200, out)

    @route("POST", "/credit/{}/top-up")
    def top_up(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        fen, now = body.get("fen", required=True), self._at(body)
        body.done()
        balance = self._command(lambda t: self.locked.credit.top_up(params[0], fen, now=t), now)
        return Reply(200, {"patient": params[0], "balance": balance})

    @route("POST", "/credit/{}/line")
    def open_line(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        kind, limit, now = body.get("kind", "outpatient"), body.get("limit"), self._at(body)
        body.done()
        line = self._command(lambda t: self.locked.credit.open_line(
            params[0], kind=kind, limit=limit, now=t), now)
        return Reply(201, {"patient": params[0], "line": self.codec.line(line)})

    @route("POST", "/credit/{}/repay")
    def repay(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        fen, now = body.get("fen", required=True), self._at(body)
        body.done()
        bills = self._command(lambda t: self.locked.credit.repay(params[0], fen, now=t), now)
        return Reply(200, {"patient": params[0], "bills_paid": [b.id for b in bills]})

    # -- risk (admin) -------------------------------------------------------------------

    def _party(self, body: Body) -> dict[str, Any]:
        return {"account": body.get("account"), "patient": body.get("patient")}

    @route("POST", "/risk/flag")
    def flag(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        """Admin: put an account or patient in the slow lane until ``until``."""
        who = self._party(body)
        until = self.codec.time(body.get("until", required=True), "until")
        note, now = body.get("note"), self._at(body)
        body.done()
        self._command(lambda t: self.locked.flag(**who, until=until, note=note, now=t), now)
        return Reply(200, {"flagged": True})

    @route("POST", "/risk/block")
    def block(self, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
        """Admin: refuse every request of an account or patient until ``until``."""
        who = self._party(body)
        until = self.codec.time(body.get("until", required=True), "until")
        now = self._at(body)
        body.done()
        self._command(lambda t: self.locked.block(**who, until=until, now=t), now)
        return Reply(200, {"blocked": True})


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _error(name: str, message: str) -> dict[str, str]:
    return {"error": name, "message": message}


# -- FHIR (slotengine.fhir, when installed) ------------------------------------------------


def _fhir() -> Any:
    """The ``slotengine.fhir`` module, or a 501 if this slotengine has none."""
    try:
        fhir = importlib.import_module("slotengine.fhir")
    except ImportError:
        raise HTTPError(501, "NotImplemented", "this slotengine has no FHIR module") from None
    return fhir


def _fhir_sessions(q: dict[str, list[str]]) -> list[str] | None:
    """``?session=S1&session=S2`` (or ``?session=S1,S2``): those sessions; absent: all."""
    if "session" not in q:
        return None
    return [s for v in q["session"] for s in v.split(",") if s]


def _fhir_call(app: App, fn: Callable[[], Any]) -> Any:
    """Run a FHIR function under the engine's lock, mapping its errors."""
    fhir = _fhir()
    try:
        with app.locked.lock:
            return fn()
    except fhir.FHIRError as exc:
        raise HTTPError(400, "FHIRError", str(exc), extra={
            "resource": getattr(exc, "resource", None),
            "field": getattr(exc, "field", None)}) from None


@route("GET", "/fhir/Schedule")
def fhir_schedule(self: App, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
    """A FHIR Bundle of Schedule and Slot resources."""
    engine, sessions = self.locked.engine, _fhir_sessions(q)
    return Reply(200, _fhir_call(self, lambda: _fhir().schedule_bundle(engine, sessions)))


@route("GET", "/fhir/Appointment")
def fhir_appointments(self: App, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
    """A FHIR Bundle of Appointment resources."""
    engine, sessions = self.locked.engine, _fhir_sessions(q)
    return Reply(200, _fhir_call(self, lambda: _fhir().appointment_bundle(engine, sessions)))


@route("GET", "/fhir/Bundle")
def fhir_export(self: App, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
    """Everything as one FHIR Bundle (Schedules, Slots, Appointments)."""
    engine, sessions = self.locked.engine, _fhir_sessions(q)
    return Reply(200, _fhir_call(self, lambda: _fhir().export_bundle(engine, sessions)))


@route("POST", "/fhir/Bundle")
def fhir_import(self: App, params: list[str], q: dict[str, list[str]], body: Body) -> Reply:
    """Import a FHIR Bundle (the whole body; ``?now=`` for an explicit time).

    Returns what ``fhir.import_bundle`` returns (the ids it added).  The
    import runs on the engine itself under the facade's lock, so the journal
    is committed here before the reply, as the facade would.
    """
    bundle = body.data
    body.used.update(bundle)
    now: int | None = None
    if "now" in q:
        text = q["now"][-1]
        now = self.codec.time(int(text) if re.fullmatch(r"[0-9]{1,19}", text) else text, "now")
    fhir, lk = _fhir(), self.locked

    def run(t: int) -> Any:
        try:  # under the lock, and synced before the reply like any command
            return lk.call(fhir.import_bundle, bundle, now=t)
        except fhir.FHIRError as exc:
            raise HTTPError(400, "FHIRError", str(exc), extra={
                "resource": getattr(exc, "resource", None),
                "field": getattr(exc, "field", None)}) from None

    added = self._command(run, now)
    return Reply(201, {"added": list(added)})


for _name, _fn in (("fhir_schedule", fhir_schedule), ("fhir_appointments", fhir_appointments),
                   ("fhir_export", fhir_export), ("fhir_import", fhir_import)):
    setattr(App, _name, _fn)


# -- HTTP -------------------------------------------------------------------------------


class RequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; every reply is JSON with a Content-Length."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, a keep-alive client's
    # delayed ACK would hold the body back ~40 ms.
    disable_nagle_algorithm = True
    server: SlotService

    def _serve(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return self._send(Reply(411, _error("LengthRequired", "send a Content-Length, not chunks")))
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            return self._send(Reply(413 if length > MAX_BODY else 400,
                                    _error("BadContentLength", f"Content-Length {length} refused")))
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        try:
            try:  # http.server reads the request line as latin-1; a raw UTF-8 path is UTF-8
                path = url.path.encode("latin-1").decode("utf-8")
            except UnicodeError:
                return self._send(Reply(400, _error("InvalidArgument", "the path is not UTF-8")))
            reply = self.server.app.dispatch(method, path, url.query, raw)
        except Exception as exc:  # noqa: BLE001  (a bug, not bad input: still a JSON answer)
            reply = Reply(500, _error(type(exc).__name__, str(exc)))
            self.log_error("internal error on %s %s: %r", method, self.path, exc)
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        data = json.dumps(reply.body, ensure_ascii=False).encode("utf-8")
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_OPTIONS(self) -> None:
        self._serve("OPTIONS")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (a bad request line, a long URI), as JSON too."""
        self.close_connection = True
        try:
            name = "".join(w.capitalize() for w in HTTPStatus(code).name.split("_"))
        except ValueError:
            name = "HTTPError"
        self._send(Reply(code, _error(name, message or explain or name)))

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)


class SlotService(ThreadingHTTPServer):
    """The HTTP server, its App, and (optionally) a ticker thread calling ``advance``."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default 5 resets connections when a crowd arrives at once

    def __init__(self, locked: se.LockedEngine, host: str, port: int, *, tick: float = 0.0,
                 quiet: bool = False) -> None:
        self.locked = locked
        self.app = App(locked)
        self.quiet = quiet
        self._stop = threading.Event()
        super().__init__((host, port), RequestHandler)
        self._ticker: threading.Thread | None = None
        if tick > 0:
            self._ticker = threading.Thread(target=self._tick, args=(tick,), name="ticker",
                                            daemon=True)
            self._ticker.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.app.tick()
            except errors.SlotEngineError as exc:  # a closed or failed journal: stop ticking
                print(f"ticker stopped: {exc!r}", file=sys.stderr)
                return

    def close(self) -> None:
        """Stop the ticker, close the socket, then close the engine (a snapshot)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self.server_close()
        self.locked.close()


def make_server(directory: str | Path, host: str = "127.0.0.1", port: int = 0, *,
                policy: se.Policy | None = None, seed: int | None = None,
                durability: str = "fsync", segment_bytes: int = 64 << 20, tick: float = 0.0,
                demo_sessions: bool = False, quiet: bool = False) -> SlotService:
    """Open (or recover) the engine in ``directory`` and bind the service; call ``serve_forever``.

    ``policy`` and ``seed`` are recorded by a new directory and must match (or
    be None) on reopening.  ``tick`` > 0 starts a thread calling ``advance``
    every ``tick`` seconds at the wall clock.
    """
    locked = se.LockedEngine(se.Engine.open(directory, policy, seed, durability=durability,
                                            segment_bytes=segment_bytes))
    try:
        if demo_sessions and not locked.sessions():
            _add_demo_sessions(locked)
        return SlotService(locked, host, port, tick=tick, quiet=quiet)
    except BaseException:
        locked.close()
        raise


def _add_demo_sessions(locked: se.LockedEngine) -> None:
    """Three sessions tomorrow (policy's local day), the app quota released two minutes from now."""
    now = max(_wall_ms(), locked.now)
    tz = timezone(timedelta(minutes=locked.policy.utc_offset_minutes))
    day = (se.from_ms(now, tz) + timedelta(days=1)).replace(hour=0, minute=0, second=0,
                                                             microsecond=0)
    release = {"app": now + 2 * se.MINUTE, "referral": now}
    for sid, dept, doctor, tier, hour, cap, fee in (
            ("CARD-AM", "心内科", "Dr Li", "expert", 8, 12, 6000),
            ("CARD-PM", "心内科", "Dr Li", "expert", 13, 12, 6000),
            ("DERM-AM", "皮肤科", "Dr Wang", "general", 8, 30, 1500)):
        locked.add_session(sid, hospital="协和", department=dept, doctor=doctor, tier=tier,
                           starts_at=day + timedelta(hours=hour), slot_minutes=8,
                           capacity=cap, fee=fee, quotas={"referral": 2, "app": cap - 2},
                           release=release, now=now)


def _policy(text: str | None) -> se.Policy | None:
    """``--policy '{"require_cover": true}'``: Policy fields as JSON (lists become tuples)."""
    if text is None:
        return None
    data = json.loads(text)

    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list) else v
    return se.Policy(**{k: tup(v) for k, v in data.items()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="slotengine HTTP service (examples/service)")
    ap.add_argument("--dir", required=True, help="engine directory (created or recovered)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080, help="0: any free port (printed)")
    ap.add_argument("--seed", type=int, default=None, help="a new directory's seed (default 0)")
    ap.add_argument("--policy", default=None, help="a new directory's Policy fields as JSON")
    ap.add_argument("--durability", default="fsync", choices=("fsync", "grouped", "process"))
    ap.add_argument("--segment-mb", type=int, default=64,
                    help="journal segment size (preallocated when made)")
    ap.add_argument("--tick", type=float, default=1.0,
                    help="call advance() every TICK seconds at the wall clock (0: never)")
    ap.add_argument("--demo-sessions", action="store_true",
                    help="add three demo sessions if the directory has none")
    ap.add_argument("--quiet", action="store_true", help="no access log")
    args = ap.parse_args(argv)
    server = make_server(args.dir, args.host, args.port, policy=_policy(args.policy),
                         seed=args.seed, durability=args.durability,
                         segment_bytes=args.segment_mb << 20, tick=args.tick,
                         demo_sessions=args.demo_sessions, quiet=args.quiet)

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on http://{args.host}:{server.port} "
          f"(durability {server.locked.durability}, {len(server.locked.sessions())} sessions)",
          flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
