"""Treat first, pay later (先看病后付费) and prepaid cards (储值) at one TCM clinic.

Dr Yang of the district hospital's TCM department sees patients every Monday
morning; registration is 20 yuan.  The platform requires every booking's fee
to be covered (``Policy(require_cover=True)``): held from the patient's
prepaid card first, then from a credit line signed once for the whole district
(outpatient, 300 yuan to start).  After each visit the hospital sends the
actual bill (registration plus medicine) with ``engine.credit.settle``
(``settle_at="visit"``); what the card cannot pay becomes a bill on the credit
line, due in 30 days.

Four patients over five months:

* 王阿姨 (Wang) comes every five weeks on credit and always repays within ten
  days: after three bills paid on time her limit rises a step.
* 赵大爷 (Zhao) does not repay: a reminder three days before the due date,
  then the bill is overdue, his line is suspended and its limit cut a step;
  his next booking is refused until he repays, which reinstates the line.
  His next bill goes overdue too: the limit falls to the floor (100 yuan).
* 李先生 (Li) pays with a prepaid card only, and takes some of it back.
* 小张 (Zhang) has neither: refused for lack of cover until he tops up.

Every movement of money is a double-entry record in the ledger; the report
ends with the ledger's totals, which always sum to zero.

    make demo        # or: python examples/credit_demo.py

Deterministic, public API only (``import slotengine as se``).
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Callable

import slotengine as se

CST = timezone(timedelta(hours=8))
MONDAY = datetime(2026, 12, 7, tzinfo=CST)
START = se.to_ms(datetime(2026, 12, 1, 9, tzinfo=CST))
WEEKS = 22
FEE = 2000  # fen: 20 yuan

policy = se.Policy(require_cover=True, settle_at="visit")
e = se.Engine(policy=policy, seed=5)
for w in range(WEEKS):
    e.add_session(f"Yang/W{w:02d}", hospital="富阳区第一人民医院", department="中医科",
                  doctor="Dr Yang", tier="general", starts_at=MONDAY + timedelta(weeks=w, hours=8),
                  slot_minutes=10, capacity=20, fee=FEE, release={"app": START - se.DAY}, now=START)
log: list[str] = []
events: Counter[str] = Counter()


def yuan(fen: int) -> str:
    return f"{fen / 100:,.2f}"


def pad(name: str, width: int) -> str:
    """Left-justify a name whose CJK characters take two columns each."""
    return name + " " * max(0, width - sum(2 if ord(c) > 0x2E80 else 1 for c in name))


def day(ms: int) -> str:
    return se.from_ms(ms, CST).strftime("%Y-%m-%d")


def at(week: int, hours: float = 0, days: int = 0) -> int:
    return se.to_ms(MONDAY + timedelta(weeks=week, days=days, hours=hours))


def note(t: int, text: str) -> None:
    log.append(f"  {day(t)}  {text}")


def collect(t: int) -> None:
    for ev in e.advance(t):
        events[ev.kind.name] += 1
        if ev.kind in (se.EventKind.BILL_DUE_SOON, se.EventKind.BILL_OVERDUE,
                       se.EventKind.CREDIT_SUSPENDED, se.EventKind.CREDIT_REINSTATED,
                       se.EventKind.LIMIT_CHANGED):
            what = f"limit now {yuan(ev.detail)} yuan" if ev.kind == se.EventKind.LIMIT_CHANGED \
                else f"bill {ev.detail}" if "BILL" in ev.kind.name else ""
            note(ev.at, f"event {ev.kind.name:<17} {ev.patient}  {what}".rstrip())


agenda: list[tuple[int, int, Callable[[int], None]]] = []  # (time, order, action)


def plan(t: int, action: Callable[[int], None]) -> None:
    agenda.append((t, len(agenda), action))


def visit(patient: str, week: int, bill: int) -> None:
    """Book a week ahead at 10:00; arrive at 08:00 on the day; the bill comes at 09:00."""
    booking: dict[str, int] = {}

    def book(t: int) -> None:
        r = e.book(patient, patient, f"Yang/W{week:02d}", now=t)
        if r.status != se.Status.BOOKED:
            note(t, f"{patient} books W{week:02d}: {r.status.name} {r.reason.name}")
            return
        booking["id"] = r.booking
        info = e.booking(r.booking)
        note(t, f"{patient} books W{week:02d} slot {r.slot}: holds {yuan(info.held_balance)} "
                f"on the card, {yuan(info.held_credit)} on credit")

    def arrive(t: int) -> None:
        if "id" in booking:
            e.check_in(booking["id"], now=t)

    def settle(t: int) -> None:
        if "id" not in booking:
            return
        s = e.credit.settle(booking["id"], bill, now=t)
        due = f", bill {s.bill} due {day(e.credit.bill(s.bill).due_at)}" if s.bill is not None else ""
        note(t, f"{patient} visit billed {yuan(bill)}: {yuan(s.from_balance)} from the card, "
                f"{yuan(s.from_credit)} on credit{due}")

    plan(at(week - 1, hours=10), book)
    plan(at(week, hours=8), arrive)
    plan(at(week, hours=9), settle)


def repay_last(patient: str) -> Callable[[int], None]:
    def action(t: int) -> None:
        bill = e.credit.bills(patient)[-1]
        paid = e.credit.repay(patient, bill.amount - bill.paid, now=t)
        note(t, f"{patient} repays {yuan(bill.amount)} ({len(paid)} bill paid in full)")
    return action


def repay_all(patient: str) -> Callable[[int], None]:
    def action(t: int) -> None:
        owed = e.credit.statement(patient).owed
        e.credit.repay(patient, owed, now=t)
        note(t, f"{patient} repays all {yuan(owed)} he owes")
    return action


def refund(patient: str, amount: int) -> Callable[[int], None]:
    def action(t: int) -> None:
        assert e.credit.refund(patient, amount, now=t).ok
        left = e.credit.statement(patient).balance
        note(t, f"{patient} takes {yuan(amount)} back off his card: balance {yuan(left)}")
    return action


def top_up(patient: str, amount: int) -> Callable[[int], None]:
    def action(t: int) -> None:
        e.credit.top_up(patient, amount, now=t)
        note(t, f"{patient} puts {yuan(amount)} on a prepaid card")
    return action


# -- signing up ---------------------------------------------------------------
t = START
e.credit.open_line("王阿姨", kind="outpatient", now=t)
e.credit.open_line("赵大爷", kind="outpatient", now=t)
e.credit.top_up("李先生", 10_000, now=t)
note(t, "王阿姨 and 赵大爷 sign the credit agreement (outpatient line, 300 yuan); "
        "李先生 puts 100 yuan on his card")
refused = e.book("小张", "小张", "Yang/W00", now=t + 1000)
note(t, f"小张 books W00 with no card and no line: {refused.status.name} {refused.reason.name}")
why = e.explain(refused)

# -- five months of visits -----------------------------------------------------
for week, amount in ((1, 15_800), (6, 9_600), (11, 12_300), (16, 8_800)):
    visit("王阿姨", week, amount)  # ... and repays ten days later, every time
    plan(at(week, days=10), repay_last("王阿姨"))
visit("赵大爷", 1, 8_000)  # ... and does not repay on his own
visit("赵大爷", 7, 2_000)  # refused: his line is suspended by then
plan(at(9), repay_all("赵大爷"))
visit("赵大爷", 11, 2_000)
visit("李先生", 2, 2_000)
visit("李先生", 3, 2_400)
plan(at(4), refund("李先生", 3_000))
plan(at(4, hours=1), top_up("小张", 5_000))
visit("小张", 5, 2_000)

for when, _, action in sorted(agenda, key=lambda x: x[:2]):
    collect(when)
    action(when)
collect(at(WEEKS))

# -- report --------------------------------------------------------------------
print("Treat first, pay later at Dr Yang's TCM clinic (Policy(require_cover=True, settle_at='visit'))")
print("\n".join(log))

print("\nStatements at the end")
print(f"  {'patient':<8}{'card':>10}{'line':>12}{'limit':>10}{'owed':>9}{'bills':>7}{'on time':>9}")
for p in ("王阿姨", "赵大爷", "李先生", "小张"):
    s = e.credit.statement(p)
    line = s.line.state.name.lower() if s.line.kind else "-"
    limit = yuan(s.line.limit) if s.line.kind else "-"
    print(f"  {pad(p, 8)}{yuan(s.balance):>10}{line:>12}{limit:>10}{yuan(s.owed):>9}"
          f"{len(s.bills):>7}{sum(b.state == se.BillState.PAID and b.paid_at <= b.due_at for b in s.bills):>9}")

print("\nEvents by kind")
for kind, n in sorted(events.items()):
    print(f"  {kind:<18}{n:>4}")

print("\nThe ledger (double entry, fen)")
moves = e.credit.movements()
by_kind = Counter(m.kind.name for m in moves)
print("  " + ", ".join(f"{k} x{n}" for k, n in sorted(by_kind.items())))
for m in moves[:4]:
    print(f"  #{m.seq:<3} cmd {m.command:<4} {day(m.at)} {pad(m.patient, 7)} {m.source.name:>8} -> "
          f"{m.target.name:<8} {m.amount:>7} {m.kind.name}")
totals = e.credit.totals()
print("  totals: " + ", ".join(f"{k} {v}" for k, v in totals.items()) + f"  (sum {sum(totals.values())})")

print("\nexplain() of the refused booking")
print("  " + why.replace("\n", "\n  "))
e._check_invariants()
