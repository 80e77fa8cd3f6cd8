"""Drive the web service example over HTTP: a release, a waitlist, a rejection.

Starts ``server.py`` in this process (``make_server`` on a temporary
directory, any free port), then talks to it with ``urllib.request`` only, as
any client would.  Every request carries ``now``, so the run is the same
every time.

    python examples/service/client_demo.py
"""
from __future__ import annotations

import json
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from server import make_server

DAY = "2026-12-01"


def call(base: str, method: str, path: str, body: dict[str, Any] | None = None
         ) -> tuple[int, dict[str, Any]]:
    """One JSON request; (status, body) for a 4xx as well."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def show(label: str, status: int, body: dict[str, Any], *keys: str) -> None:
    picked = {k: body[k] for k in keys} if keys else body
    print(f"  {label:<42} {status}  {json.dumps(picked, ensure_ascii=False)}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = make_server(Path(tmp) / "engine", port=0, seed=7, durability="fsync",
                             segment_bytes=4 << 20, tick=0, quiet=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{server.port}"
        try:
            run(base)
        finally:
            server.shutdown()
            server.close()


def run(base: str) -> None:
    print(f"service on {base} (durability fsync: a 2xx means the journal record is on disk)\n")
    status, s = call(base, "POST", "/sessions", {
        "id": "CARD-AM", "hospital": "协和", "department": "心内科", "doctor": "Dr Li",
        "tier": "expert", "starts_at": f"{DAY}T08:00:00+08:00", "slot_minutes": 9,
        "capacity": 3, "fee": 6000, "release": {"app": "2026-11-24T08:30:00+08:00"},
        "now": "2026-11-20T09:00:00+08:00"})
    show("POST /sessions", status, s, "id", "capacity", "counts")

    print("\nThe 08:30 release: five patients inside the window get tickets")
    tickets = []
    for i, name in enumerate(["张三", "李四", "王五", "赵六", "孙七"]):
        status, r = call(base, "POST", "/bookings", {
            "account": f"A{i}", "patient": name, "session": "CARD-AM",
            "now": f"2026-11-24T08:30:{10 + i:02d}+08:00"})
        show(f"POST /bookings {name}", status, r, "status", "ticket")
        tickets.append(r["ticket"])
    status, r = call(base, "POST", "/advance", {"now": "2026-11-24T08:31:00+08:00"})
    show("POST /advance (the window closed)", status,
         {"events": [e["kind"] for e in r["events"]]})
    for k in tickets:
        status, t = call(base, "GET", f"/tickets/{k}")
        show(f"GET /tickets/{k} ({t['patient']})", status, t, "state", "draw", "booking")

    print("\nAfter the window: first come, first served; the session is full")
    status, r = call(base, "POST", "/bookings", {"account": "A9", "patient": "周八",
                                                 "session": "CARD-AM",
                                                 "now": "2026-11-24T09:00:00+08:00"})
    show("POST /bookings 周八", status, r, "status", "reason", "reason_code")
    status, r = call(base, "POST", "/waitlist", {
        "account": "A9", "patient": "周八", "sessions": ["CARD-AM"],
        "deadline": "2026-11-30T16:00:00+08:00", "now": "2026-11-24T09:00:00+08:00"})
    show("POST /waitlist 周八", status, r, "status", "request")
    served = [call(base, "GET", f"/tickets/{k}")[1] for k in tickets]
    first = next(t for t in served if t["state"] == "SERVED")
    status, r = call(base, "POST", f"/bookings/{first['booking']}/cancel",
                     {"account": first["account"], "now": "2026-11-25T10:00:00+08:00"})
    show(f"POST /bookings/{first['booking']}/cancel ({first['patient']})", status, r, "status", "slot")
    status, w = call(base, "GET", "/waitlist/0")
    show("GET /waitlist/0", status, w, "state", "booking")
    status, s = call(base, "GET", "/sessions/CARD-AM")
    show("GET /sessions/CARD-AM", status, s["counts"], "free", "booked")

    print("\nBad input is a 4xx with a JSON error, and changes nothing")
    status, r = call(base, "POST", "/bookings", {"account": "A1", "patient": "李四",
                                                 "session": "CARD-AM",
                                                 "now": "2026-11-01T00:00:00+08:00"})
    show("POST /bookings (now in the past)", status, r, "error")
    status, r = call(base, "GET", "/bookings/999")
    show("GET /bookings/999", status, r, "error")


if __name__ == "__main__":
    main()
