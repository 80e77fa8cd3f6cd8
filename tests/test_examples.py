"""The examples must keep running: newcomers copy from them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(script: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED="random")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True,
                          text=True, encoding="utf-8", timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _without_timing(out: str) -> list[str]:
    return [line for line in out.splitlines() if "throughput" not in line]


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
    assert _without_timing(_run("rush_demo.py")) == _without_timing(_run("rush_demo.py"))
