"""Policy: every rule's number, validated once, with documented defaults.

Defaults follow the published rules of Beijing's 114 platform (see DESIGN.md).
Limits are tables of ``(count, days)`` rows, never hard-coded.  ``compile()``
turns a Policy into the flat integer form both engines (the compiled core and
``reference.py``) take, so the two can never read a rule differently.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Mapping, NamedTuple

from .errors import InvalidType, PolicyError
from .times import DAY, MINUTE, SECOND

__all__ = ["Policy", "CorePolicy", "CreditTerms"]

_DEFAULT_CHANNELS = ("app", "window", "kiosk", "phone", "referral", "followup")


class CorePolicy(NamedTuple):
    """The integer form of a Policy that both engines read (all times in ms)."""

    n_channels: int
    public_channel: int
    hold_ms: int
    patient_limits: tuple[tuple[int, int], ...]  # (count, window_ms)
    one_per_department_day: bool
    account_patients: int
    account_window_ms: int
    bar_first_visit_expert: bool
    ban_ms: tuple[int, ...]
    strike_window_ms: int
    cancel_strikes: int
    cancel_window_ms: int
    # fair release, slow lane and risk signals; the defaults here switch them
    # all off, so a hand-built CorePolicy keeps the plain ledger's behaviour
    prequeue_ms: int = 0
    cohort_ms: int = 0
    outflow_gap_ms: int = 0
    slow_delay_ms: int = 0
    slow_interval_ms: int = 1
    slow_burst: int = 1
    early_ms: int = 0
    early_count: int = 0
    early_window_ms: int = 1
    cancel_flag_count: int = 0
    cancel_flag_window_ms: int = 1
    patients_flag_count: int = 0
    patients_flag_window_ms: int = 1
    rebook_ms: int = 0
    flag_ms: int = 1
    # waitlist backfill (候补) and suspension moves; the defaults here keep
    # the plain ledger's behaviour (freed slots are FREE at once, suspend cancels)
    wl_classes: int = 3           # host priority classes; core class 0 is "moved"
    wl_candidates: int = 3        # most candidate sessions per request (<= 8)
    wl_per_patient: int = 3       # most open requests per patient
    wl_session_cap: int = 1000    # most open requests per session
    rerelease_min_ms: int = 0     # a freed slot nobody waits for is RETURNING ...
    rerelease_max_ms: int = 0     # ... for a delay drawn from [min, max] (0, 0: FREE at once)
    noshow_grace_ms: int = 0      # > 0: release a booked slot this long after its window opens
    suspend_action: int = 0       # 0 cancel, 1 move (else waitlist), 2 waitlist
    # credit (先看病后付费) and prepaid balances (储值); the defaults here keep
    # the booking path free of money (no cover check, nothing held)
    cover: bool = False               # a booking's fee must be covered (held) to book
    settle_at_check_in: bool = True   # check-in charges the held amount; else settle() does
    credit_terms: tuple[tuple[int, int, int, int], ...] = (
        (30_000, 10_000, 100_000, 10_000),        # outpatient: start, floor, ceiling, step (fen)
        (500_000, 100_000, 2_000_000, 100_000),   # inpatient
    )
    credit_raise_after: int = 3       # on-time bills in a row that raise the limit by a step (0 off)
    bill_due_ms: int = 30 * 86_400_000
    bill_notice_ms: int = 3 * 86_400_000   # BILL_DUE_SOON this long before due (0 off)


class CreditTerms(NamedTuple):
    """A credit line kind's limits in fen: where it starts and how it may move."""

    start: int    # the limit a new line gets
    floor: int    # repayment history never lowers it below this ...
    ceiling: int  # ... nor raises it above this
    step: int     # one raise or cut


@dataclass(frozen=True)
class Policy:
    """The rules an Engine enforces.  All fields have defaults; all are validated.

    Example::

        >>> Policy(hold_minutes=5, patient_limits=((1, 1), (2, 7))).hold_minutes
        5
    """

    #: Booking channels, in order.  Interned to ids 0..n-1 in this order.
    channels: tuple[str, ...] = _DEFAULT_CHANNELS
    #: The channel whose quota is the public pool: every channel may draw from it
    #: once it is released, and unclaimed quota rolls into it.
    public_channel: str = "app"
    #: Minutes east of UTC that define a calendar day (China Standard Time).
    utc_offset_minutes: int = 480
    #: Default release lead per channel, in days before the session's day; a
    #: channel not named here uses ``release_days_default``.
    release_days: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({"referral": 28, "followup": 14})
    )
    release_days_default: int = 7
    #: Local time of day (minutes after midnight) at which default releases open.
    release_minute_of_day: int = 8 * 60 + 30
    #: Unclaimed channel quota rolls into the public pool this long before start.
    rollover_minutes: int = 24 * 60
    #: A half-day session runs this long from its start; it then closes and
    #: booked patients who did not arrive are marked no-show.
    session_minutes: int = 4 * 60
    #: A hold (锁号) lasts this long unless confirmed.
    hold_minutes: int = 10
    #: Booked (not held) slots may be cancelled until this many minutes before
    #: the start of the session's local day: 480 means 16:00 the day before.
    cancel_cutoff_minutes: int = 8 * 60
    #: Per real-name patient: at most ``count`` bookings made in any trailing
    #: ``days`` days (cancelled and expired ones do not count).
    patient_limits: tuple[tuple[int, int], ...] = ((2, 1), (3, 7), (5, 90))
    #: At most one live booking per hospital+department per visit day.
    one_per_department_day: bool = True
    #: Per account: at most this many distinct patients booked for ...
    account_patients: int = 5
    #: ... in this many trailing days (0 patients disables the rule).
    account_window_days: int = 30
    #: First-visit patients (never arrived at, nor registered with, the
    #: hospital) may not book expert-tier sessions.
    bar_first_visit_expert: bool = False
    #: Ban lengths in days after the 1st, 2nd, 3rd (and later) strike within
    #: ``strike_window_days``; a no-show is a strike.
    ban_days: tuple[int, ...] = (30, 60, 90)
    strike_window_days: int = 365
    #: This many cancellations of booked slots within ``cancel_window_days``
    #: count as one strike (then the count starts again); 0 disables it.
    cancel_strikes: int = 3
    cancel_window_days: int = 30

    # -- fair release (放号): a lottery per session release, not a speed race --
    #: Requests up to this long before a release join its lottery cohort ...
    prequeue_minutes: int = 5
    #: ... and so do requests up to this long after it.
    cohort_seconds: int = 60
    #: Serve a closed cohort at this many tickets per second (0: all at once).
    outflow_per_second: int = 0
    # -- slow lane (慢速排队 / 延迟锁号) for flagged accounts and patients --
    #: A slow-lane request outside any queue is served this much later.
    slow_delay_seconds: int = 30
    #: GCRA rate limit on slow-lane accounts: requests per minute and burst.
    slow_rate_per_minute: int = 6
    slow_burst: int = 2
    # -- risk signals: crossing a threshold flags the account for flag_days --
    #: A request from the pre-queue until this long after a release is early.
    early_seconds: int = 2
    #: (count, days): that many early requests flag the account (count 0: off).
    early_flag: tuple[int, int] = (5, 1)
    #: (count, days): that many cancellations by an account flag it.
    cancel_flag: tuple[int, int] = (4, 30)
    #: (count, days): booking for that many distinct patients flags the account.
    patients_flag: tuple[int, int] = (4, 30)
    #: A slot cancelled by one account and booked by another within this many
    #: seconds flags both (cancel-then-rebook hand-off; 0: off).
    rebook_seconds: int = 10
    #: How long an automatic flag lasts.
    flag_days: int = 30

    # -- waitlist (候补): freed slots reach waiting patients first --
    #: Priority classes, highest first; a request is filled by class, then by
    #: arrival.  (Bookings moved off a suspended session rank above them all.)
    waitlist_classes: tuple[str, ...] = ("referral", "followup", "public")
    #: The class a request joins by default, by its channel.  None: a channel
    #: named like a class joins it (referral, followup); any other channel
    #: joins the last class.
    waitlist_class_of_channel: Mapping[str, str] | None = None
    #: At most this many candidate sessions per request (1..8).
    waitlist_candidates: int = 3
    #: At most this many open requests per patient.
    waitlist_per_patient: int = 3
    #: At most this many open requests per session; more are refused.
    waitlist_per_session: int = 500
    #: A freed slot no request can take is hidden from open booking for a
    #: random (min, max) seconds, so it cannot be handed over by a cancel and
    #: an instant re-book.  (0, 0) frees it at once.
    rerelease_seconds: tuple[int, int] = (30, 300)
    #: If > 0: a booked patient not checked in this many minutes after the
    #: slot's window opens is a no-show and the slot goes to the waitlist.
    noshow_release_minutes: int = 0
    #: What suspending a session (停诊) does to its bookings: "move" each to
    #: the nearest session of the same doctor (else department) with room,
    #: else into the waitlist; "waitlist"; or "cancel".
    on_suspend: str = "move"

    # -- credit (先看病后付费) and prepaid balances (储值), money in integer fen --
    #: A booking's fee must be covered to book: held from the prepaid balance
    #: first, then the credit line (a waitlist request holds its largest
    #: candidate fee when it joins).  Off: bookings touch no money.
    require_cover: bool = False
    #: When a held fee is charged: "check_in" (the held amount, at check-in)
    #: or "visit" (the host calls ``engine.credit.settle(booking, amount)``
    #: with the visit's bill; the hold stays until then).
    settle_at: str = "check_in"
    #: Credit line kinds: the starting limit, the floor and ceiling that
    #: repayment history moves it within, and the step of one move (fen).
    credit_lines: Mapping[str, CreditTerms] = field(
        default_factory=lambda: MappingProxyType({
            "outpatient": CreditTerms(30_000, 10_000, 100_000, 10_000),
            "inpatient": CreditTerms(500_000, 100_000, 2_000_000, 100_000),
        })
    )
    #: This many bills in a row paid by their due date raise the limit a step
    #: (an overdue bill cuts it a step and suspends the line until paid); 0: off.
    credit_raise_after: int = 3
    #: A bill on the credit line is due this many days after its visit ...
    bill_due_days: int = 30
    #: ... and BILL_DUE_SOON is sent this many days before that (0: never).
    bill_notice_days: int = 3
    #: An external credit score (e.g. 350..950) picks a limit tier: the last
    #: row (min_score, percent of the kind's start limit) with min_score <=
    #: score; the limit is then kept within the kind's floor and ceiling.
    credit_score_tiers: tuple[tuple[int, int], ...] = ((350, 50), (550, 100), (650, 150), (750, 200))

    def __post_init__(self) -> None:
        _check_channels(self)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int",) and (type(value) is not int):
                raise InvalidType(f"Policy.{f.name} must be an int, not {type(value).__name__}")
            if f.type == "bool" and type(value) is not bool:
                raise InvalidType(f"Policy.{f.name} must be a bool, not {type(value).__name__}")
        _range(self, "utc_offset_minutes", -14 * 60, 14 * 60)
        _range(self, "release_days_default", 0, 366)
        _range(self, "release_minute_of_day", 0, 24 * 60 - 1)
        _range(self, "rollover_minutes", 0, 366 * 24 * 60)
        _range(self, "session_minutes", 1, 24 * 60)
        _range(self, "hold_minutes", 1, 24 * 60)
        _range(self, "cancel_cutoff_minutes", -24 * 60, 30 * 24 * 60)
        _range(self, "account_patients", 0, 1000)
        _range(self, "account_window_days", 1, 3660)
        _range(self, "strike_window_days", 1, 3660)
        _range(self, "cancel_strikes", 0, 100)
        _range(self, "cancel_window_days", 1, 3660)
        _range(self, "prequeue_minutes", 0, 24 * 60)
        _range(self, "cohort_seconds", 0, 24 * 3600)
        _range(self, "outflow_per_second", 0, 1000)
        _range(self, "slow_delay_seconds", 0, 24 * 3600)
        _range(self, "slow_rate_per_minute", 1, 60_000)
        _range(self, "slow_burst", 1, 1000)
        _range(self, "early_seconds", 0, 3600)
        _range(self, "rebook_seconds", 0, 24 * 3600)
        _range(self, "flag_days", 1, 3660)
        _range(self, "waitlist_candidates", 1, 8)
        _range(self, "waitlist_per_patient", 1, 100)
        _range(self, "waitlist_per_session", 1, 1_000_000)
        _range(self, "noshow_release_minutes", 0, 24 * 60)
        _check_waitlist(self)
        _check_credit(self)
        for name in ("early_flag", "cancel_flag", "patients_flag"):
            object.__setattr__(self, name, _threshold(getattr(self, name), name))
        if not isinstance(self.release_days, Mapping):
            raise InvalidType("Policy.release_days must be a mapping of channel -> days")
        for ch, days in self.release_days.items():
            if ch not in self.channels:
                raise PolicyError(f"Policy.release_days names unknown channel {ch!r}")
            if type(days) is not int or not 0 <= days <= 366:
                raise PolicyError(f"Policy.release_days[{ch!r}] must be an int in 0..366")
        object.__setattr__(self, "release_days", MappingProxyType(dict(self.release_days)))
        object.__setattr__(self, "patient_limits", _table(self.patient_limits))
        bans = self.ban_days
        if not isinstance(bans, (tuple, list)) or not bans:
            raise PolicyError("Policy.ban_days must be a non-empty sequence of days")
        for d in bans:
            if type(d) is not int or not 0 <= d <= 3660:
                raise PolicyError("Policy.ban_days entries must be ints in 0..3660")
        object.__setattr__(self, "ban_days", tuple(bans))

    def release_lead_days(self, channel: str) -> int:
        """Days before the session's day that ``channel``'s quota opens by default."""
        return self.release_days.get(channel, self.release_days_default)

    def compile(self) -> CorePolicy:
        """The integer form both engines take."""
        return CorePolicy(
            n_channels=len(self.channels),
            public_channel=self.channels.index(self.public_channel),
            hold_ms=self.hold_minutes * MINUTE,
            patient_limits=tuple((n, d * DAY) for n, d in self.patient_limits),
            one_per_department_day=self.one_per_department_day,
            account_patients=self.account_patients,
            account_window_ms=self.account_window_days * DAY,
            bar_first_visit_expert=self.bar_first_visit_expert,
            ban_ms=tuple(d * DAY for d in self.ban_days),
            strike_window_ms=self.strike_window_days * DAY,
            cancel_strikes=self.cancel_strikes,
            cancel_window_ms=self.cancel_window_days * DAY,
            prequeue_ms=self.prequeue_minutes * MINUTE,
            cohort_ms=self.cohort_seconds * SECOND,
            outflow_gap_ms=SECOND // self.outflow_per_second if self.outflow_per_second else 0,
            slow_delay_ms=self.slow_delay_seconds * SECOND,
            slow_interval_ms=max(1, MINUTE // self.slow_rate_per_minute),
            slow_burst=self.slow_burst,
            early_ms=self.early_seconds * SECOND,
            early_count=self.early_flag[0],
            early_window_ms=self.early_flag[1] * DAY,
            cancel_flag_count=self.cancel_flag[0],
            cancel_flag_window_ms=self.cancel_flag[1] * DAY,
            patients_flag_count=self.patients_flag[0],
            patients_flag_window_ms=self.patients_flag[1] * DAY,
            rebook_ms=self.rebook_seconds * SECOND,
            flag_ms=self.flag_days * DAY,
            wl_classes=len(self.waitlist_classes),
            wl_candidates=self.waitlist_candidates,
            wl_per_patient=self.waitlist_per_patient,
            wl_session_cap=self.waitlist_per_session,
            rerelease_min_ms=self.rerelease_seconds[0] * SECOND,
            rerelease_max_ms=self.rerelease_seconds[1] * SECOND,
            noshow_grace_ms=self.noshow_release_minutes * MINUTE,
            suspend_action=_SUSPEND_ACTIONS.index(self.on_suspend),
            cover=self.require_cover,
            settle_at_check_in=self.settle_at == "check_in",
            credit_terms=tuple((t.start, t.floor, t.ceiling, t.step)
                               for t in (self.credit_lines[k] for k in _LINE_KINDS)),
            credit_raise_after=self.credit_raise_after,
            bill_due_ms=self.bill_due_days * DAY,
            bill_notice_ms=self.bill_notice_days * DAY,
        )

    def score_limit(self, kind: str, score: int) -> int:
        """The limit (fen) a credit score gives a line of ``kind`` (see ``credit_score_tiers``)."""
        terms = self.credit_lines[kind]
        pct = 0
        for lo, p in self.credit_score_tiers:
            if score >= lo:
                pct = p
        return min(max(terms.start * pct // 100, terms.floor), terms.ceiling)

    def waitlist_class(self, channel: str) -> str:
        """The priority class a request from ``channel`` joins by default."""
        by_channel = self.waitlist_class_of_channel
        assert by_channel is not None  # __post_init__ fills in the default
        return by_channel.get(channel, self.waitlist_classes[-1])


_SUSPEND_ACTIONS = ("cancel", "move", "waitlist")
_LINE_KINDS = ("outpatient", "inpatient")   # LineKind 1, 2
MAX_FEN = 1_000_000_000_000                 # the largest fee, limit or amount (10^10 yuan)


def _check_credit(p: Policy) -> None:
    _range(p, "credit_raise_after", 0, 1000)
    _range(p, "bill_due_days", 1, 3660)
    _range(p, "bill_notice_days", 0, 3660)
    if p.bill_notice_days >= p.bill_due_days and p.bill_notice_days:
        raise PolicyError("Policy.bill_notice_days must be less than bill_due_days (or 0)")
    if type(p.settle_at) is not str:
        raise InvalidType(f"Policy.settle_at must be a str, not {type(p.settle_at).__name__}")
    if p.settle_at not in ("check_in", "visit"):
        raise PolicyError(f"Policy.settle_at must be 'check_in' or 'visit', not {p.settle_at!r}")
    lines = p.credit_lines
    if not isinstance(lines, Mapping):
        raise InvalidType("Policy.credit_lines must be a mapping of kind -> CreditTerms")
    if set(lines) != set(_LINE_KINDS):
        raise PolicyError(f"Policy.credit_lines must name exactly {_LINE_KINDS}")
    out = {}
    for kind in _LINE_KINDS:
        row = lines[kind]
        if not isinstance(row, (tuple, list)) or len(row) != 4:
            raise InvalidType(f"Policy.credit_lines[{kind!r}] must be (start, floor, ceiling, step)")
        if any(type(v) is not int for v in row):
            raise InvalidType(f"Policy.credit_lines[{kind!r}] must hold ints (fen)")
        t = CreditTerms(*row)
        if not 0 <= t.floor <= t.start <= t.ceiling <= MAX_FEN or not 0 <= t.step <= MAX_FEN:
            raise PolicyError(
                f"Policy.credit_lines[{kind!r}]={tuple(t)}: need 0 <= floor <= start <= ceiling"
                f" <= {MAX_FEN} and 0 <= step")
        out[kind] = t
    object.__setattr__(p, "credit_lines", MappingProxyType(out))
    tiers = p.credit_score_tiers
    if not isinstance(tiers, (tuple, list)):
        raise InvalidType("Policy.credit_score_tiers must be a sequence of (min_score, percent) rows")
    if not tiers:
        raise PolicyError("Policy.credit_score_tiers must have at least one row")
    rows: list[tuple[int, int]] = []
    for tier in tiers:
        if not isinstance(tier, (tuple, list)) or len(tier) != 2 or any(type(v) is not int for v in tier):
            raise PolicyError(f"Policy.credit_score_tiers row {tier!r} is not (min_score, percent)")
        lo, pct = tier
        if not 0 <= lo <= 10_000 or not 0 <= pct <= 10_000:
            raise PolicyError(f"Policy.credit_score_tiers row {tier!r}: score and percent in 0..10000")
        if rows and lo <= rows[-1][0]:
            raise PolicyError("Policy.credit_score_tiers must ascend by min_score")
        rows.append((lo, pct))
    object.__setattr__(p, "credit_score_tiers", tuple(rows))


def _check_waitlist(p: Policy) -> None:
    classes = p.waitlist_classes
    if not isinstance(classes, (tuple, list)) or not classes:
        raise PolicyError("Policy.waitlist_classes must be a non-empty sequence of names")
    for c in classes:
        if type(c) is not str or not c.strip():
            raise PolicyError(f"Policy.waitlist_classes entries must be non-empty strings, not {c!r}")
    if len(set(classes)) != len(classes) or len(classes) > 8:
        raise PolicyError("Policy.waitlist_classes must be at most 8 distinct names")
    object.__setattr__(p, "waitlist_classes", tuple(classes))
    by_channel = p.waitlist_class_of_channel
    if by_channel is None:
        by_channel = {ch: ch for ch in p.channels if ch in p.waitlist_classes}
    if not isinstance(by_channel, Mapping):
        raise InvalidType("Policy.waitlist_class_of_channel must be a mapping of channel -> class")
    for ch, cls in by_channel.items():
        if ch not in p.channels:
            raise PolicyError(f"Policy.waitlist_class_of_channel names unknown channel {ch!r}")
        if cls not in p.waitlist_classes:
            raise PolicyError(f"Policy.waitlist_class_of_channel[{ch!r}] is not a waitlist class: {cls!r}")
    object.__setattr__(p, "waitlist_class_of_channel", MappingProxyType(dict(by_channel)))
    row = p.rerelease_seconds
    if not isinstance(row, (tuple, list)) or len(row) != 2:
        raise InvalidType("Policy.rerelease_seconds must be a (min, max) pair")
    lo, hi = row
    if type(lo) is not int or type(hi) is not int or not 0 <= lo <= hi <= 24 * 3600:
        raise PolicyError(f"Policy.rerelease_seconds={row!r}: need 0 <= min <= max <= 86400")
    object.__setattr__(p, "rerelease_seconds", (lo, hi))
    if type(p.on_suspend) is not str:
        raise InvalidType(f"Policy.on_suspend must be a str, not {type(p.on_suspend).__name__}")
    if p.on_suspend not in _SUSPEND_ACTIONS:
        raise PolicyError(f"Policy.on_suspend must be one of {_SUSPEND_ACTIONS}, not {p.on_suspend!r}")


def _check_channels(p: Policy) -> None:
    chans = p.channels
    if not isinstance(chans, (tuple, list)) or not chans:
        raise PolicyError("Policy.channels must be a non-empty sequence of names")
    for ch in chans:
        if type(ch) is not str or not ch.strip():
            raise PolicyError(f"Policy.channels entries must be non-empty strings, not {ch!r}")
    if len(set(chans)) != len(chans):
        raise PolicyError("Policy.channels has duplicates")
    if len(chans) > 32:
        raise PolicyError("Policy.channels allows at most 32 channels")
    object.__setattr__(p, "channels", tuple(chans))
    if p.public_channel not in p.channels:
        raise PolicyError(f"Policy.public_channel {p.public_channel!r} is not one of the channels")


def _range(p: Policy, name: str, lo: int, hi: int) -> None:
    v = getattr(p, name)
    if not lo <= v <= hi:
        raise PolicyError(f"Policy.{name}={v} is outside {lo}..{hi}")


def _threshold(row: object, name: str) -> tuple[int, int]:
    if not isinstance(row, (tuple, list)) or len(row) != 2:
        raise InvalidType(f"Policy.{name} must be a (count, days) pair")
    n, d = row
    if type(n) is not int or type(d) is not int or not 0 <= n <= 1000 or not 1 <= d <= 3660:
        raise PolicyError(f"Policy.{name}={row!r}: count in 0..1000 (0 = off), days in 1..3660")
    return (n, d)


def _table(rows: object) -> tuple[tuple[int, int], ...]:
    if not isinstance(rows, (tuple, list)):
        raise InvalidType("Policy.patient_limits must be a sequence of (count, days) rows")
    out = []
    for row in rows:
        if not isinstance(row, (tuple, list)) or len(row) != 2:
            raise PolicyError(f"Policy.patient_limits row {row!r} is not (count, days)")
        n, d = row
        if type(n) is not int or type(d) is not int or not 1 <= n <= 1000 or not 1 <= d <= 3660:
            raise PolicyError(f"Policy.patient_limits row {row!r}: count in 1..1000, days in 1..3660")
        out.append((n, d))
    if len(out) > 8:
        raise PolicyError("Policy.patient_limits has at most 8 rows")
    return tuple(out)
