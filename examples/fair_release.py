"""Fair release (放号 lottery) vs first come, first served, for one hot expert session.

At 08:30 a week ahead, one expert cardiology clinic (12 slots) opens on the
app.  Two scalper accounts run bots for a dozen bought patient identities
each: they fire the moment the pre-queue opens (08:25:00.001) and again at
08:30:00.000 sharp.  BOT-2 is on a shared blacklist the platform imports at
07:30; BOT-1 is new.  480 genuine patients (families of one or two) tap
"book" during the first minute after 08:30.

With the default Policy every request from 08:25 to 08:31 joins one cohort;
at 08:31 a seeded lottery ranks the fair lane, then the slow lane, and the
tickets are served in that order.  BOT-1's early burst trips the
early-requests rule (5 early requests) and the rest of its requests go to
the slow lane, where a rate limit (GCRA) throttles them; BOT-2 is in the slow
lane from its first request.  The same arrivals are then replayed under
first come, first served (no pre-queue, no cohort, no risk signals, no
blacklist), where the bots' 08:30:00.000 burst takes the slots.

    make demo        # or: python examples/fair_release.py

Deterministic (seeded), public API only (``import slotengine as se``).
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np

import slotengine as se

SEED = 20250317
CST = timezone(timedelta(hours=8))
DAY = datetime(2025, 3, 17, 8, tzinfo=CST)  # the clinic: Monday 08:00
RELEASE = se.to_ms(DAY - timedelta(days=7) + timedelta(minutes=30))  # the app opens: 08:30 a week ahead
SESSION = "Union/Cardiology/expert/AM"
CAPACITY = 12
BOTS = {"BOT-1": "X", "BOT-2": "Y"}  # account -> prefix of its bought identities
N_IDENTITIES = 12
N_GENUINE = 480
SECOND = 1_000

# Default rules; the only change is a gentle outflow (20 tickets a second after
# the draw) so that a ticket's place in the queue can be watched going down.
FAIR = se.Policy(outflow_per_second=20)
FCFS = se.Policy(prequeue_minutes=0, cohort_seconds=0, early_flag=(0, 1), cancel_flag=(0, 30),
                 patients_flag=(0, 30), rebook_seconds=0)


def hms(ms: int) -> str:
    return se.from_ms(ms, CST).strftime("%H:%M:%S.%f")[:-3]


# -- the arrivals, identical for both runs -----------------------------------------
arrivals = []  # (ms, account, patient)
for account, prefix in BOTS.items():
    offset = 0 if account == "BOT-1" else N_IDENTITIES
    for j in range(N_IDENTITIES):
        patient = f"{prefix}-{j:02d}"
        # the pre-queue opens at 08:25:00.000; then the "release" burst at 08:30:00.000
        arrivals.append((RELEASE - 5 * 60 * SECOND + 1 + offset + j, account, patient))
        arrivals.append((RELEASE + offset + j, account, patient))
rng = np.random.default_rng(SEED)
taps = (RELEASE + 300 + np.minimum(rng.exponential(12 * SECOND, N_GENUINE), 59_000).astype(np.int64)).tolist()
for i, t in enumerate(taps):
    arrivals.append((t, f"F{i // 2:04d}" if i % 3 else f"F{i:04d}-solo", f"P{i:04d}"))
arrivals.sort()
genuine = {p for _, a, p in arrivals if not a.startswith("BOT")}
bot_patients = {p for _, a, p in arrivals if a.startswith("BOT")}


def new_engine(policy: se.Policy, blacklist: bool) -> se.Engine:
    e = se.Engine(policy, seed=SEED)
    e.add_session(SESSION, hospital="Union", department="Cardiology", doctor="Dr Li", tier="expert",
                  starts_at=DAY, slot_minutes=20, capacity=CAPACITY, fee=30_000,
                  release={"app": RELEASE}, now=RELEASE - 3600 * SECOND)
    if blacklist:  # the platforms' shared scalper list arrives at 07:30
        e.import_blacklist([("account", "BOT-2", RELEASE + 30 * se.DAY),
                            ("patient", "Z-card-0042", RELEASE + 90 * se.DAY)],
                           now=RELEASE - 3600 * SECOND)
    return e


def line(label: str, value: object, comment: str = "") -> None:
    print(f"  {label:<32}{value!s:>10}  {comment}".rstrip())


def rate(won: int, of: int) -> str:
    return f"{won / of:.1%}" if of else "-"


print(f"slotengine fair release demo  (seed {SEED}, session {SESSION}, {CAPACITY} slots, "
      f"app release {se.from_ms(RELEASE, CST):%m-%d %H:%M} UTC+8)")
print("\nArrivals (the same for both runs)")
line("genuine patients", len(genuine), f"one tap each, {hms(min(taps))} - {hms(max(taps))}")
for account, prefix in BOTS.items():
    n = sum(a == account for _, a, _ in arrivals)
    line(f"{account} requests", n, f"{N_IDENTITIES} identities at 08:25:00.001 (pre-queue opens), "
         "again at 08:30:00.000" + (" - on the blacklist" if account == "BOT-2" else ""))

# -- fair release ------------------------------------------------------------------
e = new_engine(FAIR, blacklist=True)
outcome: Counter[str] = Counter()
by_bot: dict[str, Counter[str]] = {a: Counter() for a in BOTS}
ticket_of: dict[str, int] = {}  # patient -> its (first) ticket
for t, account, patient in arrivals:
    r = e.book(account, patient, SESSION, "app", now=t)
    what = se.Reason(r.reason).name if r.reason else se.Status(r.status).name
    outcome[what] += 1
    if account in by_bot:
        by_bot[account][what] += 1
    if r.ticket is not None:
        ticket_of.setdefault(patient, r.ticket)
        if account in by_bot:
            by_bot[account][e.ticket(r.ticket).lane] += 1
watched = ticket_of[arrivals[-1][2]]  # the last genuine tap, at 08:30:59
positions = [("last arrival, cohort collecting", e.now, e.position(watched))]
close = RELEASE + FAIR.cohort_seconds * SECOND
events = e.advance(close)
positions.append(("cohort closed and drawn", e.now, e.position(watched)))
events += e.advance(close + 2 * SECOND)
positions.append(("two seconds later", e.now, e.position(watched)))
events += e.advance(close + 120 * SECOND)  # long enough for the queue to drain
positions.append(("queue drained", e.now, e.position(watched)))

tickets = [e.ticket(k) for k in sorted(set(ticket_of.values()))]
drawn = [ev for ev in events if ev.kind == se.EventKind.COHORT_DRAWN]
won = {e.ticket(ev.detail).patient: e.ticket(ev.detail) for ev in events
       if ev.kind == se.EventKind.TICKET_SERVED}
print("\nFair release (default Policy: 5-minute pre-queue, 60 s cohort, risk rules on)")
for name, n in sorted(outcome.items(), key=lambda kv: -kv[1]):
    line(f"requests {name}", n)
for account, c in by_bot.items():
    line(f"{account} tickets fair/slow", f"{c['fair']}/{c['slow']}",
         f"{c['THROTTLED']} THROTTLED, {c['DUPLICATE_TICKET']} DUPLICATE_TICKET")
line("cohort size", drawn[0].detail, f"drawn at {hms(drawn[0].at)}, one seeded lottery")
print(f"  {'lane':<8}{'tickets':>8}{'wins':>6}{'win share':>11}{'win rate':>10}")
for lane in ("fair", "slow"):
    n = sum(t.lane == lane for t in tickets)
    w = sum(t.lane == lane for t in won.values())
    print(f"  {lane:<8}{n:>8}{w:>6}{rate(w, len(won)):>11}{rate(w, n):>10}")
fair_bot = len(bot_patients & set(won))
fair_genuine = len(genuine & set(won))
line("bot win rate", rate(fair_bot, len(bot_patients)), f"{fair_bot} of {len(bot_patients)} bot identities")
line("genuine win rate", rate(fair_genuine, len(genuine)), f"{fair_genuine} of {len(genuine)} patients")

print(f"\nposition() of ticket {watched} (patient {e.ticket(watched).patient}, "
      f"submitted {hms(e.ticket(watched).submitted_at)})")
for label, at, pos in positions:
    ahead = "-" if pos.ahead is None else pos.ahead
    draw = "-" if pos.draw is None else f"{pos.draw + 1} of {pos.cohort_size}"
    wait = "" if pos.estimate_ms is None else f", about {pos.estimate_ms / 1000:.1f} s to go"
    print(f"  {hms(at)}  {label:<32} {pos.state.name:<7} ahead {ahead!s:<4} draw {draw}{wait}")

winner = min(t.id for t in won.values())
slow = min(t.id for t in tickets if t.lane == "slow")
print("\nexplain(ticket=...) of a winner")
print("  " + e.explain(ticket=winner).replace("\n", "\n  "))
print("\nexplain(ticket=...) of a slow-lane ticket")
print("  " + e.explain(ticket=slow).replace("\n", "\n  "))
print("\nflag_log()")
for rec in e.flag_log():
    why = rec.reason.name if rec.reason is not None else "-"
    print(f"  {hms(rec.at)}  {rec.action:<6} {rec.kind:<8} {rec.key:<12} {why:<15} "
          f"until {se.from_ms(rec.until, CST):%Y-%m-%d %H:%M}")
e._check_invariants()

# -- first come, first served, on the same arrivals ------------------------------------
f = new_engine(FCFS, blacklist=False)
fcfs_outcome: Counter[str] = Counter()
booked: dict[str, str] = {}  # patient -> account
for t, account, patient in arrivals:
    r = f.book(account, patient, SESSION, "app", now=t)
    fcfs_outcome[se.Reason(r.reason).name if r.reason else se.Status(r.status).name] += 1
    if r.status == se.Status.BOOKED:
        booked[patient] = account
f._check_invariants()
print("\nFirst come, first served (no pre-queue, no cohort, no risk rules, no blacklist)")
for name, n in sorted(fcfs_outcome.items(), key=lambda kv: -kv[1]):
    line(f"requests {name}", n)
fcfs_bot = len(bot_patients & set(booked))
fcfs_genuine = len(genuine & set(booked))
line("slots taken by bots", f"{fcfs_bot} of {CAPACITY}",
     "the 08:30:00.000 burst, up to the 5-patients-per-account limit")
line("bot win rate", rate(fcfs_bot, len(bot_patients)), f"{fcfs_bot} of {len(bot_patients)} bot identities")
line("genuine win rate", rate(fcfs_genuine, len(genuine)), f"{fcfs_genuine} of {len(genuine)} patients")

print("\nSummary")
line("bot win rate", f"{rate(fair_bot, len(bot_patients))} fair", f"vs {rate(fcfs_bot, len(bot_patients))} FCFS")
line("genuine win rate", f"{rate(fair_genuine, len(genuine))} fair",
     f"vs {rate(fcfs_genuine, len(genuine))} FCFS")
