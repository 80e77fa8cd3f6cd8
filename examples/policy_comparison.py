"""Comparing booking policies from Python with ``slotengine.simulate``.

A policy analyst's question: what share of expert slots do scalper rings win
under each policy, and what does each cost genuine patients? This script

1. builds a small city with ``Scenario.from_dict`` (the fields a scenario
   file holds; unnamed fields come from the ``small`` preset),
2. runs the built-in policies (``POLICIES``) on it with ``compare`` and
   prints the key ``Metrics`` as a table,
3. defines a policy of its own (a ``PolicySetup``: an engine ``Policy`` plus
   what the platform does around it) and runs it on the same world with
   ``generate`` and ``run``,
4. repeats the headline figure over five seeds: one seed is one city.

Run it: ``python examples/policy_comparison.py`` (about 1 s). The command
line does the same with a report and plots: ``slotengine simulate``.
"""
from __future__ import annotations

import dataclasses
import statistics

import slotengine as se
import slotengine.simulate as sim

# 1. A scenario: one hospital more than the preset, three rings of four accounts
# each, bots that fire within 20 ms of a release. Everything is seeded.
scenario = sim.Scenario.from_dict({
    "preset": "small", "seed": 11, "hospitals": 3, "genuine": 2_000,
    "rings": 3, "ring_accounts": 4, "bot_reaction_ms": 20,
})


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:6.1%}"


def table(results: dict[str, sim.Metrics]) -> None:
    print(f"{'policy':<14} {'scalper share':>13} {'genuine ok':>10} {'median wait':>11} "
          f"{'waitlist fill':>13} {'utilization':>11} {'hand-offs':>9} {'flags FP/TP':>11}")
    # flags FP/TP: genuine accounts flagged (false positives) / ring accounts flagged
    for name, m in results.items():
        wait = "-" if m.genuine_median_ms is None else f"{m.genuine_median_ms / 1000:.1f} s"
        print(f"{name:<14} {pct(m.scalper_expert_share):>13} {pct(m.genuine_success_rate):>10} "
              f"{wait:>11} {pct(m.waitlist_fill_rate):>13} {pct(m.utilization):>11} "
              f"{m.handoffs:>9} {f'{m.flagged_genuine}/{m.flagged_scalper}':>11}")


# 2. The built-in policies, in order: each adds one defence to the one before.
print(f"Scenario: {scenario.hospitals} hospitals, {scenario.genuine:,} genuine patients, "
      f"{scenario.rings} rings x {scenario.ring_accounts} accounts, seed {scenario.seed}")
print("Policies:", ", ".join(sim.POLICIES))
results = sim.compare(scenario)  # every policy replays the same generated world
table(results)

# Same scenario, same Metrics: the timing fields are left out of ==.
assert sim.compare(scenario, ["lottery"])["lottery"] == results["lottery"]
assert results["fcfs"].scalper_expert_share > results["lottery+slow"].scalper_expert_share

# 3. A policy of your own: the slow lane made stricter (a flag after 2 early
# requests instead of 5, 2 slow-lane requests a minute instead of 6) and a
# shorter hiding time for freed slots. Start from a built-in one and change
# fields: Policy and PolicySetup are frozen dataclasses, validated on creation.
base = sim.POLICIES["+waitlist"]
strict = dataclasses.replace(
    base, name="strict",
    policy=dataclasses.replace(base.policy, early_flag=(2, 1), slow_rate_per_minute=2,
                               rerelease_seconds=(10, 60)),
)
world = sim.generate(scenario)  # compare() does this once for all policies
mine = {name: sim.run(world, name) for name in ("lottery+slow", "+waitlist")}
mine["strict"] = sim.run(world, strict)
print("\nA custom policy beside the two it derives from:")
table(mine)
assert mine["+waitlist"] == results["+waitlist"]
s, w = mine["strict"], mine["+waitlist"]
print(f"strict vs +waitlist: scalper share {s.scalper_expert_share:.1%} vs "
      f"{w.scalper_expert_share:.1%}; genuine accounts flagged (false positives) "
      f"{s.flagged_genuine} vs {w.flagged_genuine} of {s.genuine_accounts:,}")

# Invalid settings fail when the Policy is made, before anything runs.
try:
    se.Policy(slow_rate_per_minute=0)
except se.errors.PolicyError as exc:
    print(f"\nPolicy(slow_rate_per_minute=0) is refused: {exc}")
else:
    raise AssertionError("a zero slow-lane rate should be refused")

# 4. One seed is one city: look at the spread before reading much into a difference.
print("\nScalper share of expert slots over five seeds (min / median / max):")
for name in ("fcfs", "lottery", "lottery+slow", "+waitlist"):
    shares = [sim.compare(dataclasses.replace(scenario, seed=s), [name])[name].scalper_expert_share
              for s in range(1, 6)]
    print(f"  {name:<14} {min(shares):6.1%} {statistics.median(shares):6.1%} {max(shares):6.1%}")
