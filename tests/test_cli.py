"""The ``slotengine`` command line, end to end (``python -m slotengine``)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from slotengine.cli import main


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slotengine", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_simulate_prints_a_table_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = _run("simulate", "--preset", "small", "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("policy") and "scalper expert share" in lines[0]
    assert [ln.split()[0] for ln in lines[2:7]] == ["fcfs", "lottery", "lottery+slow",
                                                    "+waitlist", "+credit"]
    assert "[5/5] +credit" in done.stderr            # progress goes to stderr
    report = (out / "report.md").read_text(encoding="utf-8")
    assert report.startswith("# Policy comparison: small (seed 1)")
    assert report.count("\n| ") == 6                  # header + 5 policies
    pytest.importorskip("matplotlib")
    for png in ("scalper_share.png", "genuine_success.png", "slots_over_time.png", "time_to_slot.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in report


def test_simulate_json_is_deterministic_and_matches_the_library() -> None:
    from slotengine import simulate as sim

    a = _run("simulate", "--policies", "fcfs", "lottery", "--seed", "5", "--json")
    b = _run("simulate", "--policies", "fcfs", "lottery", "--seed", "5", "--json")
    assert a.returncode == 0, a.stderr
    da, db = json.loads(a.stdout), json.loads(b.stdout)
    for d in (da, db):
        for m in d["policies"].values():  # timing fields differ run to run
            m.pop("engine_seconds"), m.pop("requests_per_second")
    assert da == db and list(da["policies"]) == ["fcfs", "lottery"] and da["seed"] == 5
    import dataclasses
    world = sim.generate(dataclasses.replace(sim.PRESETS["small"], seed=5))
    want = sim.run(world, "lottery")
    assert da["policies"]["lottery"]["scalper_expert_share"] == want.scalper_expert_share
    assert da["policies"]["lottery"]["requests"] == want.requests
    p10, p50, p90 = da["policies"]["lottery"]["genuine_wait_ms_p10_p50_p90"]
    assert p10 <= p50 == want.genuine_median_ms <= p90


def test_simulate_a_scenario_file(tmp_path: Path) -> None:
    f = tmp_path / "tiny.json"
    f.write_text(json.dumps({"preset": "small", "seed": 9}), encoding="utf-8")
    done = _run("simulate", "--scenario", str(f), "--policies", "fcfs", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["seed"] == 9


@pytest.mark.parametrize("args, message", [
    (["simulate", "--preset", "nowhere"], "invalid choice: 'nowhere'"),
    (["simulate", "--policies", "bribery"], "invalid choice: 'bribery'"),
    (["simulate", "--preset", "small", "--scenario", "x.json"], "not allowed with argument"),
    (["simulate", "--seed", "abc"], "invalid int value"),
    (["simulate", "--seed", "-1"], "outside 0"),
    (["simulate", "--scenario", "missing.json"], "slotengine: error:"),
    (["simulate", "--scenario", "bad.json"], "slotengine: error:"),
    (["fly"], "invalid choice: 'fly'"),
    ([], "required: command"),
])
def test_bad_arguments_exit_non_zero_with_a_message(tmp_path: Path, args: list[str],
                                                     message: str) -> None:
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    done = _run(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]  # nothing written


def test_main_returns_the_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--policies", "fcfs"]) == 0
    assert "fcfs" in capsys.readouterr().out
    assert main(["simulate", "--seed", str(2**63)]) == 2


def test_a_terminal_gets_a_progress_bar(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["simulate", "--policies", "fcfs", "lottery"]) == 0
    err = capsys.readouterr().err
    assert "0/8 [" in err                                    # 2 policies x 4 phases
    assert "[1/2] fcfs ..." not in err                       # no plain lines on a terminal


def test_bench_runs_pytest_on_the_benchmarks() -> None:
    # selecting nothing: pytest collects the benchmarks and exits 5 (no tests ran)
    root = Path(__file__).resolve().parent.parent
    done = _run("bench", "-k", "no_benchmark_is_called_this", cwd=root)
    assert done.returncode == 5, done.stdout[-2000:] + done.stderr[-2000:]
    assert "deselected" in done.stdout
