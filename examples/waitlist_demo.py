"""Waitlist backfill (候补) vs open re-booking, for one cardiology department.

Dr Wang's three expert mornings and Dr Chen's three afternoons are fully
booked a week ahead.  Two scalper accounts hold six of Dr Wang's slots in
bought identities; their trick is the hand-off: cancel a slot and let the
paying buyer book it 200 ms later.  Forty genuine patients (eight with a
community referral) wait for a slot in one to three of Dr Wang's sessions.

With the default Policy a freed slot goes to the waitlist inside the cancel
itself, so every hand-off finds the session full: the slot is already a
waiting patient's (referral patients first, then by arrival).  A flagged
waiting patient is passed over with a reason and keeps their place.  Then Dr
Chen cancels a clinic (停诊): each booked patient is moved to the nearest of
his sessions with room, or put at the front of the waitlist.  The same
hand-offs are replayed with the waitlist and the re-release delay switched
off, where every one of them succeeds.

    make demo        # or: python examples/waitlist_demo.py

Deterministic (seeded), public API only (``import slotengine as se``).
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from statistics import median

import numpy as np

import slotengine as se

SEED = 20261207
CST = timezone(timedelta(hours=8))
WEEK = datetime(2026, 12, 7, tzinfo=CST)  # Monday
START = se.to_ms(datetime(2026, 12, 1, 9, tzinfo=CST))  # bookings open already; we begin here
SECOND, MINUTE, HOUR = 1_000, 60_000, 3_600_000
CAPACITY = 10

# name -> (doctor, day offset, hour, capacity)
SESSIONS = {
    "Wang/Mon/AM": ("Dr Wang", 0, 8, CAPACITY),
    "Wang/Tue/AM": ("Dr Wang", 1, 8, CAPACITY),
    "Wang/Wed/AM": ("Dr Wang", 2, 8, CAPACITY),
    "Chen/Mon/PM": ("Dr Chen", 0, 14, CAPACITY),
    "Chen/Wed/PM": ("Dr Chen", 2, 14, CAPACITY),
    "Chen/Fri/PM": ("Dr Chen", 4, 14, 12),
}
WANG = [s for s in SESSIONS if s.startswith("Wang")]
SCALPERS = {"SCALP-1": ("X-1", "X-2", "X-3"), "SCALP-2": ("Y-1", "Y-2", "Y-3")}

WAITLIST = se.Policy()  # the defaults: waitlist first, freed slots hidden 30-300 s
OPEN = se.Policy(rerelease_seconds=(0, 0), rebook_seconds=0)  # no waitlist defence at all


def hms(ms: int) -> str:
    return se.from_ms(ms, CST).strftime("%a %H:%M:%S")


def setup(policy: se.Policy) -> tuple[se.Engine, dict[str, tuple[str, int]]]:
    """Six sessions, booked full (Fri half full); returns the engine and the scalpers' bookings."""
    e = se.Engine(policy=policy, seed=SEED)
    for name, (doctor, day, hour, cap) in SESSIONS.items():
        e.add_session(name, hospital="Union", department="Cardiology", doctor=doctor,
                      tier="expert", starts_at=WEEK + timedelta(days=day, hours=hour),
                      slot_minutes=12, capacity=cap, fee=6000, now=START,
                      release={"app": START - se.DAY})  # released a day before we begin
    t = START
    held: dict[str, tuple[str, int]] = {}  # scalper identity -> (session, booking)
    n = 0
    for name, (_, _, _, cap) in SESSIONS.items():
        k = 0
        if name in WANG:  # two of each Wang session's slots are the scalpers'
            for account, patient in [(a, p) for a, ps in SCALPERS.items() for p in ps][WANG.index(name)::3]:
                r = e.book(account, patient, name, now=t)
                held[patient] = (name, r.booking)
                t += 150
                k += 1
        for _ in range(k, cap if not name.endswith("Fri/PM") else cap // 2):
            n += 1
            r = e.book(f"G-{n:03d}", f"G-{n:03d}", name, now=t)
            assert r.status == se.Status.BOOKED, r
            t += 150
    e.advance(t)
    return e, held


def hand_offs(e: se.Engine, held: dict[str, tuple[str, int]], t0: int) -> list[tuple[str, se.Result]]:
    """Each scalper cancels a held slot and the buyer books the same session 200 ms later."""
    out = []
    for i, (patient, (session, booking)) in enumerate(sorted(held.items())):
        t = t0 + i * 7 * MINUTE
        account = next(a for a, ps in SCALPERS.items() if patient in ps)
        assert e.cancel(booking, account=account, now=t).status == se.Status.CANCELLED
        out.append((session, e.book(f"BUYER-{i}", f"B-{i}", session, now=t + 200)))
    return out


rng = np.random.default_rng(SEED)
e, held = setup(WAITLIST)
print("Waitlist first (default Policy)")
print(f"  {len(SESSIONS)} sessions of Union/Cardiology, "
      f"{sum(e.session_counts(s).booked for s in SESSIONS)} slots booked; "
      f"{len(held)} held by scalpers {sorted(SCALPERS)}")

# -- 40 genuine patients join the waitlist of one to three of Dr Wang's mornings --
t = START + HOUR
requests = []
for j in range(40):
    k = int(rng.integers(1, 4))
    cands = [WANG[x] for x in sorted(rng.choice(3, size=k, replace=False))]
    channel = "referral" if j % 5 == 4 else "app"
    r = e.join_waitlist(f"W-{j:02d}", f"W-{j:02d}", cands, channel=channel,
                        deadline=WEEK - timedelta(hours=8), now=t)
    assert r.status == se.Status.WAITLISTED, r
    requests.append(r.request)
    t += 30 * SECOND
r = e.join_waitlist("N-001", "N-001", ["Chen/Fri/PM"], deadline=WEEK, now=t)
print(f"  40 patients joined the waitlist (8 by referral); joining Chen/Fri/PM, which still "
      f"has room: {r.status.name} {r.reason.name}")
print("  queue of Wang/Mon/AM (request ids in fill order):", e.session_waitlist("Wang/Mon/AM")[:12],
      "...")
e.events()

# -- the host flags one waiting patient as suspicious: fills pass them over --
suspect = next(r for r in e.session_waitlist("Wang/Tue/AM") if e.waitlist(r).priority == "public")
suspect_name = e.waitlist(suspect).account
e.flag(account=suspect_name, until=START + 3 * se.DAY, note="identity check pending", now=t)

# -- the hand-offs: each cancelled slot is a waiting patient's before the buyer arrives --
t = START + se.DAY
results = hand_offs(e, held, t)
events = e.events()
print()
print("Hand-offs (scalper cancels, buyer books 200 ms later)")
for session, r in results:
    print(f"  {session:<12} buyer: {r.status.name:<8} {r.reason.name}")
fills = [ev for ev in events if ev.kind == se.EventKind.WAITLIST_FILLED]
for ev in fills[:3]:
    w = e.waitlist(ev.detail)
    b = e.booking(ev.booking)
    print(f"  {hms(ev.at)} WAITLIST_FILLED {ev.session}: slot {ev.slot} "
          f"({hms(b.window[0])}) -> {ev.patient} ({w.priority}, joined {hms(w.created_at)})")
waitlist_buyers = sum(r.ok for _, r in results)

# -- a week of ordinary cancellations: each goes to the waitlist in the same call --
t = START + 2 * se.DAY
for n in rng.choice(np.arange(1, 25), size=8, replace=False):
    patient = f"G-{n:03d}"
    for b in e.live_bookings(patient):
        e.cancel(b.id, account=patient, now=t)
    t += int(rng.integers(20, 240)) * MINUTE
events += e.events()
print()
print(f"A week of ordinary cancellations (8): each slot went to the waitlist in the same call")
for ev in [ev for ev in events if ev.kind == se.EventKind.WAITLIST_SKIPPED][:2]:
    print(f"  {hms(ev.at)} WAITLIST_SKIPPED {ev.session}: {ev.patient} ({ev.reason.name}); "
          "it keeps its place")

# -- 停诊: Dr Chen cancels Wednesday afternoon --
moved = e.suspend("Chen/Wed/PM", now=t)
suspension = e.events()
events += suspension
print()
print(f"停诊 of Chen/Wed/PM: {moved} bookings left it")
for kind, n in sorted(Counter(ev.kind.name for ev in suspension).items()):
    print(f"  {kind:<20} {n}")
ev = next(ev for ev in suspension if ev.kind == se.EventKind.BOOKING_MOVED)
print(f"  e.g. {ev.patient}: moved to {ev.session} slot {ev.slot}")
ev = next((ev for ev in suspension if ev.kind == se.EventKind.BOOKING_WAITLISTED), None)
if ev is not None:
    w = e.waitlist(ev.detail)
    print(f"  e.g. {ev.patient}: waiting (priority {w.priority!r}) for {', '.join(w.sessions)}")

events += e.advance(se.to_ms(WEEK - timedelta(hours=8)) + 1)  # the deadline passes
e._check_invariants()

infos = [e.waitlist(r) for r in requests]
waits = [w.changed_at - w.created_at for w in infos if w.state == se.RequestState.FILLED]
print()
print("Waitlist outcome")
for state, n in sorted(Counter(w.state.name for w in infos).items()):
    print(f"  {state:<10} {n}")
print(f"  median wait of a filled request: {median(waits) / HOUR:.1f} h")
print(f"  referral requests filled: {sum(w.state == se.RequestState.FILLED for w in infos if w.priority == 'referral')} of 8")
print()
print("Events by kind")
for kind, n in sorted(Counter(ev.kind.name for ev in events).items()):
    print(f"  {kind:<20} {n}")
print()
print("explain(request=...) of a referral request")
print(e.explain(request=requests[9]))
print()
print("explain(request=...) of the flagged one")
print(e.explain(request=suspect))

# -- the same hand-offs without the waitlist defence --
e2, held2 = setup(OPEN)
results2 = hand_offs(e2, held2, START + se.DAY)
print()
print("Open re-booking (no waitlist, rerelease_seconds=(0, 0))")
for session, r in results2:
    print(f"  {session:<12} buyer: {r.status.name:<8} slot {r.slot}")
print()
print("Summary")
print(f"  hand-offs that reached the buyer   {waitlist_buyers} of {len(results)} waitlist first  "
      f"vs {sum(r.ok for _, r in results2)} of {len(results2)} open")
