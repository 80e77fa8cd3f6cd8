"""Fair release, statistically: the lottery, not arrival speed, decides who wins.

Every test runs on both backends (conftest's ``backend`` fixture) through the
public ``Engine``.  Seeds are fixed, so each statistic is a fixed number: the
tests are deterministic, and the bounds (chi-square at p = 0.001, binomial at
4 standard deviations) are loose enough that a correct lottery passes with
room to spare while a biased one (first come, first served; a fixed
permutation; the last arrival always first) fails by a wide margin.

Critical values are hard-coded (scipy is not a dependency): chi-square with 9
degrees of freedom, upper 0.1 % point = 27.877.
"""
from __future__ import annotations

import math

import pytest

import slotengine as se
from slotengine import EventKind as EK
from slotengine import Reason as R
from slotengine import Status as St
from slotengine.outcomes import TicketState as TS
from slotengine.times import DAY, HOUR, MINUTE, SECOND

T0 = 1_800_000_000_000  # the release of every test session ("app" channel)
START = T0 // DAY * DAY + 10 * DAY
CHI2_9DF_P001 = 27.877
N = 10  # requests per cohort
SEEDS = 400  # trials for the statistics

# Fair release on (5 min pre-queue, 60 s cohort window, all at once), risk
# signals that a single request per account cannot trip.
FAIR = dict(prequeue_minutes=5, cohort_seconds=60, outflow_per_second=0,
            early_flag=(0, 1), cancel_flag=(0, 30), patients_flag=(0, 30), rebook_seconds=0)


def make(backend: str, seed: int, capacity: int = 1, **policy: object) -> se.Engine:
    e = se.Engine(policy=se.Policy(**{**FAIR, **policy}), seed=seed, backend=backend)
    e.add_session("S1", hospital="H1", department="Cardiology", doctor="Dr Li", tier="general",
                  starts_at=START, slot_minutes=10, capacity=capacity, fee=6000,
                  release={"app": T0}, now=T0 - HOUR)
    return e


def rush(e: se.Engine, times: list[int]) -> list[int]:
    """Patient i (own account) asks at ``times[i]``; every request is QUEUED.  Returns tickets."""
    tickets = []
    for i, t in enumerate(times):
        r = e.book(f"A{i}", f"P{i}", "S1", "app", now=t)
        assert r.status == St.QUEUED and r.reason == R.NONE, r
        assert r.slot is None and r.booking is None and r.ticket is not None
        tickets.append(r.ticket)
    return tickets


def winners(e: se.Engine, tickets: list[int]) -> list[int]:
    """Close the cohort; return the arrival indexes of the served tickets."""
    events = e.advance(T0 + 60 * SECOND)
    served = [ev.detail for ev in events if ev.kind == EK.TICKET_SERVED]
    drawn = [ev for ev in events if ev.kind == EK.COHORT_DRAWN]
    assert len(drawn) == 1 and drawn[0].detail == len(tickets)
    return [tickets.index(k) for k in served]


# Arrivals: 6 in the pre-queue, 4 in the window after the release.
SPREAD = [T0 - 5 * MINUTE + 7 * SECOND * i for i in range(6)] + \
         [T0 + 10 * SECOND * i for i in range(4)]


def chi_square(counts: list[int], expected: float) -> float:
    return sum((c - expected) ** 2 / expected for c in counts)


@pytest.mark.parametrize("capacity", [1, 3])
def test_every_arrival_position_is_equally_likely_to_win(backend, capacity):
    counts = [0] * N
    for seed in range(SEEDS):
        e = make(backend, seed, capacity)
        won = winners(e, rush(e, SPREAD))
        assert len(won) == capacity and len(set(won)) == capacity
        for i in won:
            counts[i] += 1
    expected = SEEDS * capacity / N
    stat = chi_square(counts, expected)
    assert stat < CHI2_9DF_P001, f"positions {counts} (expected {expected} each): chi2={stat:.1f}"
    # Not degenerate either: every position wins sometimes.
    assert min(counts) > 0


def test_a_bot_that_always_arrives_first_wins_no_more_than_anyone(backend):
    """The bot asks at the first allowed millisecond, everyone else later; 1 slot."""
    wins = 0
    for seed in range(SEEDS):
        e = make(backend, seed)
        times = [T0 - 5 * MINUTE] + [T0 + 5 * SECOND * i for i in range(1, N)]
        if winners(e, rush(e, times)) == [0]:
            wins += 1
    p = 1 / N
    mean, sd = SEEDS * p, math.sqrt(SEEDS * p * (1 - p))
    assert abs(wins - mean) <= 4 * sd, f"bot won {wins}/{SEEDS}, fair share {mean:.0f} ± {4 * sd:.0f}"


def test_the_lottery_ranks_are_a_permutation_of_the_cohort(backend):
    e = make(backend, 11, capacity=N)
    tickets = rush(e, SPREAD)
    for k in tickets:
        pos = e.position(k)
        assert pos.state == TS.QUEUED and pos.ahead is None and pos.draw is None  # collecting
    winners(e, tickets)
    draws = [e.ticket(k).draw for k in tickets]
    assert sorted(draws) == list(range(N))
    assert all(e.ticket(k).cohort_size == N for k in tickets)
    assert all(e.ticket(k).state == TS.SERVED for k in tickets)
    # Slots go out in draw order: the lowest draw gets slot 1.
    slot_of = {e.ticket(k).draw: e.booking(e.ticket(k).booking).slot for k in tickets}
    assert [slot_of[d] for d in range(N)] == list(range(1, N + 1))


def test_flagged_accounts_are_served_after_the_fair_cohort(backend):
    """3 flagged accounts arrive first; with 7 slots all 7 fair requests win."""
    for seed in range(20):
        e = make(backend, seed, capacity=7)
        e.intern_accounts([f"A{i}" for i in range(3)])
        for i in range(3):
            e.flag(account=f"A{i}", reason="host", until=T0 + DAY, now=T0 - 10 * MINUTE)
        tickets = rush(e, SPREAD)
        won = winners(e, tickets)
        assert sorted(won) == list(range(3, N)), f"seed {seed}: winners {won}"
        assert won == [tickets.index(k) for k in sorted(
            tickets[3:], key=lambda k: e.ticket(k).draw)]  # served in draw order
        for i, k in enumerate(tickets):
            t = e.ticket(k)
            assert t.lane == ("slow" if i < 3 else "fair")
            if i < 3:  # ranked after every fair ticket; failed: the session is full
                assert t.draw >= 7 and t.state == TS.FAILED and t.reason == R.FULL
            else:
                assert t.draw < 7 and t.state == TS.SERVED


def test_same_seed_same_commands_same_state(backend):
    hashes = []
    for _ in range(2):
        e = make(backend, 1234, capacity=3)
        winners(e, rush(e, SPREAD))
        hashes.append(e.state_hash())
    assert hashes[0] == hashes[1]


def test_different_seeds_draw_differently(backend):
    perms = set()
    for seed in range(20):
        e = make(backend, seed, capacity=N)
        tickets = rush(e, SPREAD)
        winners(e, tickets)
        perms.add(tuple(e.ticket(k).draw for k in tickets))
    assert len(perms) == 20  # 10! orders: twenty seeds, twenty different draws


def test_backends_agree_on_the_draw():
    hashes, draws = [], []
    for backend in ("core", "reference"):
        e = make(backend, 99, capacity=4)
        tickets = rush(e, SPREAD)
        winners(e, tickets)
        hashes.append(e.state_hash())
        draws.append([e.ticket(k).draw for k in tickets])
    assert draws[0] == draws[1] and hashes[0] == hashes[1]


def test_outflow_gap_serves_one_per_gap_and_positions_only_move_forward(backend):
    e = make(backend, 5, capacity=N, outflow_per_second=2)  # one ticket per 500 ms
    tickets = rush(e, SPREAD)
    close = T0 + 60 * SECOND
    e.advance(close)  # draws, serves the first
    by_draw = sorted(tickets, key=lambda k: e.ticket(k).draw)
    assert e.ticket(by_draw[0]).state == TS.SERVED
    last = {k: e.position(k).ahead for k in by_draw[1:]}
    assert [last[k] for k in by_draw[1:]] == list(range(N - 1))
    for step in range(1, N):
        events = e.advance(close + step * 500)
        assert [ev.detail for ev in events if ev.kind == EK.TICKET_SERVED] == [by_draw[step]]
        for k in by_draw[step + 1:]:
            ahead = e.position(k).ahead
            assert ahead is not None and ahead < last[k]
            last[k] = ahead
    assert all(e.ticket(k).served_at == close + e.ticket(k).draw * 500 for k in tickets)


def test_a_late_request_joins_the_tail_of_a_draining_queue(backend):
    e = make(backend, 5, capacity=N, outflow_per_second=1)  # one per second
    tickets = rush(e, SPREAD[:4])
    e.advance(T0 + 60 * SECOND)
    late = e.book("Z", "PZ", "S1", "app", now=T0 + 60 * SECOND + 100)
    assert late.status == St.QUEUED
    assert e.position(late.ticket).ahead == 3 and e.ticket(late.ticket).draw is None
    e.advance(T0 + 64 * SECOND)
    assert e.ticket(late.ticket).state == TS.SERVED
    assert e.ticket(late.ticket).served_at == T0 + 64 * SECOND
    assert all(e.ticket(k).state == TS.SERVED for k in tickets)


def test_cancel_ticket_and_duplicate_ticket(backend):
    e = make(backend, 3, capacity=2)
    tickets = rush(e, SPREAD[:3])
    dup = e.book("A0", "P0", "S1", "app", now=T0 + SECOND)
    assert (dup.status, dup.reason) == (St.REJECTED, R.DUPLICATE_TICKET)
    assert e.cancel_ticket(tickets[0], account="A1", now=T0 + SECOND).reason == R.NOT_OWNER
    r = e.cancel_ticket(tickets[0], account="A0", now=T0 + 2 * SECOND)
    assert r.status == St.CANCELLED and r.ticket == tickets[0]
    again = e.cancel_ticket(tickets[0], account="A0", now=T0 + 3 * SECOND)
    assert (again.status, again.reason) == (St.REJECTED, R.NOT_ACTIVE)
    winners(e, tickets)  # the cancelled ticket is drawn too but never served
    assert e.ticket(tickets[0]).state == TS.CANCELLED
    assert {e.ticket(k).state for k in tickets[1:]} == {TS.SERVED}


def test_slow_lane_outside_a_release_is_delayed_and_throttled(backend):
    e = make(backend, 1, capacity=5, slow_delay_seconds=30, slow_rate_per_minute=6,
             slow_burst=1)  # T = 10 s, no burst
    t = T0 + HOUR  # long after the release: no cohort
    assert e.book("A", "P1", "S1", "app", now=t).status == St.BOOKED
    e.intern_accounts(["B"])
    e.flag(account="B", reason="host", until=t + DAY, now=t)
    r = e.book("B", "P2", "S1", "app", now=t + 1)
    assert r.status == St.QUEUED and e.position(r.ticket).ahead == 0
    th = e.book("B", "P3", "S1", "app", now=t + 2)
    assert (th.status, th.reason, th.retry_after) == (St.REJECTED, R.THROTTLED, 10 * SECOND - 1)
    assert e.book("B", "P3", "S1", "app", now=t + 1 + 10 * SECOND).status == St.QUEUED
    events = e.advance(t + 1 + 30 * SECOND)
    assert [ev.detail for ev in events if ev.kind == EK.TICKET_SERVED] == [r.ticket]
    assert e.ticket(r.ticket).served_at == t + 1 + 30 * SECOND
