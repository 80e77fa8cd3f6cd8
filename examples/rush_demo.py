"""One clinic day at three hospitals, and the booking rush for it.

Replays, deterministically, what a regional booking platform sees: referral,
phone and window quotas opening early; the 08:30 app release, where a few
scalper accounts' bots race thousands of genuine patients; unpaid holds
expiring; cancellations; a doctor adding slots (加号) and another stopping a
clinic (停诊); check-ins and no-shows on the day.  Then it prints a summary.

    make demo        # or: python examples/rush_demo.py

Only the public API is used (``import slotengine as se``).  Times are aware
datetimes or int milliseconds; money is integer fen.
"""
from __future__ import annotations

import random
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np

import slotengine as se

SEED = 20250317
CST = timezone(timedelta(hours=8))
DAY = datetime(2025, 3, 17, tzinfo=CST)  # the clinic day, a Monday
RELEASE = DAY - timedelta(days=7) + timedelta(hours=8, minutes=30)  # the app opens: 08:30 a week ahead
HOSPITALS = ["Union", "Tiantan", "Anzhen"]
DEPARTMENTS = ["Cardiology", "Neurology", "Dermatology", "Gastroenterology"]
TIERS = {"general": (30, 5_000), "associate": (20, 10_000), "expert": (10, 30_000)}  # slots, fee
SURNAMES = ["Li", "Wang", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu", "Xu", "Sun"]
HALVES = {"AM": timedelta(hours=8), "PM": timedelta(hours=13, minutes=30)}


def ms(t: datetime) -> int:
    return se.to_ms(t)


# -- the day's clinics -------------------------------------------------------------
# Phone (elderly) opens 8 days ahead, referral (community clinics) 14 days
# ahead, both by Policy; the hospital counter opens an hour before the app.
# This day runs the classic first-come-first-served ledger: no pre-queue or
# lottery cohort, no risk signals.  examples/fair_release.py shows the fair
# release (the default Policy) against it.
FCFS = dict(prequeue_minutes=0, cohort_seconds=0, early_flag=(0, 1), cancel_flag=(0, 30),
            patients_flag=(0, 30), rebook_seconds=0)
policy = se.Policy(bar_first_visit_expert=True, release_days={"phone": 8, "referral": 14}, **FCFS)
engine = se.Engine(policy, seed=SEED)
SESSIONS = []  # (session id, hospital, department, tier)
for h in HOSPITALS:
    for d in DEPARTMENTS:
        for tier, (cap, fee) in TIERS.items():
            for half, start in HALVES.items():
                sid, q = f"{h}/{d}/{tier}/{half}", cap // 10
                engine.add_session(
                    sid, hospital=h, department=d, doctor=f"Dr {SURNAMES[len(SESSIONS) // 2 % 12]}",
                    tier=tier, starts_at=DAY + start, slot_minutes=240 // cap, capacity=cap, fee=fee,
                    quotas={"app": cap - 3 * q, "window": q, "phone": q, "referral": q},
                    release={"window": RELEASE - timedelta(hours=1)})
                SESSIONS.append((sid, h, d, tier))
by_place = {}  # (hospital, department) -> [session ids]
for sid, h, d, tier in SESSIONS:
    by_place.setdefault((h, d), []).append(sid)

# -- who books -----------------------------------------------------------------------
rng = random.Random(SEED)
start_ms = ms(DAY - timedelta(days=30))
patients = []  # (patient, account, hospital, department, wanted session)
for i in range(3_000):
    h, d = rng.choice(HOSPITALS), rng.choice(DEPARTMENTS)
    tier = rng.choices(list(TIERS), weights=[45, 30, 25])[0]
    half = "AM" if rng.random() < 0.6 else "PM"
    p, acc = f"P{i:05d}", f"A{i // 2:05d}"  # family accounts of two
    if rng.random() < 0.4:  # 复诊: known at the hospital, may see the expert
        engine.register_patient(p, follow_up_at=[h], now=start_ms)
    patients.append((p, acc, h, d, f"{h}/{d}/{tier}/{half}"))
SCALPERS = [f"SCALPER-{k}" for k in range(1, 5)]
for k, acc in enumerate(SCALPERS, 1):  # bought patient cards: half their identities are "known"
    for j in range(0, 12, 2):
        engine.register_patient(f"X{k}-{j:02d}", follow_up_at=HOSPITALS, now=start_ms)

rejected = Counter()  # Reason -> count, over every command
made = []  # booking ids, in order
samples = {}  # Reason -> first rejected Result
calls = Counter()


def note(r):
    """Tally one Result; keep the first rejection of each reason for explain()."""
    if r.reason != se.Reason.NONE:
        rejected[se.Reason(r.reason)] += 1
        samples.setdefault(se.Reason(r.reason), r)
    return r


def book(acc, p, sid, channel, t, hold=False):
    calls["book"] += 1
    r = note(engine.book(acc, p, sid, channel, now=t, hold=hold))
    if r.ok:
        made.append(r.booking)
    return r


# -- early channels: referral (D-14), phone (D-8), the hospital counter (D-7, 07:30) --
plan = rng.sample(patients, 600)
for n, (p, acc, h, d, sid) in enumerate(plan[:120]):
    book(acc, p, sid, "referral", ms(DAY - timedelta(days=14, hours=-9)) + n * 60_000)
for n, (p, acc, h, d, sid) in enumerate(plan[120:400]):
    book(acc, p, sid, "phone", ms(DAY - timedelta(days=8, hours=-9)) + n * 30_000)
for n, (p, acc, h, d, sid) in enumerate(plan[400:]):
    book(acc, p, sid, "window", ms(RELEASE - timedelta(minutes=60)) + n * 15_000)
early = {p for p, *_ in plan}

# -- 08:30:00: scalper bots fire first, holding expert slots for many identities --
t = ms(RELEASE) - 100
book(SCALPERS[0], "X1-00", "Union/Cardiology/expert/AM", "app", t)  # jumps the gun
scalper_holds = []
for k, acc in enumerate(SCALPERS, 1):
    h = HOSPITALS[k % 3]
    for j in range(12):
        for d in DEPARTMENTS[:3]:  # three departments, same morning
            t = max(t + 3, ms(RELEASE))
            r = book(acc, f"X{k}-{j:02d}", f"{h}/{d}/expert/AM", "app", t, hold=True)
            if r.ok:
                scalper_holds.append((r.booking, acc))

# -- 08:30:00.5 onwards: the genuine rush, replayed through the batch path --------
rows = [x for x in patients if x[0] not in early]
rows += rng.sample(rows, 150)  # double taps: same request twice
rows += [(p, a, h, d, sid.replace("AM", "PM") if "AM" in sid else sid.replace("PM", "AM"))
         for p, a, h, d, sid in rng.sample(rows, 250)]  # also try the other half-day
arrival = np.sort(ms(RELEASE) + 500 + np.random.default_rng(SEED).exponential(6_000, len(rows)))
rng.shuffle(rows)
batch = (engine.intern_accounts([r[1] for r in rows]), engine.intern_patients([r[0] for r in rows]),
         engine.session_ids([r[4] for r in rows]), engine.channel_ids(["app"] * len(rows)),
         arrival.astype(np.int64))
clock = time.perf_counter()
res = engine.book_many(*batch, hold=True)
batch_s = time.perf_counter() - clock
for reason in res.reason[res.reason != 0]:
    rejected[se.Reason(int(reason))] += 1
held = [int(b) for b in res.booking[res.booking >= 0]]
made += held

# Genuine patients pay within minutes (most of them); scalpers pay for half.
t_pay = int(arrival[-1]) + 1_000
payers = [(t_pay + rng.randrange(480_000), b) for b in held if rng.random() < 0.93]
payers += [(t_pay + rng.randrange(480_000), b) for b, _ in scalper_holds[::2]]
for when, b in sorted(payers):
    note(engine.confirm(b, account=engine.booking(b).account, now=when))
events = engine.advance(RELEASE + timedelta(minutes=15))  # unpaid holds have expired
for b, acc in scalper_holds[1::2][:3]:  # too late
    note(engine.confirm(b, account=acc, now=RELEASE + timedelta(minutes=15)))

# Patients turned away retry by hand through the morning, picking up freed slots.
losers = sorted({int(p) for p in batch[1][res.status == se.Status.REJECTED]})
t = ms(RELEASE + timedelta(minutes=20))
names = {int(i): r for i, r in zip(batch[1], rows)}
for pid in rng.sample(losers, min(500, len(losers))):
    p, acc, h, d, _ = names[pid]
    t += rng.randrange(1, 8_000)
    book(acc, p, rng.choice(by_place[(h, d)]), "app", t)

# -- the week before: cancellations, then 加号 and late bookings after the roll-over --
live = [b for b in made if engine.booking(b).state == se.BookingState.BOOKED]
leaving = sorted(rng.sample(live, len(live) // 25))
t = ms(RELEASE + timedelta(days=1))
for b in leaving:
    t += rng.randrange(60_000, 3_600_000)
    note(engine.cancel(b, account=engine.booking(b).account, now=t))
engine.add_capacity("Union/Cardiology/expert/AM", 2, now=DAY - timedelta(hours=15))  # after roll-over
t = ms(DAY - timedelta(hours=15))
for p, acc, h, d, sid in rng.sample(patients, 300):
    t += rng.randrange(1, 60_000)
    book(acc, p, rng.choice(by_place[(h, d)]), "app", t)
late = [b for b in made if engine.booking(b).state == se.BookingState.BOOKED][:2]
for b in late:  # after 16:00 the day before
    note(engine.cancel(b, account=engine.booking(b).account, now=DAY - timedelta(hours=7)))

# -- the clinic day: a doctor falls ill, patients arrive (or not) -------------------
events += engine.advance(DAY + timedelta(hours=6))
STOP = "Tiantan/Neurology/expert/PM"
suspended = engine.suspend(STOP, now=DAY + timedelta(hours=6, minutes=30))
arrivals = []
for b in made:
    info = engine.booking(b)
    if info.state == se.BookingState.BOOKED and rng.random() < 0.88:
        arrivals.append((info.window[0] - rng.randrange(600_000), b))
for when, b in sorted(arrivals):
    note(engine.check_in(b, now=max(when, engine.now)))
events += engine.advance(DAY + timedelta(hours=20))

# -- the report ---------------------------------------------------------------------
slots = Counter()
expert = Counter()
for sid, h, d, tier in SESSIONS:
    c = engine.session_counts(sid)._asdict()
    slots.update(c)
    if tier == "expert":
        expert.update(c)
expert_made = [b for b in made if "/expert/" in engine.booking(b).session]
by_scalper = sum(engine.booking(b).account.startswith("SCALPER") for b in expert_made)


def line(label, value, comment=""):
    print(f"  {label:<30}{value:>10}  {comment}".rstrip())


print(f"slotengine rush demo  (seed {SEED}, clinic day {DAY:%Y-%m-%d}, app release {RELEASE:%m-%d %H:%M} UTC+8)")
print("\nSessions and slots")
line("sessions", len(SESSIONS), f"{len(HOSPITALS)} hospitals x {len(DEPARTMENTS)} departments x 3 tiers x AM/PM")
line("slots", sum(slots.values()), "incl. 2 added (加号)")
print("\nRequests")
line("per-call book() calls", calls["book"])
line("batch book_many() rows", len(rows), "the 08:30 app rush, held then paid")
line("bookings made", len(made), "booked or held at the time")
print("\nRejections by reason")
for reason, n in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0])):
    line(reason.name, n, reason.message)
print("\nSlots by state after the day")
for state, n in slots.items():
    line(state, n)
taken = expert["arrived"] + expert["no_show"]
line("expert slots taken", f"{taken / sum(expert.values()):.0%}",
     f"{taken} of {sum(expert.values())} (arrived or no-show)")
line("expert bookings by scalpers", f"{by_scalper / len(expert_made):.0%}",
     f"{by_scalper} of {len(expert_made)} (holds, paid or not)")
print("\nEvents by kind")
for kind, n in sorted(Counter(ev.kind for ev in events).items()):
    line(kind.name, n)
print(f"\nThe suspended clinic (停诊) {STOP}: suspend() cancelled {suspended} bookings")
stop = [ev for ev in events if ev.session == STOP
        and ev.kind in (se.EventKind.BOOKING_CANCELLED, se.EventKind.SESSION_SUSPENDED)]
for ev in stop[:3] + stop[-1:]:  # the first cancellations and the suspension itself
    print(f"  {se.from_ms(ev.at, CST):%m-%d %H:%M}  {ev.kind.name:<18} booking {ev.booking!s:<6} "
          f"patient {ev.patient!s:<8} detail {ev.detail}")
print("\nexplain() of a booking")
sample = next(b for b in held if "/expert/" in engine.booking(b).session
              and engine.booking(b).state == se.BookingState.ARRIVED)
print("  " + engine.explain(sample).replace("\n", "\n  "))
print("\nexplain() of a rejection")
print("  " + engine.explain(samples[se.Reason.ACCOUNT_PATIENT_LIMIT]))
print("  " + engine.explain(samples[se.Reason.PATIENT_LIMIT]))
print("\nBatch path")
line("book_many() throughput", f"{len(rows) / batch_s / 1e6:.1f}M/s", f"{len(rows)} rows in {batch_s * 1e3:.2f} ms")
