"""The examples must keep running: newcomers copy from them.

Every ``examples/*.py`` is picked up by ``test_example_runs`` (a new file
needs no change here): it runs as a script in a fresh interpreter, with
random string hashing, must exit 0 within ``TIMEOUT`` seconds, and asserts
its own claims.  ``examples/service/`` is not run here: it has its own test
(tests/test_service.py); property_test_example.py also runs under pytest
in tests/test_testing.py.  The other tests check what some examples print,
and that they print the same twice; they reuse the first run's output, so
each example runs once, plus once per determinism test.
"""
from __future__ import annotations

import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: seconds one example may take (they take 0.2 to 2 s on the 2-core machine)
TIMEOUT = 60
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))


def _fresh(script: str) -> str:
    """Run one example in a new interpreter; its stdout (stderr on failure)."""
    env = dict(os.environ, PYTHONHASHSEED="random")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], check=False,
                          capture_output=True, text=True, encoding="utf-8", timeout=TIMEOUT,
                          env=env)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


@cache
def _run(script: str) -> str:
    """The output of the first run of ``script`` in this session."""
    return _fresh(script)


def _without_timing(out: str) -> list[str]:
    return [line for line in out.splitlines() if "throughput" not in line]


def test_examples_are_found() -> None:
    for name in ("host_embedding.py", "policy_comparison.py", "property_test_example.py",
                 "rush_demo.py"):
        assert name in SCRIPTS, name


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script: str) -> None:
    """Each example runs as a newcomer would run it, and says what it is in a docstring."""
    source = (EXAMPLES / script).read_text(encoding="utf-8")
    assert source.startswith('"""'), f"{script} should open with a docstring saying what it shows"
    assert _run(script).strip(), f"{script} printed nothing"


def test_host_embedding_tells_the_story() -> None:
    out = _run("host_embedding.py")
    for text in ("周奶奶 via referral: booked, slot 1",
                 "not open yet: app booking opens 24 Nov 08:30",
                 "in the release draw (ticket 0)", "staff log: COHORT_DRAWN LI-1201-AM",
                 "from the waitlist", "staff log: QUOTA_ROLLED LI-1201-AM",
                 "filled from waitlist request"):
        assert text in out, text
    assert out.count("in the draw") == 4 and out.count("no slot this time") == 2


def test_host_embedding_is_deterministic() -> None:
    assert _fresh("host_embedding.py") == _run("host_embedding.py")


def test_policy_comparison_prints_every_policy() -> None:
    out = _run("policy_comparison.py")
    lines = out.splitlines()
    for name in ("fcfs", "lottery", "lottery+slow", "+waitlist", "+credit", "strict"):
        assert any(line.split()[:1] == [name] for line in lines), name
    assert "is refused: Policy.slow_rate_per_minute=0" in out
    assert "over five seeds" in out


def test_policy_comparison_is_deterministic() -> None:
    assert _fresh("policy_comparison.py") == _run("policy_comparison.py")


def test_rush_demo_runs_and_reports() -> None:
    out = _run("rush_demo.py")
    for heading in ("Sessions and slots", "Rejections by reason", "Slots by state after the day",
                    "Events by kind", "explain() of a booking", "explain() of a rejection",
                    "Batch path"):
        assert heading in out, heading
    lines = out.splitlines()
    assert any(line.split()[:2] == ["sessions", "72"] for line in lines)
    # Scalpers hit the per-account and per-patient limits; holds expire; the day ends.
    for word in ("ACCOUNT_PATIENT_LIMIT", "PATIENT_LIMIT", "FIRST_VISIT_EXPERT", "HOLD_EXPIRED",
                 "NO_SHOW", "SESSION_SUSPENDED", "QUOTA_ROLLED", "CAPACITY_ADDED"):
        assert word in out, word
    assert "REJECTED at the eligibility stage: ACCOUNT_PATIENT_LIMIT" in out
    assert "book_many() throughput" in out


def test_rush_demo_is_deterministic() -> None:
    # Same seeds, different string hashing: the same day, bar the timing line.
    assert _without_timing(_fresh("rush_demo.py")) == _without_timing(_run("rush_demo.py"))


def test_fair_release_demo_runs_and_reports() -> None:
    out = _run("fair_release.py")
    for heading in ("Arrivals (the same for both runs)", "Fair release (default Policy",
                    "position() of ticket", "explain(ticket=...) of a winner",
                    "explain(ticket=...) of a slow-lane ticket", "flag_log()",
                    "First come, first served", "Summary"):
        assert heading in out, heading
    lines = out.splitlines()

    def row(label: str, section: str) -> list[str]:
        """The words after ``label`` on its line, in the part of the output after ``section``."""
        start = next(i for i, line in enumerate(lines) if line.startswith(section))
        line = next(x for x in lines[start:] if x.strip().startswith(label))
        return line.strip()[len(label):].split()

    # The bots are caught (by the early-requests rule, or the blacklist) and throttled.
    assert "EARLY_REQUESTS" in out and "BLACKLIST" in out and "THROTTLED" in out
    assert "in the slow lane" in out and "lottery draw" in out
    assert "cohort collecting" in out and "cohort closed and drawn" in out
    # The slow lane never beats a fair lane that outnumbers the slots.
    assert row("slow", "Fair release")[1] == "0"
    fair_bot = float(row("bot win rate", "Fair release")[0].rstrip("%"))
    fair_genuine = float(row("genuine win rate", "Fair release")[0].rstrip("%"))
    fcfs_bot = float(row("bot win rate", "First come")[0].rstrip("%"))
    fcfs_genuine = float(row("genuine win rate", "First come")[0].rstrip("%"))
    assert fair_bot <= fair_genuine and fcfs_bot > 10 * fcfs_genuine
    assert fcfs_bot > fair_bot and fair_genuine > fcfs_genuine
    assert row("slots taken by bots", "First come")[0] == "10"  # 5 per account x 2 accounts


def test_fair_release_demo_is_deterministic() -> None:
    assert _fresh("fair_release.py") == _run("fair_release.py")


def test_waitlist_demo_runs_and_reports() -> None:
    out = _run("waitlist_demo.py")
    for heading in ("Waitlist first (default Policy)", "Hand-offs (scalper cancels",
                    "A week of ordinary cancellations", "停诊 of Chen/Wed/PM", "Waitlist outcome",
                    "Events by kind", "explain(request=...) of a referral request",
                    "Open re-booking", "Summary"):
        assert heading in out, heading
    # The waitlist takes every handed-off slot; without it every hand-off works.
    assert "hand-offs that reached the buyer   0 of 6 waitlist first  vs 6 of 6 open" in out
    assert "REJECTED SLOTS_LEFT" in out and "(FLAGGED); it keeps its place" in out
    assert "BOOKING_MOVED" in out and "BOOKING_WAITLISTED" in out
    assert "referral requests filled: 8 of 8" in out


def test_waitlist_demo_is_deterministic() -> None:
    assert _fresh("waitlist_demo.py") == _run("waitlist_demo.py")


def test_credit_demo_runs_and_reports() -> None:
    out = _run("credit_demo.py")
    for heading in ("Treat first, pay later", "Statements at the end", "Events by kind",
                    "The ledger (double entry, fen)", "explain() of the refused booking"):
        assert heading in out, heading
    # No cover, then a suspended line, refuse bookings; repaying reinstates it;
    # three bills paid on time raise Wang's limit a step; the books balance.
    assert "小张 books W00 with no card and no line: REJECTED NO_COVER" in out
    assert "赵大爷 books W07: REJECTED CREDIT_SUSPENDED" in out
    assert "event CREDIT_REINSTATED 赵大爷" in out
    assert "event LIMIT_CHANGED     王阿姨  limit now 400.00 yuan" in out
    assert "(sum 0)" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.startswith("  ") and line.split() and line.split()[0] in ("王阿姨", "赵大爷")}
    assert rows["王阿姨"][:3] == ["0.00", "open", "400.00"]
    assert rows["赵大爷"][:4] == ["0.00", "suspended", "100.00", "20.00"]


def test_credit_demo_is_deterministic() -> None:
    assert _fresh("credit_demo.py") == _run("credit_demo.py")


def test_durable_demo_recovers_every_acknowledged_booking() -> None:
    # the demo itself exits non-zero if a booking is missing or the hash differs
    out = _run("durable_demo.py")
    assert "killed: True" in out
    assert "3,000 results acknowledged, 3,000 of them BOOKED" in out
    assert "acknowledged bookings present, same patient, session and slot: 3,000 of 3,000" in out
    assert "fed the same 3,000 requests: True" in out
