"""The ``slotengine`` command line: ``simulate`` a rush under several policies, ``bench``.

    slotengine simulate [--preset NAME | --scenario FILE] [--policies P ...] [--seed N]
                        [--out DIR] [--json]
    slotengine bench [pytest arguments ...]

``simulate`` prints a table (or JSON) of ``slotengine.simulate.Metrics`` per
policy and, with ``--out``, writes ``report.md`` and a PNG plot per metric
family (matplotlib, the ``sim`` extra; without it the report says so).  Bad
arguments or a bad scenario file: a one-line message and exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from .errors import SlotEngineError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from .simulate import POLICIES, PRESETS

    p = argparse.ArgumentParser(prog="slotengine", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate", help="compare policies on a synthetic booking rush")
    src = sim.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=sorted(PRESETS), default=None,
                     help="a named scenario (default: small)")
    src.add_argument("--scenario", type=Path, help="a scenario file (.json or .toml)")
    sim.add_argument("--policies", nargs="+", metavar="POLICY", choices=list(POLICIES),
                     help=f"policies to compare (default: all of {', '.join(POLICIES)})")
    sim.add_argument("--seed", type=int, help="override the scenario's seed")
    sim.add_argument("--out", type=Path, help="write report.md and plots into this directory")
    sim.add_argument("--json", action="store_true", help="print the metrics as JSON")
    sub.add_parser("bench", help="run the benchmark suite (from a source checkout); "
                   "further arguments go to pytest")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``slotengine`` script and ``python -m slotengine``."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "simulate":
            return _simulate(args)
        return _bench(extra)
    except (SlotEngineError, OSError) as exc:
        print(f"slotengine: error: {exc}", file=sys.stderr)
        return 2


def _simulate(args: argparse.Namespace) -> int:
    from . import simulate as sim

    if args.scenario is not None:
        scenario = sim.Scenario.from_file(args.scenario)
        label = str(args.scenario)
    else:
        label = args.preset or "small"
        scenario = sim.PRESETS[label]
    if args.seed is not None:
        if not 0 <= args.seed < 2**63:
            raise SlotEngineError(f"--seed {args.seed} is outside 0 .. 2**63-1")
        scenario = dataclasses.replace(scenario, seed=args.seed)
    names = list(args.policies or sim.POLICIES)
    t0 = time.perf_counter()
    _progress(f"generating {label} (seed {scenario.seed}) ...")
    world = sim.generate(scenario)
    results: dict[str, sim.Metrics] = {}
    with _Progress(len(names) * sim.run_phases(world)) as bar:
        for i, name in enumerate(names, 1):
            results[name] = sim.run(world, name, progress=bar.phases(f"[{i}/{len(names)}] {name}"))
    _progress(f"done in {time.perf_counter() - t0:.1f} s")
    if args.json:
        print(json.dumps({"scenario": label, "seed": scenario.seed,
                          "policies": {n: m.to_dict() for n, m in results.items()}}, indent=2))
    else:
        print(_table([m.as_row() for m in results.values()]))
    if args.out is not None:
        path = write_report(args.out, label, scenario.seed, results)
        if not args.json:
            print(f"\nreport: {path}")
    return 0


def _progress(text: str) -> None:
    """One line of progress on stderr (the table or JSON on stdout stays clean)."""
    print(text, file=sys.stderr, flush=True)


class _Progress:
    """Phases of the runs on stderr: a tqdm bar on a terminal, else one line per policy.

    (A log or a pipe gets plain lines; tqdm is in the ``sim`` extra, and without
    it a terminal gets the plain lines too.)
    """

    def __init__(self, total: int) -> None:
        self.bar = None
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm  # type: ignore[import-untyped]
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, unit="phase", file=sys.stderr, leave=False,
                                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
        self.last = ""

    def phases(self, head: str) -> Callable[[str], None]:
        """The ``progress`` callback of one run, its lines headed ``head``."""
        return lambda phase: self.step(f"{head}: {phase}")

    def step(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=False)
            self.bar.update(1)
            return
        head = text.split(":")[0]
        if head != self.last:  # one line per policy
            self.last = head
            _progress(f"{head} ...")

    def __enter__(self) -> "_Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _table(rows: list[dict[str, object]]) -> str:
    """Rows as an aligned plain-text table, one column per key."""
    keys = list(rows[0])
    cells = [[str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = "  ".join(k.ljust(w) for k, w in zip(keys, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
            for row in cells]
    return "\n".join(out)


def write_report(directory: Path, label: str, seed: int, results: dict) -> Path:
    """``report.md`` (the table, in Markdown) and the plots, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [m.as_row() for m in results.values()]
    keys = list(rows[0])
    md = [f"# Policy comparison: {label} (seed {seed})", "",
          "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    md += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    plots = _plots(directory, results)
    md += [""]
    if plots:
        md += [f"![{title}]({name})" for name, title in plots]
    else:
        md += ["(No plots: matplotlib is not installed; `pip install slotengine[sim]`.)"]
    path = directory / "report.md"
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return path


_TIME_TICKS = [(0.01, "10 ms"), (0.1, "0.1 s"), (1, "1 s"), (10, "10 s"), (60, "1 min"),
               (600, "10 min"), (3600, "1 h"), (6 * 3600, "6 h"), (86400, "1 d"), (7 * 86400, "1 wk"),
               (30 * 86400, "30 d")]


def _plots(directory: Path, results: dict) -> list[tuple[str, str]]:
    """The report's PNG plots, as (file, title); [] without matplotlib.

    Bars of the headline rates per policy; expert slots taken over time after
    the release; and the distributions of genuine patients' time to a slot
    and of waitlist waits (empirical CDFs on a log time axis).
    """
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results)
    cmap = plt.get_cmap("tab10")
    colors = {n: cmap(i % 10) for i, n in enumerate(names)}
    out = []

    def time_axis(ax, label: str) -> None:  # type: ignore[no-untyped-def]
        """A log axis of seconds, ticked in human units."""
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        ticks = [(t, lab) for t, lab in _TIME_TICKS if lo <= t <= hi]
        ax.set_xticks([t for t, _ in ticks], [lab for _, lab in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label, fontsize=8)

    def save(fig, file: str, title: str) -> None:  # type: ignore[no-untyped-def]
        fig.tight_layout()
        fig.savefig(directory / file, dpi=100)
        plt.close(fig)
        out.append((file, title))

    for file, title, values in (
            ("scalper_share.png", "Share of expert slots won by scalpers",
             [results[n].scalper_expert_share for n in names]),
            ("genuine_success.png", "Genuine patients who got a slot",
             [results[n].genuine_success_rate for n in names])):
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.bar(names, values, color="#4477aa")
        ax.set_ylim(0, 1)
        ax.set_title(title)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        for i, v in enumerate(values):
            ax.annotate(f"{v:.1%}", (i, v), ha="center", va="bottom", fontsize=8)
        save(fig, file, title)

    timelines = {n: results[n].timeline for n in names if results[n].timeline is not None}
    if not timelines:
        return out
    # Slots taken over time: from 10 ms to the latest booking, log-spaced.
    latest = max((float(t.taken_ms[-1]) for t in timelines.values() if len(t.taken_ms)), default=1.0)
    at = np.geomspace(10.0, max(latest, 100.0), 400)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for n, t in timelines.items():
        everyone, scalpers = t.taken_curve(at)
        ax.plot(at / 1000, everyone, color=colors[n], label=n)
        ax.plot(at / 1000, scalpers, color=colors[n], linestyle="--", linewidth=1)
    time_axis(ax, "time after the channel's release (log scale)")
    ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_ylabel("expert bookings made\n(share of expert slots)", fontsize=8)
    title = "Expert slots taken after the release (dashed: by scalpers)"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    save(fig, "slots_over_time.png", title)
    # Time-to-slot distributions.
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, attr, label in ((axes[0], "genuine_wait_ms", "release -> first booking (genuine)"),
                            (axes[1], "waitlist_wait_ms", "waitlist join -> fill")):
        for n, t in timelines.items():
            waits = np.maximum(getattr(t, attr), 1) / 1000
            if len(waits):
                ax.step(waits, np.arange(1, len(waits) + 1) / len(waits), where="post",
                        color=colors[n], label=n)
        time_axis(ax, f"{label} (log scale)")
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    axes[0].set_ylabel("share of those served")
    axes[0].legend(fontsize=7)
    title = "Time to a slot (empirical CDF)"
    fig.suptitle(title, fontsize=10)
    save(fig, "time_to_slot.png", title)
    return out


def _bench(pytest_args: list[str]) -> int:
    """Run ``pytest benchmarks`` from the source checkout this package lives in (or cwd)."""
    here = Path(__file__).resolve().parents[2]
    root = next((d for d in (Path.cwd(), here) if (d / "benchmarks").is_dir()), None)
    if root is None:
        raise SlotEngineError("no benchmarks/ directory here: run from a source checkout")
    cmd = [sys.executable, "-m", "pytest", str(root / "benchmarks"), "-q",
           "--benchmark-columns=median,ops,rounds", "--benchmark-sort=name", *pytest_args]
    return subprocess.call(cmd, cwd=root, env=dict(os.environ))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
