"""Credit: prepaid balances (储值) and "treat first, pay later" lines (先看病后付费).

``engine.credit`` is the host's view of the money the core keeps per patient,
in integer fen.  A patient's wallet holds a prepaid balance and at most one
credit line (outpatient or inpatient).  With ``Policy.require_cover`` a
booking's fee is *held* when it is booked (balance first, then credit),
*charged* at check-in or after the visit (``settle``), and *released* when
the booking ends otherwise.  A hold moves no money, like a card
authorization; a charge, a top-up, a repayment and a refund do, and each is a
double-entry movement in the ledger (``movements()``), so the books can be
audited and always sum to zero.

The credit part of a charge becomes a bill, due ``Policy.bill_due_days``
later.  An overdue bill suspends the line until it is paid and cuts the limit
one step; ``credit_raise_after`` bills paid on time raise it one step, always
within the kind's floor and ceiling (``Policy.credit_lines``).

Every amount is an int in fen (a float is refused with ``InvalidType``).
Commands validate everything before they change anything, like the rest of
the engine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import InvalidArgument, InvalidState, InvalidType, UnknownBill, UnknownPatient
from .outcomes import BillState, LedgerAccount, LineKind, LineState, MoveKind, Reason, Status

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Credit", "Cover", "Line", "Statement", "Bill", "Movement", "Settlement"]

MAX_FEN = 1_000_000_000_000  # the largest amount one command takes (10^10 yuan)
_KINDS = {"outpatient": LineKind.OUTPATIENT, "inpatient": LineKind.INPATIENT}


@dataclass(frozen=True)
class Cover:
    """Whether an amount can be covered now, and how: balance first, then credit."""

    ok: bool
    reason: Reason  # NONE, NO_COVER or CREDIT_SUSPENDED
    from_balance: int
    from_credit: int


@dataclass(frozen=True)
class Line:
    """A patient's credit line (kind None and state NONE when never opened)."""

    kind: str | None  # "outpatient" or "inpatient"
    state: LineState
    limit: int
    used: int  # billed, not yet repaid
    held: int  # held for live bookings and waitlist requests, not yet billed
    available: int  # limit - used - held while OPEN, else 0
    on_time_streak: int  # bills paid by their due date in a row
    overdue_bills: int


@dataclass(frozen=True)
class Bill:
    """The credit part of one charge: owed by the patient until repaid."""

    id: int
    patient: str
    booking: int
    amount: int
    paid: int
    created_at: int
    due_at: int
    state: BillState
    paid_at: int | None


@dataclass(frozen=True)
class Statement:
    """Everything about one patient's money at the engine's clock."""

    patient: str
    balance: int  # prepaid money on the card, held part included
    balance_held: int
    line: Line
    bills: tuple[Bill, ...]  # every bill, oldest first
    owed: int  # unpaid bills (= line.used)
    available: int  # what a new booking could hold now: free balance + free credit


@dataclass(frozen=True)
class Movement:
    """One double-entry record: ``amount`` fen from ``source`` to ``target``."""

    seq: int  # position in the ledger
    command: int  # the engine's command number (``Engine.commands``) that made it
    at: int
    patient: str
    source: LedgerAccount
    target: LedgerAccount
    amount: int
    kind: MoveKind
    booking: int | None
    bill: int | None


@dataclass(frozen=True)
class Settlement:
    """What charging a booking did: paid from the balance, billed to the line, or refused."""

    ok: bool
    reason: Reason
    booking: int
    amount: int
    from_balance: int
    from_credit: int
    bill: int | None  # the bill made for the credit part


class Credit:
    """Money commands and statements for one Engine (``engine.credit``)."""

    def __init__(self, engine: Engine) -> None:
        self._e = engine

    # -- helpers -------------------------------------------------------------

    def _patient(self, patient: object) -> int:
        e = self._e
        return e._known(e._patients, patient, UnknownPatient)

    def _new_patient(self, patient: object) -> tuple[int | None, str]:
        """(id or None if new, checked name): a new patient is registered only once all is valid."""
        e = self._e
        name = e._patients.check(patient)
        return e._patients.ids.get(name), name

    def _register(self, known: int | None, name: str) -> int:
        e = self._e
        if known is not None:
            return known
        e._reserve(name)  # the name's record and the command's fit, or neither is written
        return e._register(e._patients, name)

    @staticmethod
    def _amount(value: object, name: str = "amount", lo: int = 1) -> int:
        from .engine import _int
        return _int(value, name, lo, MAX_FEN)

    # -- commands ------------------------------------------------------------

    def top_up(self, patient: str, amount: int, *, now: object) -> int:
        """Add ``amount`` fen to the patient's prepaid balance; returns the balance.

        A new patient is registered.  The balance may not pass 10^15 fen.
        """
        known, name = self._new_patient(patient)
        x = self._amount(amount)
        t = self._e._time(now)
        # The core refuses a balance past 10^15 before it changes anything; a
        # new patient (balance 0) cannot reach it, so registering first is safe.
        return self._e._core.top_up(self._register(known, name), x, t)

    def refund(self, patient: str, amount: int, *, now: object) -> Cover:
        """Pay ``amount`` fen of the free (unheld) balance back out.

        More than the whole balance raises InvalidArgument.  If the free
        balance is short once the command's timers have run (a queued
        request served by them may have just held a fee), nothing is
        refunded and the result says NO_COVER.  Returns what was paid out.
        """
        p = self._patient(patient)
        x = self._amount(amount)
        reason, _ = self._e._core.refund(p, x, self._e._time(now))
        return Cover(reason == 0, Reason(reason), x if reason == 0 else 0, 0)

    def open_line(self, patient: str, *, kind: str = "outpatient", limit: int | None = None,
                  now: object) -> Line:
        """Open (or reopen a closed) credit line: one signature, valid at every hospital.

        ``limit`` defaults to the kind's starting limit (``Policy.credit_lines``).
        A new patient is registered.
        """
        known, name = self._new_patient(patient)
        k = self._kind(kind)
        lim = -1 if limit is None else self._amount(limit, "limit", 0)
        t = self._e._time(now)
        # An existing line makes the core raise InvalidState before any change;
        # a new patient has none, so registering first is safe.
        self._e._core.open_line(self._register(known, name), int(k), lim, t)
        return self.line(name)

    @staticmethod
    def _kind(kind: object) -> LineKind:
        if not isinstance(kind, str):
            raise InvalidType(f"kind must be a str, not {type(kind).__name__}")
        try:
            return _KINDS[kind]
        except KeyError:
            raise InvalidArgument(f"kind must be one of {sorted(_KINDS)}, not {kind!r}") from None

    def close_line(self, patient: str, *, now: object) -> bool:
        """Close a line with nothing used or held on it (InvalidState otherwise).

        False (nothing changes) in the one case the check cannot see ahead: a
        queued request served by the command's own timers took a hold on it.
        """
        p = self._patient(patient)
        return bool(self._e._core.close_line(p, self._e._time(now)))

    def set_limit(self, patient: str, limit: int, *, now: object) -> int:
        """Set the line's limit (never below what is used and held); returns the new limit."""
        p = self._patient(patient)
        lim = self._amount(limit, "limit", 0)
        return self._e._core.set_limit(p, lim, self._e._time(now))

    def set_score(self, patient: str, score: int, *, now: object) -> int:
        """Set the limit from an external credit score (``Policy.credit_score_tiers``).

        The score picks a percent of the line kind's starting limit, kept
        within the kind's floor and ceiling.  Returns the new limit.
        """
        from .engine import _int
        p = self._patient(patient)
        s = _int(score, "score", 0, 10_000)
        t = self._e._time(now)
        kind = self._e._core.wallet(p)[2]
        if not kind:
            raise InvalidState(f"patient {self._e._patients.names[p]!r} has no credit line")
        name = LineKind(kind).name.lower()
        return self._e._core.set_limit(p, self._e.policy.score_limit(name, s), t)

    def repay(self, patient: str, amount: int, *, now: object) -> list[Bill]:
        """Repay ``amount`` fen of the patient's bills, oldest first; returns the bills paid in full.

        Paying every overdue bill reinstates a suspended line.
        """
        p = self._patient(patient)
        x = self._amount(amount)
        t = self._e._time(now)
        before = {k for k in self._e._core.patient_bills(p)
                  if self._e._core.bill_info(k)[6] != BillState.PAID}
        self._e._core.repay(p, x, t)
        return [self.bill(k) for k in sorted(before) if self._e._core.bill_info(k)[6] == BillState.PAID]

    def settle(self, booking: int, amount: int | None = None, *, now: object) -> Settlement:
        """Charge an arrived booking the visit's bill (default: what it holds).

        Paid from the balance first (its hold included), then billed to the
        credit line.  If the cover falls short, nothing changes and the result
        says why (NO_COVER or CREDIT_SUSPENDED): the patient tops up, then the
        host settles again.  Settling twice raises InvalidState.
        """
        e = self._e
        b = e._booking_id(booking)
        if amount is None:
            hb, hc, _ = e._core.booking_cover(b)
            x = hb + hc
        else:
            x = self._amount(amount, lo=0)
        code, xb, xc, bill = e._core.settle(b, x, e._time(now))
        status, reason = code & 0xFF, code >> 8
        return Settlement(status != Status.REJECTED, Reason(reason), b, x, xb, xc,
                          bill if bill >= 0 else None)

    # -- introspection -------------------------------------------------------

    def check(self, patient: str, amount: int) -> Cover:
        """Could ``amount`` fen be covered now?  Changes nothing."""
        p = self._patient(patient)
        reason, xb, xc = self._e._core.check_cover(p, self._amount(amount))
        return Cover(reason == 0, Reason(reason), xb, xc)

    def available(self, patient: str) -> int:
        """Free balance plus free credit: the most a new booking could hold now (fen)."""
        balance, held, line = self._money(self._patient(patient))
        return balance - held + line.available

    def line(self, patient: str) -> Line:
        """The patient's credit line."""
        return self._money(self._patient(patient))[2]

    def _money(self, p: int) -> tuple[int, int, Line]:
        """(balance, balance held, line) of patient p, from one read of its wallet."""
        balance, held, kind, state, limit, used, lheld, streak, overdue = self._e._core.wallet(p)
        free = limit - used - lheld if state == LineState.OPEN else 0
        return balance, held, Line(LineKind(kind).name.lower() if kind else None,
                                   LineState(state), limit, used, lheld, free, streak, overdue)

    def statement(self, patient: str) -> Statement:
        """The patient's balance, line and bills."""
        p = self._patient(patient)
        balance, held, line = self._money(p)
        bills = tuple(self.bill(k) for k in self._e._core.patient_bills(p))
        # what is owed is the line's used part (the core keeps them equal)
        return Statement(self._e._patients.names[p], balance, held, line, bills, line.used,
                         balance - held + line.available)

    def bill(self, bill: int) -> Bill:
        """One bill's record."""
        from .engine import _int_id
        k = _int_id(bill, "bill", self._e._core.n_bills, UnknownBill)
        p, b, amount, paid, created, due, state, paid_at = self._e._core.bill_info(k)
        return Bill(k, self._e._patients.names[p], b, amount, paid, created, due,
                    BillState(state), paid_at if paid_at >= 0 else None)

    def bills(self, patient: str) -> list[Bill]:
        """The patient's bills, oldest first."""
        return [self.bill(k) for k in self._e._core.patient_bills(self._patient(patient))]

    def movements(self, patient: str | None = None, *, start: int = 0) -> list[Movement]:
        """The ledger from ``start`` on, optionally only one patient's movements."""
        from .engine import _int
        p = None if patient is None else self._patient(patient)
        first = _int(start, "start", 0, 2**63 - 1)
        names = self._e._patients.names
        out = []
        for seq, cmd, at, q, src, dst, amount, kind, b, bill in self._e._core.movements(first):
            if p is None or q == p:
                out.append(Movement(seq, cmd, at, names[q], LedgerAccount(src),
                                    LedgerAccount(dst), amount, MoveKind(kind),
                                    b if b >= 0 else None, bill if bill >= 0 else None))
        return out

    def totals(self) -> dict[str, int]:
        """The sum of every movement per ledger account; they always add up to zero."""
        return {a.name.lower(): v for a, v in zip(LedgerAccount, self._e._core.ledger_totals())}

