"""pytest-benchmark plumbing for ``make bench`` (``pytest benchmarks``).

* collects ``bench_*.py`` (the project's ``testpaths`` only names ``tests/``,
  and pytest's default pattern is ``test_*.py``);
* gives benchmarks a session-wide ``report`` to record what one round did
  (how many bookings) and any text lines;
* prints, after pytest-benchmark's own table, bookings per second from each
  median and the core/reference speed-up measured in this same run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

_REPORT = pytest.StashKey["Report"]()


def pytest_collect_file(file_path, parent):  # type: ignore[no-untyped-def]
    # A file named on the command line is already collected by pytest's python
    # plugin (initial paths bypass ``python_files``): do not collect it twice.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@dataclass
class Report:
    """What the benchmarks measured, for the summary at the end of the run."""

    #: group -> backend -> (operations per round, median seconds per round)
    medians: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)
    #: group -> target operations per second for the compiled core
    targets: dict[str, float] = field(default_factory=dict)
    #: free-form sections: title -> lines
    sections: dict[str, list[str]] = field(default_factory=dict)

    def record(self, group: str, backend: str, ops_per_round: int, benchmark: object,
               target: float | None = None) -> None:
        """Remember the median of a finished ``benchmark.pedantic`` run."""
        stats = getattr(benchmark, "stats", None)
        if stats is None:  # --benchmark-disable: nothing was timed
            return
        self.medians.setdefault(group, {})[backend] = (ops_per_round, stats.stats.median)
        if target is not None:
            self.targets[group] = target


@pytest.fixture(scope="session")
def report(pytestconfig: pytest.Config) -> Report:
    return pytestconfig.stash.setdefault(_REPORT, Report())


def _rate(x: float) -> str:
    return f"{x / 1e6:8.2f} M/s" if x >= 1e6 else f"{x / 1e3:8.1f} k/s"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):  # type: ignore[no-untyped-def]
    rep = config.stash.get(_REPORT, None)
    if rep is None or not (rep.medians or rep.sections):
        return
    tr = terminalreporter
    tr.section("slotengine throughput (per operation, from the median round)")
    tr.write_line(f"{'group':<10} {'backend':<10} {'ops/round':>10} {'median':>11} "
                  f"{'ops/s':>12}  {'vs reference':>12}  target")
    for group, by_backend in rep.medians.items():
        ref = by_backend.get("reference")
        ref_rate = ref[0] / ref[1] if ref else None
        for backend, (n, median) in by_backend.items():
            rate = n / median
            ratio = f"x {rate / ref_rate:.1f}" if ref_rate else "-"
            goal = ""
            if backend == "core" and group in rep.targets:
                t = rep.targets[group]
                goal = f">= {_rate(t).strip()}: {'met' if rate >= t else 'NOT met'}"
            tr.write_line(f"{group:<10} {backend:<10} {n:>10,} {median * 1e3:>8.2f} ms "
                          f"{_rate(rate)}  {ratio:>12}  {goal}")
    for title, lines in rep.sections.items():
        tr.section(title)
        for line in lines:
            tr.write_line(line)
