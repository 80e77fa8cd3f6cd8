"""Embedding slotengine in a hospital platform: one host class owning one Engine.

``BookingService`` loads a clinic day's schedule (channel quotas, release
times), passes each channel's requests to the engine, turns results into
messages, moves the engine clock from the host's clock and turns events into
notifications. The story: Dr Li's clinic on 1 December, a referral booked four
weeks ahead, the app and phone release on 24 November, then a cancellation
and a quota roll-over that go to the waitlist. ``python examples/host_embedding.py``
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import slotengine as se

CST = timezone(timedelta(hours=8))  # the engine's calendar day is UTC+8 by default


def at(day: int, hour: int, minute: int = 0, second: float = 0, month: int = 11) -> datetime:
    # an aware datetime in 2026, UTC+8 (the engine refuses naive ones)
    return datetime(2026, month, day, hour, minute, tzinfo=CST) + timedelta(seconds=second)


def hhmm(ms: int) -> str:  # engine times come back as int ms since the epoch
    return se.from_ms(ms, CST).strftime("%d %b %H:%M")


# A day's schedule as the hospital system sends it. Quotas split each session's
# capacity by channel and must sum to it; each channel opens at its own time.
SCHEDULE: list[dict[str, Any]] = [
    dict(session="LI-1201-AM", hospital="协和", department="心内科", doctor="Dr Li",
         tier="expert", starts_at=at(1, 8, month=12), slot_minutes=15, capacity=6, fee=6000,
         quotas={"referral": 2, "phone": 1, "app": 3},
         release={"referral": at(3, 8, 30), "phone": at(24, 8, 30), "app": at(24, 8, 30)}),
    # No quotas: all to the public (app) channel; no release: the Policy's calendar (7 days ahead).
    dict(session="WANG-1201-PM", hospital="协和", department="眼科", doctor="Dr Wang",
         tier="general", starts_at=at(1, 13, 30, month=12), slot_minutes=10, capacity=20, fee=1000),
]


class BookingService:
    """The platform's booking back end. One Engine, one writer: in a threaded
    server wrap it in ``se.LockedEngine``; in production open it durably with
    ``se.Engine.open(directory)`` (the rest of this class stays the same)."""

    def __init__(self, seed: int) -> None:
        # The seed drives the release lottery: same seed and requests, same draw.
        self.engine = se.Engine(policy=se.Policy(), seed=seed)
        self.outbox: list[str] = []  # notifications for the SMS / push gateway
        self.appointments: dict[str, int] = {}  # patient -> booking (one session in this story)

    def load_schedule(self, rows: list[dict]) -> None:
        for row in rows:
            self.engine.add_session(**row)

    def request(self, account: str, patient: str, session: str, channel: str, now: datetime) -> str:
        """One booking request from the app, the phone line or a referral system."""
        r = self.engine.book(account, patient, session, channel, now=now)
        if r.status == se.Status.BOOKED:
            self.appointments[patient] = r.booking
        self.notify(self.engine.events())  # drain after every command, not only in tick()
        return f"{patient} via {channel}: {self.message(r, session, channel)}"

    def join_waitlist(self, account: str, patient: str, session: str, deadline: datetime,
                      now: datetime) -> str:
        r = self.engine.join_waitlist(account, patient, [session], channel="app",
                                      deadline=deadline, now=now)
        self.notify(self.engine.events())
        return f"{patient}: {self.message(r, session, 'app')}"

    def cancel(self, patient: str, account: str, now: datetime) -> str:
        r = self.engine.cancel(self.appointments[patient], account=account, now=now)
        if r.status == se.Status.CANCELLED:
            del self.appointments[patient]
        self.notify(self.engine.events())  # the waitlist fill happened inside the cancel
        return f"{patient} cancels: {r.status.name} {r.reason.name}"

    def message(self, r, session: str, channel: str) -> str:
        """A Result is a value, not an exception: every outcome becomes a message."""
        if r.status == se.Status.BOOKED:
            return f"booked, slot {r.slot}, arrive {hhmm(r.window[0])}"
        if r.status == se.Status.QUEUED:
            return f"in the release draw (ticket {r.ticket}); the result follows within a minute"
        if r.status == se.Status.WAITLISTED:
            return f"on the waitlist (request {r.request})"
        if r.reason == se.Reason.NOT_RELEASED:
            opens = self.engine.session(session).release[channel]
            return f"not open yet: {channel} booking opens {hhmm(opens)}"
        if r.reason == se.Reason.THROTTLED:
            return f"busy, try again in {r.retry_after // 1000} s"
        return f"sorry: {r.reason.message} ({r.reason.name}, code {int(r.reason)})"

    def tick(self, now: datetime) -> None:
        """Called from the host's clock. Timers also run at the start of every command, so
        outcomes do not depend on how often this runs: it is how events reach patients."""
        self.notify(self.engine.advance(now))

    def notify(self, events: list[se.Event]) -> None:
        K = se.EventKind
        for e in events:
            if e.kind in (K.TICKET_SERVED, K.WAITLIST_FILLED):
                assert e.patient is not None and e.booking is not None  # set for these kinds
                self.appointments[e.patient] = e.booking  # events carry the booking id
                how = "in the draw" if e.kind == K.TICKET_SERVED else "from the waitlist"
                self.outbox.append(f"to {e.patient}: you got slot {e.slot} of {e.session} {how}")
            elif e.kind == K.TICKET_FAILED:
                self.outbox.append(f"to {e.patient}: no slot this time ({e.reason.name}); "
                                   "you can join the waitlist")
            else:  # COHORT_DRAWN, QUOTA_ROLLED, WAITLIST_SKIPPED, ...: staff log, not patients
                why = f" ({e.reason.name})" if e.reason != se.Reason.NONE else ""
                self.outbox.append(f"staff log: {e.kind.name} {e.session}{why}")

    def flush(self) -> list[str]:
        """Hand the notifications to the gateway (here: print them)."""
        sent, self.outbox = self.outbox, []
        for line in sent:
            print("   ", line)
        return sent


def main() -> None:
    svc = BookingService(seed=2026)
    svc.load_schedule(SCHEDULE)
    for info in (svc.engine.session(row["session"]) for row in SCHEDULE):
        quotas = ", ".join(f"{ch} {n} from {hhmm(info.release[ch])}"
                           for ch, n in info.quota_left.items() if n)
        print(f"loaded {info.id}: {quotas}")
    S = "LI-1201-AM"

    print("\n3 Nov: the referral channel opens four weeks ahead; the app does not yet")
    print(" ", svc.request("CLINIC-7", "周奶奶", S, "referral", at(3, 9)))
    print(" ", svc.request("U1", "王五", S, "app", at(10, 20)))
    assert list(svc.appointments) == ["周奶奶"]

    print("\n24 Nov 08:30: app and phone open; requests in the first minute form a cohort")
    rush = [("U1", "王五", "app"), ("U2", "李四", "app"), ("U3", "赵六", "app"),
            ("U4", "钱七", "app"), ("U5", "孙八", "app"), ("TEL", "刘大爷", "phone")]
    for i, (account, patient, channel) in enumerate(rush):
        print(" ", svc.request(account, patient, S, channel, at(24, 8, 30, 0.2 + i * 0.1)))
    svc.tick(at(24, 8, 31))  # the window has closed: the seeded lottery orders the cohort
    sent = svc.flush()
    assert sum("in the draw" in x for x in sent) == 4  # 3 app slots + the 1 phone slot
    losers = [(a, p) for a, p, _ in rush if p not in svc.appointments]
    assert len(losers) == 2

    print("\nThe two who lost join the waitlist (a referral slot is free, but not for the app)")
    # Joining runs a fill pass at once: the free slot is in the referral quota, so each
    # request is passed over (WAITLIST_SKIPPED, QUOTA_EXHAUSTED) and keeps its place.
    for i, (account, patient) in enumerate(losers):
        print(" ", svc.join_waitlist(account, patient, S, deadline=at(30, 16),
                                     now=at(24, 8, 40 + i)))
    svc.flush()

    print("\n26 Nov: a winner cancels; the slot goes to the first waiting request in the same call")
    account, patient = next((a, p) for a, p, ch in rush if ch == "app" and p in svc.appointments)
    print(" ", svc.cancel(patient, account, at(26, 10)))
    assert any(f"to {losers[0][1]}: you got" in x for x in svc.flush())

    print("\n30 Nov 08:00: unused referral quota rolls into the public pool, so to the waitlist")
    svc.tick(at(30, 9))
    sent = svc.flush()
    assert f"staff log: QUOTA_ROLLED {S}" in sent
    assert any(f"to {losers[1][1]}: you got" in x for x in sent)

    assert len(svc.appointments) == 6 == svc.engine.session_counts(S).booked
    print("\nFor the support desk, explain() says why, in words:")
    print(svc.engine.explain(svc.appointments[losers[1][1]]))
    svc.engine._check_invariants()


if __name__ == "__main__":
    main()
