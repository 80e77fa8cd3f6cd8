"""The web service example (examples/service/server.py), driven over real HTTP.

Each server is a subprocess on 127.0.0.1 (``--port 0``, the port read from its
first line) over its own engine directory; requests go through
``http.client``.  Every request carries an explicit ``now`` so the runs are
deterministic; the engine clock is shared by the tests of one server, so
each test works in its own 90-day stretch of engine time (``World``).
"""
from __future__ import annotations

import http.client
import importlib.util
import itertools
import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import pytest

from slotengine import Reason

SERVICE = Path(__file__).resolve().parent.parent / "examples" / "service"


def _load_service() -> Any:
    """examples/service/server.py as a module (for its tables and make_server)."""
    spec = importlib.util.spec_from_file_location("slotengine_service_example",
                                                  SERVICE / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


service = _load_service()

CST = timezone(timedelta(hours=8))
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
BASE = int(datetime(2030, 1, 1, tzinfo=CST).timestamp() * 1000)  # a local midnight
#: Main servers: the "many patients per account" flag off (so ACCOUNT_PATIENT_LIMIT is
#: reachable directly) and a short waitlist (WAITLIST_FULL).
POLICY = {"patients_flag": [0, 30], "waitlist_per_session": 2}
COVER_POLICY = {"patients_flag": [0, 30], "require_cover": True, "bar_first_visit_expert": True}


# -- a server subprocess and a client -------------------------------------------------


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: Any

    def __repr__(self) -> str:
        return f"Resp({self.status}, {self.body!r})"


class Server:
    """``examples/service/server.py`` in a subprocess, on a given directory."""

    def __init__(self, directory: Path, policy: dict | None = None, seed: int = 7,
                 durability: str = "fsync") -> None:
        self.directory = directory
        self.args = ["--seed", str(seed), "--durability", durability, "--segment-mb", "4"]
        if policy is not None:
            self.args += ["--policy", json.dumps(policy)]
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.starts = 0

    def start(self) -> Server:
        self.starts += 1
        with open(self.directory.parent / f"{self.directory.name}-{self.starts}.log", "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(SERVICE / "server.py"), "--dir", str(self.directory),
                 "--host", "127.0.0.1", "--port", "0", "--tick", "0", "--quiet", *self.args],
                stdout=subprocess.PIPE, stderr=log, text=True, encoding="utf-8")
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("listening on http://127.0.0.1:"):
            self.kill()
            raise AssertionError(f"server did not start: {line!r}\n{self.log()}")
        self.port = int(line.split(":")[2].split()[0])
        return self

    def log(self) -> str:
        return (self.directory.parent / f"{self.directory.name}-{self.starts}.log").read_text()

    def kill(self) -> None:
        """SIGKILL: no close, no snapshot, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)
            if self.proc.stdout:
                self.proc.stdout.close()

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        code = self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()
        return code

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             conn: http.client.HTTPConnection | None = None) -> Resp:
        own = conn is None
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = raw if raw is not None else (None if body is None else
                                            json.dumps(body, ensure_ascii=False).encode())
        try:
            c.request(method, path, body=data,
                      headers={"Content-Type": "application/json"} if data is not None else {})
            r = c.getresponse()
            payload = r.read()
            assert r.getheader("Content-Type") == "application/json; charset=utf-8", payload
            return Resp(r.status, {k.lower(): v for k, v in r.getheaders()},
                        json.loads(payload.decode("utf-8")))
        finally:
            if own:
                c.close()


def _start(tmp: Path, name: str, **kw: Any) -> Iterator[Server]:
    srv = Server(tmp / name, **kw).start()
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture(scope="module")
def main_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _start(tmp_path_factory.mktemp("svc"), "main", policy=POLICY)


@pytest.fixture(scope="module")
def cover_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _start(tmp_path_factory.mktemp("svc"), "cover", policy=COVER_POLICY)


_worlds = itertools.count()


class World:
    """One test's own 90 days of engine time and own ids on a shared server.

    Day 0 is the world's first local midnight.  Sessions are on day 10 (08:00
    or 13:00 local, 4 hours long); the app quota is released on day 3 at
    08:30 (``R``); ``open`` is an hour after that, outside the release cohort.
    """

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.n = next(_worlds)
        self.p = f"w{self.n}-"
        self.day0 = BASE + 90 * DAY * self.n
        self.R = self.day0 + 3 * DAY + 8 * HOUR + 30 * MIN
        self.open = self.R + HOUR
        self.names = itertools.count()

    def day(self, d: int, hour: float = 0) -> int:
        return self.day0 + d * DAY + int(hour * HOUR)

    def iso(self, ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, CST).isoformat()

    def session(self, dept: str = "D", capacity: int = 5, *, day: int = 10, hour: int = 8,
                tier: str = "general", fee: int = 5000, quotas: dict | None = None,
                release: dict | None = None) -> str:
        sid = f"{self.p}S{next(self.names)}"
        body = {"id": sid, "hospital": "协和", "department": dept, "doctor": f"Dr {dept}",
                "tier": tier, "starts_at": self.iso(self.day(day, hour)), "capacity": capacity,
                "fee": fee, "release": release or {"app": self.R}}  # now: the service default
        if quotas is not None:
            body["quotas"] = quotas
        r = self.srv.call("POST", "/sessions", body)
        assert r.status == 201, r
        return sid

    def book(self, patient: str, session: str, *, account: str | None = None,
             now: int | None = None, **kw: Any) -> Resp:
        body = {"account": self.p + (account or "A-" + patient), "patient": self.p + patient,
                "session": session, "now": self.open if now is None else now, **kw}
        return self.srv.call("POST", "/bookings", body)

    def post(self, path: str, body: dict | None = None, *, now: int | None = None) -> Resp:
        body = dict(body or {})
        body.setdefault("now", self.open if now is None else now)
        return self.srv.call("POST", path, body)

    def join(self, patient: str, sessions: list[str], *, now: int | None = None) -> Resp:
        return self.post("/waitlist", {"account": self.p + "A-" + patient,
                                       "patient": self.p + patient, "sessions": sessions,
                                       "deadline": self.day(9)}, now=now)

    def full(self, capacity: int = 1, **kw: Any) -> str:
        """A session whose every slot is booked."""
        s = self.session(capacity=capacity, **kw)
        for i in range(capacity):
            assert self.book(f"filler{next(self.names)}", s).status == 201
        return s


def _hash(srv: Server) -> str:
    r = srv.call("GET", "/state-hash")
    assert r.status == 200
    return r.body["state_hash"]


# -- the status table ---------------------------------------------------------------------


def test_every_reason_has_a_status_in_code_and_readme() -> None:
    assert set(service.REASON_STATUS) == set(Reason) - {Reason.NONE}
    assert all(400 <= s < 500 for s in service.REASON_STATUS.values())
    assert service.REASON_STATUS[Reason.THROTTLED] == 429
    readme = (SERVICE / "README.md").read_text(encoding="utf-8")
    for reason, status in service.REASON_STATUS.items():
        assert f"| `{reason.name}` | {int(reason)} | {status} |" in readme, reason


# -- every reason a command can give, over HTTP -------------------------------------------


def _suspended(w: World) -> Resp:
    s = w.session()
    assert w.post(f"/sessions/{s}/suspend").status == 200
    return w.book("p", s)


def _closed(w: World) -> Resp:
    return w.book("p", w.session(), now=w.day(10, 12) + MIN)


def _not_released(w: World) -> Resp:
    return w.book("p", w.session(), now=w.R - HOUR)


def _banned(w: World) -> Resp:
    s1, s2 = w.session("D1"), w.session("D2", day=11)
    assert w.book("p", s1).status == 201
    events = w.post("/advance", now=w.day(10, 12) + MIN).body["events"]
    assert {"NO_SHOW", "PATIENT_BANNED"} <= {e["kind"] for e in events}
    return w.book("p", s2, now=w.day(10, 12) + 2 * MIN)


def _duplicate_session(w: World) -> Resp:
    s = w.session()
    assert w.book("p", s).status == 201
    return w.book("p", s, account="other")


def _duplicate_department_day(w: World) -> Resp:
    s1, s2 = w.session("D", hour=8), w.session("D", hour=13)
    assert w.book("p", s1).status == 201
    return w.book("p", s2)


def _patient_limit(w: World) -> Resp:
    sessions = [w.session(f"D{i}") for i in range(3)]
    assert [w.book("p", s).status for s in sessions[:2]] == [201, 201]
    return w.book("p", sessions[2])


def _account_patient_limit(w: World) -> Resp:
    s = w.session(capacity=10)
    for i in range(5):
        assert w.book(f"p{i}", s, account="A").status == 201
    return w.book("p5", s, account="A")


def _first_visit_expert(w: World) -> Resp:
    s = w.session(tier="expert")
    assert w.post(f"/credit/{quote(w.p + 'p')}/top-up", {"fen": 10_000}).status == 200
    return w.book("p", s)


def _duplicate_ticket(w: World) -> Resp:
    s = w.session()
    assert w.book("p", s, now=w.R + 10_000).status == 202
    return w.book("p", s, now=w.R + 10_000)


def _duplicate_waitlist(w: World) -> Resp:
    s = w.full()
    assert w.join("p", [s]).status == 202
    return w.join("p", [s])


def _waitlist_patient_cap(w: World) -> Resp:
    full = [w.full() for _ in range(4)]
    assert [w.join("p", [s]).status for s in full[:3]] == [202] * 3
    return w.join("p", [full[3]])


def _blocked(w: World) -> Resp:
    assert w.post("/risk/block", {"account": w.p + "A", "until": w.day(60)}).status == 200
    return w.book("p", w.session(), account="A")


def _throttled(w: World) -> Resp:
    assert w.post("/risk/flag", {"account": w.p + "A", "until": w.day(60),
                                 "note": "标记"}).status == 200
    sessions = [w.session(f"D{i}") for i in range(3)]
    assert [w.book(f"p{i}", s, account="A").status for i, s in enumerate(sessions[:2])] == [202] * 2
    return w.book("p2", sessions[2], account="A")


def _full(w: World) -> Resp:
    return w.book("p", w.full())


def _quota_exhausted(w: World) -> Resp:
    s = w.session(capacity=2, quotas={"app": 1, "referral": 1},
                  release={"app": w.R, "referral": w.R})
    assert w.book("p0", s).status == 201
    return w.book("p1", s)


def _slots_left(w: World) -> Resp:
    return w.join("p", [w.session()])


def _waitlist_full(w: World) -> Resp:
    s = w.full()
    assert [w.join(f"p{i}", [s]).status for i in range(2)] == [202, 202]
    return w.join("p2", [s])


def _no_cover(w: World) -> Resp:
    return w.book("p", w.session())


def _credit_suspended(w: World) -> Resp:
    s1, s2 = w.session("D1"), w.session("D2", day=60)
    patient = quote(w.p + "p")
    line = w.post(f"/credit/{patient}/line", {"kind": "outpatient"}, now=w.day0)
    assert line.status == 201 and line.body["line"]["state"] == "OPEN"
    r = w.book("p", s1)
    assert r.status == 201
    assert w.post(f"/bookings/{r.body['booking']}/check-in", now=w.day(10, 8)).body["status"] == "ARRIVED"
    events = w.post("/advance", now=w.day(41)).body["events"]
    assert {"BILL_OVERDUE", "CREDIT_SUSPENDED"} <= {e["kind"] for e in events}
    return w.book("p", s2, now=w.day(41))


def _booked(w: World, **kw: Any) -> tuple[str, int]:
    s = w.session()
    r = w.book("p", s, **kw)
    assert r.status == 201, r
    return s, r.body["booking"]


def _not_owner(w: World) -> Resp:
    s, b = _booked(w)
    assert w.book("q", s, account="B").status == 201  # account B exists
    return w.post(f"/bookings/{b}/cancel", {"account": w.p + "B"})


def _not_active(w: World) -> Resp:
    _, b = _booked(w)
    assert w.post(f"/bookings/{b}/cancel", {"account": w.p + "A-p"}).body["status"] == "CANCELLED"
    return w.post(f"/bookings/{b}/cancel", {"account": w.p + "A-p"})


def _cancel_cutoff(w: World) -> Resp:
    _, b = _booked(w)
    return w.post(f"/bookings/{b}/cancel", {"account": w.p + "A-p"}, now=w.day(9, 16) + MIN)


def _hold_expired(w: World) -> Resp:
    _, b = _booked(w, hold=True)
    return w.post(f"/bookings/{b}/confirm", {"account": w.p + "A-p"}, now=w.open + 11 * MIN)


def _not_held(w: World) -> Resp:
    _, b = _booked(w)
    return w.post(f"/bookings/{b}/confirm", {"account": w.p + "A-p"})


def _not_confirmed(w: World) -> Resp:
    _, b = _booked(w, hold=True)
    return w.post(f"/bookings/{b}/check-in")


SCENARIOS: dict[Reason, Callable[[World], Resp]] = {
    Reason.SESSION_SUSPENDED: _suspended,
    Reason.SESSION_CLOSED: _closed,
    Reason.NOT_RELEASED: _not_released,
    Reason.PATIENT_BANNED: _banned,
    Reason.DUPLICATE_SESSION: _duplicate_session,
    Reason.DUPLICATE_DEPARTMENT_DAY: _duplicate_department_day,
    Reason.PATIENT_LIMIT: _patient_limit,
    Reason.ACCOUNT_PATIENT_LIMIT: _account_patient_limit,
    Reason.FIRST_VISIT_EXPERT: _first_visit_expert,
    Reason.DUPLICATE_TICKET: _duplicate_ticket,
    Reason.DUPLICATE_WAITLIST: _duplicate_waitlist,
    Reason.WAITLIST_PATIENT_CAP: _waitlist_patient_cap,
    Reason.BLOCKED: _blocked,
    Reason.THROTTLED: _throttled,
    Reason.FULL: _full,
    Reason.QUOTA_EXHAUSTED: _quota_exhausted,
    Reason.SLOTS_LEFT: _slots_left,
    Reason.WAITLIST_FULL: _waitlist_full,
    Reason.NO_COVER: _no_cover,
    Reason.CREDIT_SUSPENDED: _credit_suspended,
    Reason.NOT_OWNER: _not_owner,
    Reason.NOT_ACTIVE: _not_active,
    Reason.CANCEL_CUTOFF: _cancel_cutoff,
    Reason.HOLD_EXPIRED: _hold_expired,
    Reason.NOT_HELD: _not_held,
    Reason.NOT_CONFIRMED: _not_confirmed,
}
#: Never a command's result: FLAGGED is why a waitlist fill skipped a request,
#: SLOT_RELEASED a no-show's end reason (on the booking, not a reply).
NOT_A_RESULT = {Reason.FLAGGED, Reason.SLOT_RELEASED}
ON_COVER_SERVER = {Reason.NO_COVER, Reason.CREDIT_SUSPENDED, Reason.FIRST_VISIT_EXPERT}


def test_every_reachable_reason_has_a_scenario() -> None:
    assert set(SCENARIOS) | NOT_A_RESULT == set(Reason) - {Reason.NONE}


@pytest.mark.parametrize("reason", list(SCENARIOS), ids=lambda r: r.name)
def test_reason_maps_to_its_status(reason: Reason, request: pytest.FixtureRequest) -> None:
    srv: Server = request.getfixturevalue("cover_srv" if reason in ON_COVER_SERVER else "main_srv")
    r = SCENARIOS[reason](World(srv))
    assert r.status == service.REASON_STATUS[reason], r
    assert r.body["status"] == "REJECTED"
    assert (r.body["reason"], r.body["reason_code"]) == (reason.name, int(reason))
    assert r.body["message"] == reason.message and reason.name in r.body["explain"]
    if reason == Reason.THROTTLED:
        assert r.body["retry_after_ms"] > 0
        assert int(r.headers["retry-after"]) == -(-r.body["retry_after_ms"] // 1000)
    else:
        assert "retry-after" not in r.headers


# -- the happy paths ------------------------------------------------------------------------


def test_book_hold_confirm_cancel_check_in(main_srv: Server) -> None:
    w = World(main_srv)
    s = w.session(capacity=3)
    r = w.book("张三", s)
    assert r.status == 201 and r.body["status"] == "BOOKED" and r.body["slot"] == 1
    assert r.body["window"] == [w.iso(w.day(10, 8)).replace("+08:00", ".000+08:00"),
                                w.iso(w.day(10, 8) + 10 * MIN).replace("+08:00", ".000+08:00")]
    got = main_srv.call("GET", f"/bookings/{r.body['booking']}")
    assert got.status == 200
    assert (got.body["session"], got.body["slot"], got.body["patient"], got.body["state"]) == \
        (s, 1, w.p + "张三", "BOOKED")
    h = w.book("李四", s, hold=True)
    assert h.status == 201 and h.body["status"] == "HELD" and h.body["slot"] == 2
    c = w.post(f"/bookings/{h.body['booking']}/confirm", {"account": w.p + "A-李四"})
    assert c.status == 200 and c.body["status"] == "BOOKED"
    more = w.post(f"/sessions/{quote(s)}/capacity", {"n": 2}, now=w.day(8))
    assert more.status == 200 and more.body["capacity"] == 5
    x = w.post(f"/bookings/{r.body['booking']}/cancel", {"account": w.p + "A-张三"}, now=w.day(8))
    assert x.status == 200 and x.body["status"] == "CANCELLED"
    a = w.post(f"/bookings/{h.body['booking']}/check-in", now=w.day(10, 8))
    assert a.status == 200 and a.body["status"] == "ARRIVED"
    info = main_srv.call("GET", f"/sessions/{quote(s)}")
    assert info.status == 200 and info.body["capacity"] == 5
    assert (info.body["counts"]["arrived"], info.body["counts"]["booked"]) == (1, 0)
    assert s in [x["id"] for x in main_srv.call("GET", "/sessions").body["sessions"]]


def test_release_ticket_and_advance(main_srv: Server) -> None:
    w = World(main_srv)
    s = w.session(capacity=2)
    tickets = []
    for i in range(3):
        r = w.book(f"p{i}", s, now=w.R + 10_000)
        assert r.status == 202 and r.body["status"] == "QUEUED", r
        tickets.append(r.body["ticket"])
    t = main_srv.call("GET", f"/tickets/{tickets[0]}")
    assert t.status == 200 and t.body["state"] == "QUEUED" and t.body["position"]["ahead"] is None
    x = w.post(f"/tickets/{tickets[2]}/cancel", {"account": w.p + "A-p2"}, now=w.R + 20_000)
    assert x.status == 200 and x.body["status"] == "CANCELLED"
    adv = w.post("/advance", now=w.R + 61_000)
    assert adv.status == 200
    mine = [e for e in adv.body["events"] if e["session"] == s]  # other tests' events too
    kinds = Counter(e["kind"] for e in mine)
    assert kinds == {"COHORT_DRAWN": 1, "TICKET_SERVED": 2}
    served = [main_srv.call("GET", f"/tickets/{k}").body for k in tickets[:2]]
    assert {t["state"] for t in served} == {"SERVED"}
    slots = sorted(main_srv.call("GET", f"/bookings/{t['booking']}").body["slot"] for t in served)
    assert slots == [1, 2]
    first = adv.body["events"][0]["seq"]
    assert main_srv.call("GET", f"/events?after={first}").body["events"][:len(mine) - 1] == \
        adv.body["events"][1:len(mine)]


def test_waitlist_fill_and_cancel(main_srv: Server) -> None:
    w = World(main_srv)
    s = w.session(capacity=1)
    b = w.book("holder", s).body["booking"]
    j = w.join("waiter", [s])
    assert j.status == 202 and j.body["status"] == "WAITLISTED"
    req = j.body["request"]
    j2 = w.join("other", [s])
    assert main_srv.call("GET", f"/waitlist/{req}").body["state"] == "OPEN"
    assert w.post(f"/bookings/{b}/cancel", {"account": w.p + "A-holder"}).status == 200
    info = main_srv.call("GET", f"/waitlist/{req}").body
    assert info["state"] == "FILLED" and info["session"] == s
    assert main_srv.call("GET", f"/bookings/{info['booking']}").body["patient"] == w.p + "waiter"
    c = w.post(f"/waitlist/{j2.body['request']}/cancel", {"account": w.p + "A-other"})
    assert c.status == 200 and c.body["status"] == "CANCELLED"


def test_credit_endpoints(cover_srv: Server) -> None:
    w = World(cover_srv)
    patient = w.p + "患者/1"  # a slash inside an id, percent-encoded in the path
    path = f"/credit/{quote(patient, safe='')}"
    assert cover_srv.call("GET", path).status == 404  # never seen
    top = w.post(path + "/top-up", {"fen": 8000}, now=w.day0)
    assert top.status == 200 and top.body["balance"] == 8000
    ok = cover_srv.call("GET", path + "?fee=5000").body
    assert ok["check"] == {"ok": True, "reason": "NONE", "from_balance": 5000, "from_credit": 0}
    no = cover_srv.call("GET", path + "?fee=9000").body["check"]
    assert (no["ok"], no["reason"]) == (False, "NO_COVER")
    r = w.book("患者/1", w.session(fee=5000))
    assert r.status == 201
    st = cover_srv.call("GET", path).body
    assert (st["balance"], st["balance_held"], st["available"]) == (8000, 5000, 3000)


# -- bad input: 4xx with a JSON error, and nothing changes ------------------------------------


def _bad_cases(w: World, s: str, b: int) -> list[tuple[str, str, Any, int, str]]:
    ok = {"account": w.p + "A", "patient": w.p + "P", "session": s, "now": w.open}
    pat = quote(w.p + "P")
    return [
        ("POST", "/bookings", b"{bad", 400, "MalformedJSON"),
        ("POST", "/bookings", b'{"now": NaN}', 400, "MalformedJSON"),
        ("POST", "/bookings", b"\xff\xfe", 400, "MalformedJSON"),
        ("POST", "/bookings", b"[1, 2]", 400, "InvalidType"),
        ("POST", "/bookings", {"account": w.p + "A", "session": s}, 400, "InvalidArgument"),
        ("POST", "/bookings", {**ok, "sesion": s}, 400, "InvalidArgument"),
        ("POST", "/bookings", {**ok, "account": 5}, 400, "InvalidType"),
        ("POST", "/bookings", {**ok, "account": ""}, 400, "InvalidArgument"),
        ("POST", "/bookings", {**ok, "patient": "  "}, 400, "InvalidArgument"),
        ("POST", "/bookings", {**ok, "patient": "a\u0000b"}, 400, "InvalidArgument"),
        ("POST", "/bookings", {**ok, "patient": "长" * 300}, 400, "InvalidArgument"),
        ("POST", "/bookings", {**ok, "session": "没有这个"}, 404, "UnknownSession"),
        ("POST", "/bookings", {**ok, "channel": "pigeon"}, 400, "UnknownChannel"),
        ("POST", "/bookings", {**ok, "hold": "yes"}, 400, "InvalidType"),
        ("POST", "/bookings", {**ok, "now": "2030-01-01T00:00:00"}, 400, "InvalidType"),
        ("POST", "/bookings", {**ok, "now": "tomorrow"}, 400, "InvalidArgument"),
        ("POST", "/bookings", {**ok, "now": 1.5}, 400, "InvalidType"),
        ("POST", "/bookings", {**ok, "now": True}, 400, "InvalidType"),
        ("POST", "/bookings", {**ok, "now": -1}, 400, "InvalidArgument"),
        ("POST", "/bookings", {**ok, "now": w.day0 - DAY}, 400, "TimeWentBackwards"),
        ("POST", "/advance", {"now": w.day0 - DAY}, 400, "TimeWentBackwards"),
        ("GET", "/bookings/abc", None, 400, "InvalidType"),
        ("GET", "/bookings/99999999", None, 404, "UnknownBooking"),
        ("GET", "/bookings/-1", None, 404, "UnknownBooking"),
        ("GET", "/bookings/99999999999999999999999", None, 400, "InvalidType"),
        ("POST", f"/bookings/{b}/cancel", {"account": w.p + "nobody", "now": w.open},
         404, "UnknownAccount"),
        ("POST", f"/bookings/{b}/cancel", {"now": w.open}, 400, "InvalidArgument"),
        ("GET", "/tickets/123456789", None, 404, "UnknownTicket"),
        ("GET", "/waitlist/123456789", None, 404, "UnknownRequest"),
        ("POST", "/waitlist", {"account": "a", "patient": "p", "sessions": s,
                               "deadline": w.day(9), "now": w.open}, 400, "InvalidType"),
        ("POST", "/waitlist", {"account": "a", "patient": "p", "sessions": [s, s],
                               "deadline": w.day(9), "now": w.open}, 400, "InvalidArgument"),
        ("GET", f"/sessions/{quote('无此出诊')}", None, 404, "UnknownSession"),
        ("GET", "/sessions/%FF", None, 400, "InvalidArgument"),
        ("GET", "/credit/nobody-at-all", None, 404, "UnknownPatient"),
        ("GET", f"/credit/{pat}?fee=-5", None, 400, "InvalidArgument"),
        ("GET", f"/credit/{pat}?fee=1.5", None, 400, "InvalidType"),
        ("POST", f"/credit/{pat}/top-up", {"fen": -100, "now": w.open}, 400, "InvalidArgument"),
        ("POST", f"/credit/{pat}/top-up", {"fen": 0, "now": w.open}, 400, "InvalidArgument"),
        ("POST", f"/credit/{pat}/top-up", {"fen": 1.5, "now": w.open}, 400, "InvalidType"),
        ("POST", f"/credit/{pat}/top-up", {"fen": "100", "now": w.open}, 400, "InvalidType"),
        ("POST", f"/credit/{pat}/line", {"kind": "gold", "now": w.open}, 400, "InvalidArgument"),
        ("POST", "/sessions", {"id": s, "hospital": "H", "department": "D", "doctor": "Dr",
                               "starts_at": w.day(10, 8), "capacity": 1, "fee": 1,
                               "now": w.open}, 409, "DuplicateId"),
        ("POST", "/sessions", {"id": w.p + "new", "hospital": "H", "department": "D",
                               "doctor": "Dr", "starts_at": w.day(10, 8), "capacity": 0,
                               "fee": 1, "now": w.open}, 400, "InvalidArgument"),
        ("POST", "/risk/block", {"until": w.day(20), "now": w.open}, 400, "InvalidArgument"),
        ("POST", "/nowhere", {}, 404, "NotFound"),
        ("GET", "/", None, 404, "NotFound"),
        ("DELETE", "/bookings", None, 405, "MethodNotAllowed"),
        ("PUT", "/sessions", {}, 405, "MethodNotAllowed"),
        ("GET", "/bookings", None, 405, "MethodNotAllowed"),
        ("POST", f"/bookings/{b}", {}, 405, "MethodNotAllowed"),
    ]


def test_bad_input_is_4xx_json_and_changes_nothing(main_srv: Server) -> None:
    w = World(main_srv)
    s = w.session()
    b = w.book("P", s).body["booking"]
    before_hash = _hash(main_srv)
    before_sessions = main_srv.call("GET", "/sessions").body
    for method, path, body, status, error in _bad_cases(w, s, b):
        raw = body if isinstance(body, bytes) else None
        r = main_srv.call(method, path, None if raw else body, raw=raw)
        assert (r.status, r.body.get("error")) == (status, error), (method, path, body, r)
        assert isinstance(r.body["message"], str) and r.body["message"]
        if status == 405:
            assert method not in r.headers["allow"]
    assert _hash(main_srv) == before_hash
    assert main_srv.call("GET", "/sessions").body == before_sessions


def test_http_level_errors_are_json(main_srv: Server) -> None:
    c = http.client.HTTPConnection("127.0.0.1", main_srv.port, timeout=10)
    try:
        c.putrequest("POST", "/bookings")
        c.putheader("Content-Length", "nope")
        c.endheaders()
        r = c.getresponse()
        assert r.status == 400 and json.loads(r.read())["error"] == "BadContentLength"
    finally:
        c.close()
    c = http.client.HTTPConnection("127.0.0.1", main_srv.port, timeout=10)
    try:
        c.request("GET", "/" + "x" * 70_000)  # past http.server's request-line limit
        r = c.getresponse()
        assert r.status == 414 and json.loads(r.read())["error"] == "RequestUriTooLong"
    finally:
        c.close()
    # keep-alive: several requests on one connection
    c = http.client.HTTPConnection("127.0.0.1", main_srv.port, timeout=10)
    try:
        for _ in range(3):
            assert main_srv.call("GET", "/health", conn=c).status == 200
    finally:
        c.close()


@pytest.mark.parametrize("path", ["/fhir/Schedule", "/fhir/Appointment", "/fhir/Bundle"])
def test_fhir_exports(main_srv: Server, path: str) -> None:
    pytest.importorskip("slotengine.fhir")
    w = World(main_srv)
    s = w.session()
    assert w.book("p", s).status == 201
    r = main_srv.call("GET", f"{path}?session={quote(s)}")
    assert r.status == 200 and r.body["resourceType"] == "Bundle"


def test_fhir_import_round_trip(tmp_path: Path, main_srv: Server) -> None:
    pytest.importorskip("slotengine.fhir")
    w = World(main_srv)
    s = w.session(capacity=2)  # unbooked: an import takes free (and blocked) slots only
    bundle = main_srv.call("GET", f"/fhir/Schedule?session={quote(s)}").body
    with _running(Server(tmp_path / "fhir", policy=POLICY)) as other:
        r = other.call("POST", f"/fhir/Bundle?now={w.open}", bundle)
        assert r.status == 201 and r.body == {"added": [s]}, r
        got = other.call("GET", f"/sessions/{quote(s)}")
        assert got.status == 200 and got.body["capacity"] == 2
        bad = other.call("POST", f"/fhir/Bundle?now={w.open}", {"resourceType": "Patient"})
        assert bad.status == 400 and bad.body["error"] == "FHIRError"


# -- concurrency, durability ----------------------------------------------------------------


class _running:
    """``with _running(Server(...)) as srv``: started, and killed on the way out."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv

    def __enter__(self) -> Server:
        return self.srv.start()

    def __exit__(self, *exc: object) -> None:
        self.srv.kill()


def _fire(srv: Server, jobs: list[list[dict]], *, out: list[tuple[dict, Resp]] | None = None,
          killed: bool = False) -> list[tuple[dict, Resp]]:
    """One thread per job list, each on its own keep-alive connection: (request, reply) pairs.

    Replies are appended to ``out`` as they come.  With ``killed``, a thread ends at its
    first connection error (the server is being killed).
    """
    out = [] if out is None else out
    lock = threading.Lock()
    go = threading.Barrier(len(jobs))

    def run(job: list[dict]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        go.wait()
        try:
            for body in job:
                try:
                    r = srv.call("POST", body.pop("_path", "/bookings"), body, conn=conn)
                except (OSError, http.client.HTTPException):
                    if not killed:
                        raise
                    return
                with lock:
                    out.append((body, r))
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def _live_slots(srv: Server) -> dict[int, tuple[str, int, str]]:
    """Every live booking (id -> session, slot, patient), walking ids until a 404."""
    live = {}
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        for b in itertools.count():
            r = srv.call("GET", f"/bookings/{b}", conn=conn)
            if r.status == 404:
                break
            if r.body["state"] in ("HELD", "BOOKED", "ARRIVED"):
                live[b] = (r.body["session"], r.body["slot"], r.body["patient"])
    finally:
        conn.close()
    return live


def _no_double_booking(srv: Server, sessions: list[str]) -> dict[int, tuple[str, int, str]]:
    live = _live_slots(srv)
    held = Counter((s, k) for s, k, _ in live.values())
    assert max(held.values(), default=1) == 1, "a slot is held twice"
    for s in sessions:
        info = srv.call("GET", f"/sessions/{quote(s)}").body
        n = sum(1 for x, _, _ in live.values() if x == s)
        assert info["counts"]["booked"] + info["counts"]["held"] == n <= info["capacity"]
    return live


def test_concurrent_clients_during_a_release(tmp_path: Path) -> None:
    with _running(Server(tmp_path / "rush", policy=POLICY)) as srv:
        w = World(srv)
        sessions = [w.session(f"D{i}", capacity=5) for i in range(3)]
        inside = w.R + 10_000  # in the cohort window, past the early-request seconds
        # 12 clients, 6 patients each, every patient asks for one of 3 sessions (one asks twice)
        jobs = []
        for c in range(12):
            job = []
            for i in range(6):
                p = f"c{c}p{i}"
                job.append({"account": w.p + "A" + p, "patient": w.p + p,
                            "session": sessions[(c + i) % 3], "now": inside})
            job.append(dict(job[0]))  # a duplicate: DUPLICATE_TICKET
            jobs.append(job)
        replies = _fire(srv, jobs)
        assert len(replies) == 12 * 7
        statuses = Counter((r.status, r.body["status"], r.body["reason"]) for _, r in replies)
        assert statuses == {(202, "QUEUED", "NONE"): 72, (409, "REJECTED", "DUPLICATE_TICKET"): 12}
        tickets = [r.body["ticket"] for _, r in replies if r.status == 202]
        assert len(set(tickets)) == 72
        # the window closes: every cohort is drawn and served
        adv = w.post("/advance", now=w.R + 61_000).body["events"]
        kinds = Counter(e["kind"] for e in adv)
        assert (kinds["COHORT_DRAWN"], kinds["TICKET_SERVED"], kinds["TICKET_FAILED"]) == (3, 15, 57)
        ends = Counter(srv.call("GET", f"/tickets/{k}").body["state"] for k in tickets)
        assert ends == {"SERVED": 15, "FAILED": 57}
        live = _no_double_booking(srv, sessions)
        assert len(live) == 15
        # after the window, first come first served, 16 clients racing for 3 new slots
        more = w.session("E", capacity=3)
        jobs = [[{"account": w.p + f"B{c}", "patient": w.p + f"b{c}", "session": more,
                  "now": w.R + 120_000}] for c in range(16)]
        got = Counter(r.status for _, r in _fire(srv, jobs))
        assert got == {201: 3, 409: 13}
        assert sorted(s for x, s, _ in _no_double_booking(srv, [*sessions, more]).values()
                      if x == more) == [1, 2, 3]


def _snapshot(srv: Server, sessions: list[str]) -> tuple[str, list[dict]]:
    return _hash(srv), [srv.call("GET", f"/sessions/{quote(s)}").body for s in sessions]


@pytest.mark.parametrize("durability", ["fsync", "process"])
def test_acknowledged_bookings_survive_sigkill(tmp_path: Path, durability: str) -> None:
    srv = Server(tmp_path / "dur", policy=POLICY, durability=durability)
    acked: dict[int, tuple[str, int, str]] = {}
    accounts: dict[int, str] = {}
    try:
        srv.start()
        w = World(srv)
        sessions = [w.session(f"D{i}", capacity=40) for i in range(4)]

        def jobs(tag: str, n: int, per: int) -> list[list[dict]]:
            return [[{"account": w.p + f"{tag}A{c}-{i}", "patient": w.p + f"{tag}{c}-{i}",
                      "session": sessions[(c + i) % 4], "now": w.open} for i in range(per)]
                    for c in range(n)]

        def ack(replies: list[tuple[dict, Resp]]) -> None:
            for body, r in replies:
                if r.status == 201:
                    acked[r.body["booking"]] = (body["session"], r.body["slot"], body["patient"])
                    accounts[r.body["booking"]] = body["account"]

        # 1: quiet, then SIGKILL: every acknowledged booking, the counts and the hash survive
        ack(_fire(srv, jobs("q", 8, 5)))
        assert len(acked) == 40
        cancelled = next(iter(acked))
        assert w.post(f"/bookings/{cancelled}/cancel",
                      {"account": accounts[cancelled]}).body["status"] == "CANCELLED"
        del acked[cancelled]
        before = _snapshot(srv, sessions)
        srv.kill()
        srv.start()
        assert _snapshot(srv, sessions) == before
        for b, (s, slot, patient) in acked.items():
            got = srv.call("GET", f"/bookings/{b}").body
            assert (got["session"], got["slot"], got["patient"], got["state"]) == \
                (s, slot, patient, "BOOKED")
        assert srv.call("GET", f"/bookings/{cancelled}").body["state"] == "CANCELLED"

        # 2: SIGKILL while 8 clients are booking: whatever was acknowledged is there
        replies: list[tuple[dict, Resp]] = []
        runner = threading.Thread(target=_fire, args=(srv, jobs("k", 8, 40)),
                                  kwargs={"out": replies, "killed": True})
        runner.start()
        deadline = time.monotonic() + 10
        while len(replies) < 30 and time.monotonic() < deadline:
            time.sleep(0.001)
        srv.kill()
        runner.join(30)
        assert 30 <= len(replies) < 320  # killed mid-flight
        ack(list(replies))
        srv.start()
        live = _no_double_booking(srv, sessions)
        for b, (s, slot, patient) in acked.items():
            assert live.get(b) == (s, slot, patient), b
        assert srv.call("GET", "/health").body["durability"] == durability
    finally:
        srv.kill()


def test_sigterm_closes_cleanly_and_reopens(tmp_path: Path) -> None:
    srv = Server(tmp_path / "term", policy=POLICY)
    try:
        srv.start()
        w = World(srv)
        s = w.session()
        b = w.book("p", s).body["booking"]
        h = _hash(srv)
        assert srv.terminate() == 0
        assert any(p.name.startswith("snapshot-") for p in (tmp_path / "term").iterdir())
        srv.start()
        assert _hash(srv) == h and srv.call("GET", f"/bookings/{b}").body["slot"] == 1
    finally:
        srv.kill()


def test_in_process_server_and_defaulted_now(tmp_path: Path) -> None:
    """make_server() in this process; a request without "now" runs at the wall clock."""
    srv = service.make_server(tmp_path / "inproc", port=0, policy=None, seed=1,
                              durability="process", tick=0.02, quiet=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        c = Server(tmp_path / "unused")
        c.port = srv.port
        before = time.time() * 1000
        r = c.call("POST", "/advance", {})
        assert r.status == 200
        now = datetime.fromisoformat(r.body["now"]).timestamp() * 1000
        assert before - 1 <= now <= time.time() * 1000 + 1
        assert c.call("GET", "/health").body["durability"] == "process"
        ticked = srv.locked.now  # the ticker advances the engine clock on its own
        deadline = time.monotonic() + 5
        while srv.locked.now == ticked and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.locked.now > ticked
        # A path of raw (not percent-encoded) UTF-8 works like its encoded form, unless its
        # bytes read as latin-1 hold what http.server takes for whitespace (张: \xa0): then
        # it is a JSON 400 as well.
        for name, status in (("李四", 404), ("张三", 400)):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
                sock.sendall(f"GET /credit/{name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                             .encode())
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            head, _, payload = data.partition(b"\r\n\r\n")
            assert head.startswith(f"HTTP/1.1 {status}".encode()), head
            error = json.loads(payload)
            assert status == 400 or name in error["message"]
    finally:
        srv.shutdown()
        srv.close()
        t.join(5)


def test_fuzzed_requests_are_never_a_500(tmp_path: Path) -> None:
    """Seeded random bodies and path ids on every route: always JSON, never a 5xx."""
    import random

    rnd = random.Random(20261124)
    values: list[Any] = [None, True, False, 0, -1, 1, 7, 1.5, 2**70, -(2**70), "", " ", "x",
                         "张三", "a\u0000", "app", "referral", "2030-01-05T08:30:00+08:00",
                         "2030-01-05T08:30:00", [], ["x"], [1, 2], {}, {"app": 1}, {"app": "x"},
                         {"nope": 1}, [[]], "S", BASE, BASE + 5 * DAY]
    keys = ["account", "patient", "session", "sessions", "channel", "hold", "now", "deadline",
            "priority", "fen", "kind", "limit", "n", "until", "note", "id", "hospital",
            "department", "doctor", "starts_at", "capacity", "fee", "quotas", "release", "tier",
            "slot_minutes", "bogus"]
    ids = ["0", "1", "-1", "abc", "%FF", "%E5%BC%A0", "S", "99999999999999999999", "%20"]
    paths = [pattern.pattern.strip("^$").replace("([^/]+)", "{}") for _, pattern, _ in service.ROUTES]
    with _running(Server(tmp_path / "fuzz", policy=POLICY)) as srv:
        w = World(srv)
        w.session()
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        try:
            for _ in range(400):
                path = rnd.choice(paths)
                while "{}" in path:
                    path = path.replace("{}", rnd.choice(ids), 1)
                method = rnd.choice(["POST", "POST", "GET", "PUT"])
                body = {k: rnd.choice(values) for k in rnd.sample(keys, rnd.randint(0, 6))}
                r = srv.call(method, path, rnd.choice([body, body, rnd.choice(values)]), conn=conn)
                assert r.status < 500, (method, path, body, r)
                assert isinstance(r.body, dict) and ("error" in r.body or "status" in r.body
                                                     or r.status == 200 or r.status == 201), r
        finally:
            conn.close()


def test_client_demo_runs() -> None:
    proc = subprocess.run([sys.executable, str(SERVICE / "client_demo.py")], capture_output=True,
                          text=True, encoding="utf-8", timeout=60)
    assert proc.returncode == 0, proc.stderr
    for line in ("POST /advance (the window closed)", '"state": "FILLED"',
                 '409  {"status": "REJECTED", "reason": "FULL"', '{"error": "TimeWentBackwards"}'):
        assert line in proc.stdout, line
