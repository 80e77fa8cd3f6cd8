"""Hypothesis strategies for testing code that embeds slotengine.

A host application (a booking front end, a queue worker, a hospital system
adapter) wants property tests against realistic engine input: valid policies,
clinic sessions whose quotas add up, and booking rushes around a release with
bursts, retries and families booked from one account.  This module builds
them from hypothesis' draws, so every failure shrinks and replays.

Needs hypothesis (``pip install hypothesis``); it is the only slotengine
module that imports it.  Times are int milliseconds (``se.to_ms``), money is
int fen, and everything is deterministic given hypothesis' draws.

Strategies (all composable; pass a value to hold a part fixed):

* ``policies(**fixed)``: valid ``Policy`` objects; fixed fields are kept.
* ``session_spec(id, ...)`` / ``session_specs(...)`` (alias ``sessions``):
  keyword dicts for ``Engine.add_session(**spec)``, quotas summing to capacity.
* ``arrival_streams(specs, ...)``: time-ordered ``Arrival`` requests around a
  release; ``engine.book(**arrival._asdict())`` books one.
* ``rush_scenarios(...)``: a whole ``Scenario`` (arrivals, cancellations,
  waitlist joins, 停诊 suspensions, prepaid funding when the policy requires
  cover); ``build_engine(scenario)`` makes the Engine, ``run_rush(scenario)``
  drives it, and ``check_rush(engine, results)`` asserts the invariants
  every run must keep.

Usage::

    from hypothesis import given
    import slotengine as se
    import slotengine.testing as sst

    @given(sst.rush_scenarios())
    def test_my_host_never_double_books(scenario):
        engine, results = sst.run_rush(scenario)
        sst.check_rush(engine, results)

    # session_specs() assumes the default channels; pass policy= when yours differ
    @given(sst.policies(cohort_seconds=0, prequeue_minutes=0), sst.session_specs(max_size=2))
    def test_first_come_first_served(policy, specs):
        engine = se.Engine(policy=policy, seed=1)
        for spec in specs:
            engine.add_session(**spec)
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

try:
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("slotengine.testing needs hypothesis: pip install hypothesis") from exc

from .engine import Engine, Event
from .errors import UnknownBooking
from .outcomes import BookingState, Status, Tier
from .policy import Policy
from .times import DAY, HOUR, MINUTE, SECOND, to_ms

__all__ = [
    "DEFAULT_START",
    "LIVE",
    "Arrival",
    "Cancellation",
    "Scenario",
    "Suspension",
    "WaitlistJoin",
    "all_bookings",
    "arrival_streams",
    "build_engine",
    "check_rush",
    "policies",
    "run_rush",
    "rush_scenarios",
    "session_spec",
    "session_specs",
    "sessions",
]

CST = timezone(timedelta(hours=8))
#: The clinic day sessions are built around unless a ``start`` is given (08:00 CST).
DEFAULT_START = to_ms(datetime(2026, 12, 1, 8, 0, tzinfo=CST))
HOSPITALS = ("协和", "同仁", "H3")
DEPARTMENTS = ("心内科", "眼科", "儿科")
DOCTORS = ("Dr Li", "Dr Wang", "Dr Zhang", "Dr Chen")
TIERS = tuple(t.name.lower() for t in Tier)
LIVE = (BookingState.HELD, BookingState.BOOKED)


def _maybe(value: Any) -> SearchStrategy[Any]:
    """A strategy as it is; a plain value as ``st.just(value)``."""
    return value if isinstance(value, SearchStrategy) else st.just(value)


# -- policies ---------------------------------------------------------------------------

def _threshold(counts: Sequence[int], days: Sequence[int]) -> SearchStrategy[tuple[int, int]]:
    return st.tuples(st.sampled_from(counts), st.sampled_from(days))


#: Sane ranges for the rule fields ``policies()`` varies.  Small numbers, so that
#: limits, flags, holds and cohorts actually bite in a short test.
_POLICY_FIELDS: dict[str, SearchStrategy[Any]] = {
    "hold_minutes": st.integers(1, 30),
    "cancel_cutoff_minutes": st.sampled_from([0, 8 * 60, 24 * 60]),
    "patient_limits": st.sampled_from([(), ((1, 1),), ((2, 1), (3, 7)), ((2, 1), (3, 7), (5, 90))]),
    "one_per_department_day": st.booleans(),
    "account_patients": st.integers(0, 6),
    "account_window_days": st.integers(1, 30),
    "bar_first_visit_expert": st.booleans(),
    "ban_days": st.sampled_from([(30, 60, 90), (1,), (7, 14)]),
    "cancel_strikes": st.integers(0, 4),
    "prequeue_minutes": st.sampled_from([0, 1, 5]),
    "cohort_seconds": st.sampled_from([0, 10, 60]),
    "outflow_per_second": st.sampled_from([0, 0, 5, 20]),
    "slow_delay_seconds": st.sampled_from([0, 5, 30]),
    "slow_rate_per_minute": st.integers(1, 60),
    "slow_burst": st.integers(1, 5),
    "early_seconds": st.integers(0, 5),
    "early_flag": _threshold([0, 2, 5], [1, 7]),
    "cancel_flag": _threshold([0, 2, 4], [30]),
    "patients_flag": _threshold([0, 2, 4], [30]),
    "rebook_seconds": st.sampled_from([0, 10]),
    "flag_days": st.integers(1, 30),
    "waitlist_candidates": st.integers(1, 8),
    "waitlist_per_patient": st.integers(1, 5),
    "waitlist_per_session": st.sampled_from([1, 10, 500]),
    "rerelease_seconds": st.sampled_from([(0, 0), (5, 5), (30, 300)]),
    "noshow_release_minutes": st.sampled_from([0, 0, 15]),
    "on_suspend": st.sampled_from(["move", "waitlist", "cancel"]),
    "require_cover": st.sampled_from([False, False, False, True]),
    "settle_at": st.sampled_from(["check_in", "visit"]),
}
_POLICY_NAMES = frozenset(f.name for f in fields(Policy))


def policies(**fixed: Any) -> SearchStrategy[Policy]:
    """Valid ``Policy`` objects with the rule fields drawn from small, sane ranges.

    Each keyword names a Policy field and holds it fixed (a plain value) or
    draws it from a strategy you pass.  Fields not varied here (channels,
    release lead days, credit terms, ...) keep their defaults unless given.
    When ``channels`` is fixed, ``public_channel`` and ``release_days`` follow
    it unless also given.  A bad combination raises ``PolicyError`` when drawn.
    """
    unknown = set(fixed) - _POLICY_NAMES
    if unknown:
        raise TypeError(f"policies() got unknown Policy fields: {sorted(unknown)}")
    parts: dict[str, SearchStrategy[Any]] = {k: v for k, v in _POLICY_FIELDS.items()
                                             if k not in fixed}
    chans = fixed.get("channels")
    if isinstance(chans, (tuple, list)) and chans:
        if "public_channel" not in fixed:
            parts["public_channel"] = st.just("app" if "app" in chans else chans[0])
        if "release_days" not in fixed:
            lead = {ch: d for ch, d in Policy().release_days.items() if ch in chans}
            parts["release_days"] = st.just(lead)
    parts.update({k: _maybe(v) for k, v in fixed.items()})
    return st.fixed_dictionaries(parts).map(lambda kw: Policy(**kw))


# -- sessions ---------------------------------------------------------------------------

def _default_release(policy: Policy, start: int) -> int:
    """When the public channel opens by default for a session starting at ``start``."""
    off = policy.utc_offset_minutes * MINUTE
    day_start = ((start + off) // DAY) * DAY - off
    return day_start - policy.release_days_default * DAY + policy.release_minute_of_day * MINUTE


@st.composite
def session_spec(draw: Any, session_id: str, *, policy: Policy | None = None,
                 start: int = DEFAULT_START, release_at: int | None = None,
                 days: int = 0, hospitals: Sequence[str] = HOSPITALS,
                 departments: Sequence[str] = DEPARTMENTS, doctors: Sequence[str] = DOCTORS,
                 max_capacity: int = 30) -> dict[str, Any]:
    """One ``Engine.add_session`` keyword dict for session ``session_id``.

    The session starts on ``start``'s day (or up to ``days`` days later) in
    the morning (``start``) or afternoon (5.5 h later).  Capacity is 1 to
    ``max_capacity``, split into quotas over a few of the policy's channels
    that sum to it exactly (the public channel always has a quota, maybe 0).
    The public channel releases at ``release_at`` (default: the policy's
    default release for ``start``); other channels at the same instant, a
    few seconds to minutes later, or weeks earlier (referral-style).  Every
    release is before the session starts.  The fee is whole yuan, in fen.
    """
    pol = policy if policy is not None else Policy()
    starts_at = start + draw(st.integers(0, days)) * DAY + draw(st.sampled_from([0, 330])) * MINUTE
    rel0 = release_at if release_at is not None else _default_release(pol, start)
    capacity = draw(st.integers(1, max_capacity))
    others = [ch for ch in pol.channels if ch != pol.public_channel]
    chosen = draw(st.lists(st.sampled_from(others), max_size=min(3, len(others)), unique=True)
                  ) if others else []
    quotas: dict[str, int] = {}
    left = capacity
    for ch in sorted(chosen, key=pol.channels.index):
        quotas[ch] = draw(st.integers(0, left))
        left -= quotas[ch]
    quotas[pol.public_channel] = left
    release = {pol.public_channel: rel0}
    for ch in chosen:
        release[ch] = rel0 + draw(st.sampled_from([0, 0, 5 * SECOND, 10 * MINUTE, -21 * DAY]))
    if max(release.values()) >= starts_at:
        raise ValueError(f"release_at={rel0} is not before the session start {starts_at}")
    return {
        "session": session_id,
        "hospital": draw(st.sampled_from(list(hospitals))),
        "department": draw(st.sampled_from(list(departments))),
        "doctor": draw(st.sampled_from(list(doctors))),
        "tier": draw(st.sampled_from(TIERS)),
        "starts_at": starts_at,
        "slot_minutes": draw(st.sampled_from([5, 9, 10, 15])),
        "capacity": capacity,
        "fee": draw(st.integers(0, 500)) * 100,
        "quotas": quotas,
        "release": release,
    }


@st.composite
def session_specs(draw: Any, *, min_size: int = 1, max_size: int = 4, prefix: str = "S",
                  policy: Policy | None = None, start: int = DEFAULT_START,
                  release_at: int | None = None, days: int = 0,
                  hospitals: Sequence[str] = HOSPITALS, departments: Sequence[str] = DEPARTMENTS,
                  doctors: Sequence[str] = DOCTORS, max_capacity: int = 30) -> list[dict[str, Any]]:
    """A list of ``session_spec`` dicts with unique ids ``{prefix}0``, ``{prefix}1``, ...

    Hospitals, departments and doctors come from small pools, so sessions
    share doctors and departments (which the per-department-day rule,
    停诊 moves and the waitlist care about).  Every session's public channel
    releases at the same instant (``release_at``, default: the policy's
    default release for ``start``), so one rush reaches them all.
    """
    n = draw(st.integers(min_size, max_size))
    return [draw(session_spec(f"{prefix}{i}", policy=policy, start=start, release_at=release_at,
                              days=days, hospitals=hospitals, departments=departments,
                              doctors=doctors, max_capacity=max_capacity))
            for i in range(n)]


#: Same as ``session_specs``.
sessions = session_specs


# -- arrivals ---------------------------------------------------------------------------

class Arrival(NamedTuple):
    """One booking request; ``engine.book(**arrival._asdict())`` sends it."""

    account: str
    patient: str
    session: str
    channel: str | None
    now: int
    hold: bool = False


class Cancellation(NamedTuple):
    """Cancel the booking that ``arrivals[arrival]`` got (if any), at ``now``, by its account."""

    arrival: int
    now: int


class WaitlistJoin(NamedTuple):
    """A waitlist request (候补); ``engine.join_waitlist(**join._asdict())`` sends it."""

    account: str
    patient: str
    sessions: tuple[str, ...]
    deadline: int
    channel: str | None
    now: int


class Suspension(NamedTuple):
    """停诊: ``engine.suspend(session, now=now)``."""

    session: str
    now: int


def _release_of(specs: Sequence[dict[str, Any]], policy: Policy) -> int:
    rel = [spec["release"].get(policy.public_channel) for spec in specs]
    known = [r for r in rel if r is not None]
    return min(known) if known else _default_release(policy, min(s["starts_at"] for s in specs))


@st.composite
def arrival_streams(draw: Any, specs: Sequence[dict[str, Any]], *, policy: Policy | None = None,
                    release_at: int | None = None, min_size: int = 1, max_size: int = 40,
                    max_accounts: int = 6, max_patients: int = 10, burst_ms: int = 3 * SECOND,
                    holds: bool = True) -> list[Arrival]:
    """Booking requests for ``specs``' sessions around a release, sorted by time.

    Accounts ``A0..`` each book for a family of patients ``P0..`` (one account,
    several patients); sometimes a patient is booked from another account.
    Times cluster in a burst in the first ``burst_ms`` after ``release_at``
    (default: the earliest public-channel release), with some in the
    pre-queue minutes before it and some up to 10 minutes after; a share of
    requests are retries of an earlier one (same patient and session, a
    little later).  Channels are mostly the public pool (None), sometimes a
    channel the session has a quota for.  Ties keep draw order.
    """
    if not specs:
        raise ValueError("arrival_streams needs at least one session spec")
    pol = policy if policy is not None else Policy()
    rel = release_at if release_at is not None else _release_of(specs, pol)
    n_acc = draw(st.integers(1, max_accounts))
    n_pat = draw(st.integers(1, max_patients))
    family = [draw(st.integers(0, n_acc - 1)) for _ in range(n_pat)]  # patient -> its account
    offsets = st.one_of(
        st.integers(0, burst_ms),                           # the burst
        st.integers(0, burst_ms),
        st.integers(-5 * MINUTE, -1),                       # pre-queue
        st.integers(burst_ms, 10 * MINUTE),                 # stragglers
    )
    out: list[Arrival] = []
    for _ in range(draw(st.integers(min_size, max_size))):
        if out and draw(st.integers(0, 4)) == 0:            # a retry of an earlier request
            prev = out[draw(st.integers(0, len(out) - 1))]
            out.append(prev._replace(now=prev.now + draw(st.integers(0, 2 * SECOND))))
            continue
        p = draw(st.integers(0, n_pat - 1))
        a = family[p] if draw(st.integers(0, 5)) else draw(st.integers(0, n_acc - 1))
        spec = specs[draw(st.integers(0, len(specs) - 1))]
        chans = [ch for ch, q in spec["quotas"].items() if q and ch != pol.public_channel]
        channel = draw(st.sampled_from([None, None, None, *chans]))
        hold = holds and draw(st.integers(0, 7)) == 0
        out.append(Arrival(f"A{a}", f"P{p}", spec["session"], channel,
                           max(0, rel + draw(offsets)), hold))
    out.sort(key=lambda r: r.now)
    return out


# -- scenarios --------------------------------------------------------------------------

Step = Arrival | Cancellation | WaitlistJoin | Suspension


@dataclass(frozen=True)
class Scenario:
    """A whole rush: the rules, the seed, the sessions and what happens to them.

    ``funds`` are prepaid top-ups (patient, fen) made before the rush, so a
    policy with ``require_cover`` books those patients.
    """

    policy: Policy
    seed: int
    sessions: list[dict[str, Any]]
    arrivals: list[Arrival]
    cancellations: list[Cancellation] = field(default_factory=list)
    joins: list[WaitlistJoin] = field(default_factory=list)
    suspensions: list[Suspension] = field(default_factory=list)
    funds: list[tuple[str, int]] = field(default_factory=list)

    def steps(self) -> Iterator[Step]:
        """Every step merged by time; on a tie: arrivals, cancellations, joins, suspensions."""
        for _, step in self._indexed_steps():
            yield step

    def _indexed_steps(self) -> list[tuple[int, Step]]:
        """``(index in its list, step)`` in ``steps()`` order."""
        keyed: list[tuple[int, int, int, Step]] = []
        groups: tuple[Sequence[Step], ...] = (self.arrivals, self.cancellations, self.joins,
                                               self.suspensions)
        for kind, steps in enumerate(groups):
            keyed += [(x.now, kind, i, x) for i, x in enumerate(steps)]
        return [(i, step) for _, _, i, step in sorted(keyed, key=lambda k: k[:3])]

    @property
    def end(self) -> int:
        """A time after every step and every cohort (when ``run_rush`` stops)."""
        last = max([x.now for _, x in self._indexed_steps()] + [0])
        return last + self.policy.cohort_seconds * SECOND + 30 * MINUTE


@st.composite
def rush_scenarios(draw: Any, *, policy: Policy | SearchStrategy[Policy] | None = None,
                   min_sessions: int = 1, max_sessions: int = 3, max_capacity: int = 10,
                   max_arrivals: int = 40, max_accounts: int = 6, max_patients: int = 10,
                   cancellations: bool = True, waitlist: bool = True,
                   suspensions: bool = True) -> Scenario:
    """A release rush: policy, seed, sessions, arrivals and (optionally) what follows.

    ``policy`` is a Policy, a strategy of them, or None for ``policies()``.
    Capacities are small (``max_capacity``) so that rushes sell out.
    Cancellations pick an earlier arrival and cancel whatever it got, a
    little (seconds to an hour) after it arrived.  Waitlist joins come from
    an earlier arrival's patient and account, for its session and maybe one
    more, a little after it (so a freed slot can fill them); a suspension
    stops one session some time into the rush.  With ``require_cover`` most
    patients are funded (``Scenario.funds``), some not, so NO_COVER happens.
    """
    pol = draw(policies() if policy is None else _maybe(policy))
    specs = draw(session_specs(min_size=min_sessions, max_size=max_sessions, policy=pol,
                               max_capacity=max_capacity))
    arrivals = draw(arrival_streams(specs, policy=pol, max_size=max_arrivals,
                                    max_accounts=max_accounts, max_patients=max_patients))
    later = st.sampled_from([SECOND, 30 * SECOND, 2 * MINUTE, 60 * MINUTE])
    cancels: list[Cancellation] = []
    if cancellations:
        for _ in range(draw(st.integers(0, max(0, len(arrivals) // 4)))):
            i = draw(st.integers(0, len(arrivals) - 1))
            cancels.append(Cancellation(i, arrivals[i].now + draw(later)))
    joins: list[WaitlistJoin] = []
    if waitlist:
        names = [spec["session"] for spec in specs]
        for _ in range(draw(st.integers(0, max(0, len(arrivals) // 4)))):
            a = arrivals[draw(st.integers(0, len(arrivals) - 1))]
            more = [x for x in names if x != a.session][:pol.waitlist_candidates - 1]
            extra = draw(st.lists(st.sampled_from(more), max_size=1, unique=True)) if more else []
            now = a.now + draw(later)
            joins.append(WaitlistJoin(a.account, a.patient, (a.session, *extra),
                                      now + draw(st.sampled_from([MINUTE, HOUR, DAY])), a.channel, now))
    halts: list[Suspension] = []
    if suspensions and draw(st.integers(0, 3)) == 0:
        a = arrivals[draw(st.integers(0, len(arrivals) - 1))]
        halts.append(Suspension(draw(st.sampled_from([spec["session"] for spec in specs])),
                                a.now + draw(later)))
    funds: list[tuple[str, int]] = []
    if pol.require_cover:
        top = 2 * max(spec["fee"] for spec in specs) + 1
        for p in sorted({a.patient for a in arrivals}):
            if draw(st.integers(0, 4)):  # one in five left unfunded
                funds.append((p, draw(st.integers(1, top))))
    return Scenario(pol, draw(st.integers(0, 2**63 - 1)), specs, arrivals, cancels, joins, halts,
                    funds)


def build_engine(scenario: Scenario, *, backend: str = "core") -> Engine:
    """A fresh Engine with the scenario's policy, seed and sessions (no requests yet)."""
    engine = Engine(policy=scenario.policy, seed=scenario.seed, backend=backend)
    for spec in scenario.sessions:
        engine.add_session(**spec)
    for patient, fen in scenario.funds:
        engine.credit.top_up(patient, fen, now=engine.now)
    return engine


def _booking_of(engine: Engine, result: Any) -> int | None:
    """The booking an arrival's result has by now (a queued ticket's once served)."""
    if result is None:
        return None
    if result.booking is not None:
        return int(result.booking)
    if result.status == Status.QUEUED and result.ticket is not None:
        b = engine.ticket(result.ticket).booking
        return None if b is None else int(b)
    return None


def run_rush(scenario: Scenario, *, backend: str = "core", events: list[Event] | None = None
             ) -> tuple[Engine, list[tuple[Step, Any]]]:
    """Drive a fresh Engine through the scenario; return it and ``(step, result)`` pairs.

    Steps run in time order (``Scenario.steps``).  Every step but an arrival
    first advances the clock to its time (so queued cohorts are served).  A
    cancellation cancels its arrival's booking by the arrival's account (its
    result is None when the arrival got no booking); a join's result is
    ``join_waitlist``'s, a suspension's ``suspend``'s count.  Finally the engine
    advances to ``scenario.end`` so that every cohort is drawn.  Events are
    appended to ``events`` when a list is given.
    """
    engine = build_engine(scenario, backend=backend)
    sink: list[Event] = events if events is not None else []
    got: dict[int, Any] = {}  # arrival index -> its result
    results: list[tuple[Step, Any]] = []
    for i, step in scenario._indexed_steps():
        if isinstance(step, Arrival):
            r = engine.book(**step._asdict())
            got[i] = r
            results.append((step, r))
            continue
        sink.extend(engine.advance(max(step.now, engine.now)))
        if isinstance(step, Cancellation):
            b = _booking_of(engine, got.get(step.arrival))
            acct = scenario.arrivals[step.arrival].account
            results.append((step, None if b is None else engine.cancel(b, account=acct,
                                                                        now=step.now)))
        elif isinstance(step, WaitlistJoin):
            results.append((step, engine.join_waitlist(
                step.account, step.patient, list(step.sessions), deadline=step.deadline,
                channel=step.channel, now=step.now)))
        else:
            results.append((step, engine.suspend(step.session, now=step.now)))
    sink.extend(engine.advance(max(scenario.end, engine.now)))
    return engine, results


# -- checks -----------------------------------------------------------------------------

def all_bookings(engine: Engine) -> list[Any]:
    """Every booking the engine has made, as ``BookingInfo``, by id."""
    out = []
    b = 0
    while True:
        try:
            out.append(engine.booking(b))
        except UnknownBooking:
            return out
        b += 1


def check_rush(engine: Engine, results: Sequence[tuple[Any, Any]] = ()) -> None:
    """Assert what every run must keep, whatever the rules.

    The engine's own invariants hold; no slot has two live bookings; no
    patient has two live bookings in one session; a live booking's slot is
    within its session's capacity; every BOOKED/HELD result names a booking
    the engine has for that step's patient and session; a waitlist request
    was filled at most once, with a booking of its patient in one of its
    candidates; no balance is negative and the money ledger sums to zero.
    """
    engine._check_invariants()
    books = all_bookings(engine)
    live = [b for b in books if b.state in LIVE]
    slots = [(b.session, b.slot) for b in live]
    assert len(slots) == len(set(slots)), "a slot has two live bookings"
    pairs = [(b.patient, b.session) for b in live]
    assert len(pairs) == len(set(pairs)), "a patient holds two live bookings in one session"
    for b in live:
        assert 1 <= b.slot <= engine.session(b.session).capacity
    for step, r in results:
        if isinstance(step, Arrival) and r is not None and r.status in (Status.BOOKED, Status.HELD):
            info = books[r.booking]
            assert (info.patient, info.session, info.slot) == (step.patient, step.session, r.slot)
    filled = [b.request for b in books if b.request is not None]
    assert len(filled) == len(set(filled)), "a waitlist request was filled twice"
    for step, r in results:
        if isinstance(step, WaitlistJoin) and r is not None and r.status == Status.WAITLISTED:
            w = engine.waitlist(r.request)
            assert w.patient == step.patient and w.sessions == step.sessions
            if w.booking is not None:
                b = books[w.booking]
                assert b.patient == w.patient and b.session in w.sessions and b.request == w.id
    assert sum(engine.credit.totals().values()) == 0, "the money ledger does not balance"
    for p in {b.patient for b in books}:
        assert engine.credit.statement(p).balance >= 0
