"""Rush simulator and policy lab: a seeded synthetic city, replayed under several policies.

``generate(scenario)`` builds a city (hospitals, departments, doctors of three
tiers, a release calendar per channel) and its population (genuine patients,
scalper rings with bots, hand-off buyers) as numpy arrays.  ``run(world,
name)`` replays that world through a real ``Engine`` under one of
``POLICIES`` and measures what a policy analyst asks about (``Metrics``);
``compare`` runs them all on the same world.  Everything is seeded: the same
scenario gives the same Metrics (the timing fields aside).

The run drives the engine the way a platform would: the release rush through
``book_many``, ``advance`` to close the cohorts, then per-call cancellations,
scalper hand-offs (cancel, then a buyer re-books 200 ms later), retries or
waitlist joins of the patients who lost, check-ins, and no-shows.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, cast

import numpy as np

from .engine import Engine
from .errors import InvalidArgument, InvalidType
from .outcomes import BookingState, EventKind, LineKind, Reason, Status
from .policy import Policy
from .times import DAY, HOUR, MINUTE, SECOND

__all__ = ["Scenario", "PRESETS", "World", "PolicySetup", "POLICIES", "Metrics", "Timeline",
           "generate", "run", "run_phases", "compare"]

TIERS = ("expert", "associate", "general")
CHANNELS = ("app", "phone", "referral", "followup")  # channels the simulated city uses
_EPOCH_DAY = 20_454  # 2026-01-01 as days since 1970 (UTC): the first clinic day's date
_CST = 8 * HOUR  # the city runs on UTC+8, like Policy's default calendar day

_DEFAULT_FEES = {"expert": 10_000, "associate": 5_000, "general": 1_000}
_DEFAULT_RELEASE = {"app": 7, "phone": 8, "referral": 14, "followup": 10}

# patient kinds / account kinds
GENUINE, SCALPER, BUYER = 0, 1, 2


def _frozen(m: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(m))


@dataclass(frozen=True)
class Scenario:
    """A synthetic city and its booking rush: shape, population, rates, release calendar.

    Counts are ints, rates are floats in [0, 1], money is integer fen and
    times are ms unless a name says otherwise.  Validated on construction.
    """

    seed: int = 1
    # -- the city --
    hospitals: int = 2
    departments: int = 3            # per hospital; each has one doctor per tier
    days: int = 1                   # consecutive clinic days
    halves: int = 2                 # 1: mornings only, 2: AM and PM
    slots: Mapping[str, int] = field(default_factory=lambda: _frozen(
        {"expert": 10, "associate": 20, "general": 30}))    # capacity per session by tier (missing: 0)
    fees: Mapping[str, int] = field(default_factory=lambda: _frozen(_DEFAULT_FEES))  # fen
    #: share of each session's capacity per early channel; the app gets the rest
    quota_shares: Mapping[str, float] = field(default_factory=lambda: _frozen(
        {"phone": 0.1, "referral": 0.1, "followup": 0.1}))
    #: release calendar: days before the clinic day each channel opens (at 08:30)
    release_days: Mapping[str, int] = field(default_factory=lambda: _frozen(_DEFAULT_RELEASE))
    # -- genuine patients --
    genuine: int = 1_500
    tier_demand: Mapping[str, float] = field(default_factory=lambda: _frozen(
        {"expert": 0.5, "associate": 0.3, "general": 0.2}))
    elderly_share: float = 0.10     # book by phone
    referral_share: float = 0.10    # sent by a community clinic
    followup_share: float = 0.15    # 复诊: book on the follow-up channel
    spread_seconds: float = 20.0    # mean delay of an app tap after a release
    retries: int = 2                # later tries of a patient who lost (no waitlist)
    cancel_rate: float = 0.05
    noshow_rate: float = 0.08
    # -- scalper rings --
    rings: int = 3
    ring_accounts: int = 4
    account_identities: int = 5     # bought patient identities per account
    identity_targets: int = 2       # expert sessions each identity goes for
    bot_reaction_ms: int = 50       # bots fire within this many ms of the release
    handoff_rate: float = 0.3       # won slots handed to a buyer by cancel-then-rebook
    resale_rate: float = 0.5        # won slots sold with the identity (the buyer shows up)
    handoff_gap_ms: int = 200       # the buyer's re-book this long after the cancel
    snipe_rate: float = 0.5         # genuine cancellations of expert slots a ring's bot tries to take
    blacklist_share: float = 0.25   # ring accounts on the imported shared blacklist
    scalper_funded_share: float = 0.2  # identities with credit (require_cover)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and (type(v) is not int):
                raise InvalidType(f"Scenario.{f.name} must be an int, not {type(v).__name__}")
            if f.type == "float":
                if type(v) is int:
                    object.__setattr__(self, f.name, float(v))
                elif type(v) is not float:
                    raise InvalidType(f"Scenario.{f.name} must be a number, not {type(v).__name__}")
        for name, lo, hi in (("seed", 0, 2**63 - 1), ("hospitals", 1, 1000), ("departments", 1, 200),
                             ("days", 1, 28), ("halves", 1, 2), ("genuine", 0, 50_000_000),
                             ("retries", 0, 20), ("rings", 0, 100_000), ("ring_accounts", 0, 1000),
                             ("account_identities", 0, 1000), ("identity_targets", 0, 8),
                             ("bot_reaction_ms", 1, 60_000), ("handoff_gap_ms", 0, 60_000)):
            if not lo <= getattr(self, name) <= hi:
                raise InvalidArgument(f"Scenario.{name}={getattr(self, name)} is outside {lo}..{hi}")
        for name in ("elderly_share", "referral_share", "followup_share", "cancel_rate", "noshow_rate",
                     "handoff_rate", "resale_rate", "blacklist_share", "scalper_funded_share",
                     "snipe_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InvalidArgument(f"Scenario.{name}={v} must lie in [0, 1]")
        if self.elderly_share + self.referral_share + self.followup_share > 1.0:
            raise InvalidArgument("Scenario: elderly_share + referral_share + followup_share exceed 1")
        if self.handoff_rate + self.resale_rate > 1.0:
            raise InvalidArgument("Scenario: handoff_rate + resale_rate exceed 1")
        if not (math.isfinite(self.spread_seconds) and 0.0 < self.spread_seconds <= 86_400.0):
            raise InvalidArgument(f"Scenario.spread_seconds={self.spread_seconds} must be in (0, 86400]")
        slots = _table(self.slots, "slots", TIERS, int, 0, 65535, default=0)
        if not any(slots.values()):
            raise InvalidArgument("Scenario.slots: at least one tier needs slots")
        object.__setattr__(self, "slots", slots)
        fees = _table(self.fees, "fees", TIERS, int, 0, 10**9, default=_DEFAULT_FEES)
        object.__setattr__(self, "fees", fees)
        shares = _table(self.quota_shares, "quota_shares", CHANNELS[1:], float, 0.0, 1.0)
        if sum(shares.values()) > 1.0:
            raise InvalidArgument("Scenario.quota_shares sum above 1")
        object.__setattr__(self, "quota_shares", shares)
        rel = _table(self.release_days, "release_days", CHANNELS, int, 1, 366,
                     default=_DEFAULT_RELEASE)
        if min(rel.values()) < rel["app"]:
            raise InvalidArgument("Scenario.release_days: no channel may open after the app")
        if self.days > rel["app"] - 1:
            raise InvalidArgument(f"Scenario.days={self.days}: at most release_days['app'] - 1 "
                                  f"({rel['app'] - 1}), so every release comes before every cut-off")
        object.__setattr__(self, "release_days", rel)
        demand = _table(self.tier_demand, "tier_demand", TIERS, float, 0.0, 1.0)
        demand = _frozen({t: (demand.get(t, 0.0) if slots[t] else 0.0) for t in TIERS})
        if self.genuine and sum(demand.values()) <= 0.0:
            raise InvalidArgument("Scenario.tier_demand: some tier with slots needs demand")
        object.__setattr__(self, "tier_demand", demand)
        if self.rings and self.ring_accounts and self.account_identities and self.identity_targets \
                and not slots["expert"]:
            raise InvalidArgument("Scenario: scalper rings need expert sessions (slots['expert'] > 0)")

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        """Load a scenario from a ``.json`` or ``.toml`` file (TOML needs Python 3.11+).

        Top-level keys are Scenario fields; an optional ``preset`` key names
        the PRESETS entry the other keys change.
        """
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"cannot read scenario file {str(p)!r}: {exc.strerror}") from None
        suffix = p.suffix.lower()
        try:
            if suffix == ".json":
                data = json.loads(raw.decode("utf-8"))
            elif suffix == ".toml":
                if sys.version_info < (3, 11):
                    raise InvalidArgument(f"{str(p)!r}: TOML scenarios need Python 3.11+ (tomllib); "
                                          "use a .json file")
                import tomllib
                data = tomllib.loads(raw.decode("utf-8"))
            else:
                raise InvalidArgument(f"{str(p)!r}: a scenario file must end in .json or .toml")
        except (ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, InvalidArgument):
                raise
            raise InvalidArgument(f"{str(p)!r} is not valid {suffix[1:].upper()}: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidType(f"{str(p)!r}: a scenario file holds one table of fields")
        return cls.from_dict(data, where=str(p))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "scenario") -> Scenario:
        """A Scenario from a mapping of field values (optionally ``preset`` = a PRESETS name)."""
        data = dict(data)
        base = PRESETS["small"]
        if "preset" in data:
            name = data.pop("preset")
            if not isinstance(name, str) or name not in PRESETS:
                raise InvalidArgument(f"{where}: unknown preset {name!r} (one of {sorted(PRESETS)})")
            base = PRESETS[name]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(f"{where}: unknown scenario field(s) {unknown}")
        return replace(base, **data)


def _table(m: object, name: str, keys: tuple[str, ...], kind: type, lo: float, hi: float,
           default: Any = None) -> Mapping[str, Any]:
    """Validate a small mapping field: known keys, typed values in [lo, hi].

    With ``default`` (a value, or a mapping by key) every key is filled in.
    """
    if not isinstance(m, Mapping):
        raise InvalidType(f"Scenario.{name} must be a mapping, not {type(m).__name__}")
    out: dict[str, Any] = {}
    for k, raw in m.items():
        v: Any = raw
        if k not in keys:
            raise InvalidArgument(f"Scenario.{name} has unknown key {k!r} (expected {list(keys)})")
        if kind is float and type(v) is int:
            v = float(v)
        if type(v) is not kind:
            raise InvalidType(f"Scenario.{name}[{k!r}] must be {kind.__name__}, not {type(v).__name__}")
        if not lo <= cast(float, v) <= hi:
            raise InvalidArgument(f"Scenario.{name}[{k!r}]={v} is outside {lo}..{hi}")
        out[k] = v
    if default is not None:
        out = {k: out[k] if k in out else (default[k] if isinstance(default, Mapping) else default)
               for k in keys}
    return _frozen(out)


PRESETS: dict[str, Scenario] = {
    # 36 sessions, 720 slots, 1,620 rush rows (~3,500 book requests with retries): demo and tests
    "small": Scenario(),
    # 20,160 sessions, 403,200 slots, 1.36M rush rows (~3.3M book requests with retries)
    "city": Scenario(seed=2026, hospitals=42, departments=16, days=5, genuine=1_300_000,
                     rings=560, ring_accounts=10, account_identities=5, identity_targets=2),
}


@dataclass
class World:
    """A generated city and its pre-drawn behaviour, as numpy arrays (policy independent).

    Sessions are indexed 0..n-1, patients and accounts too (genuine first,
    then scalper identities / ring accounts, then buyers): the run interns
    names in that order, so these indices are the engine's dense ids.
    """

    scenario: Scenario
    t0: int                      # engine time when the run starts (ms)
    session_names: list[str]
    session_tier: np.ndarray     # int8 index into TIERS
    session_hospital: np.ndarray
    session_department: np.ndarray
    session_start: np.ndarray    # int64 ms
    session_capacity: np.ndarray
    session_cutoff: np.ndarray   # int64 ms: cancellations before this
    release: np.ndarray          # int64 ms, (sessions, CHANNELS)
    quotas: np.ndarray           # int32, (sessions, CHANNELS)
    patient_kind: np.ndarray     # int8 GENUINE / SCALPER / BUYER
    patient_account: np.ndarray  # int32
    account_kind: np.ndarray     # int8
    account_ring: np.ndarray     # int32 ring of a scalper account or buyer, else -1
    # the rush, in time order
    rush_time: np.ndarray        # int64 ms
    rush_patient: np.ndarray     # int32
    rush_session: np.ndarray     # int32
    rush_channel: np.ndarray     # int32 index into CHANNELS
    # pre-drawn fates
    genuine_row: np.ndarray      # int32 rush row of each genuine patient
    noshow: np.ndarray           # bool per patient
    checkin_early_ms: np.ndarray  # int64 per patient: arrives this long before the slot
    scalper_fate: np.ndarray     # int8 per rush row: 0 unsold (no-show), 1 resold, 2 hand-off; -1 genuine
    buyer_of_row: np.ndarray     # int32 per rush row: the buyer patient for a hand-off, else -1
    blacklisted: np.ndarray      # int32 ring accounts on the shared blacklist
    funded_scalpers: np.ndarray  # int32 scalper identities with a credit line
    # later per-call actions, in time order: (time, kind, who)
    later_time: np.ndarray
    later_kind: np.ndarray       # int8: _CANCEL, _HANDOFF, _RETRY, _JOIN
    later_who: np.ndarray        # patient (cancel/retry/join) or rush row (hand-off)
    later_sniper: np.ndarray     # int32 per later step: the identity whose bot tries to take
    #                              the slot a cancellation frees, else -1
    later_snipe_ms: np.ndarray   # int64 per later step: how long after the cancellation
    day0: int                    # local midnight (UTC+8) of the first clinic day, in UTC ms
    t_after: int                 # the rush is over and every cohort drawn
    t_end: int                   # after the last session ends

    @property
    def n_sessions(self) -> int:
        return len(self.session_names)

    @property
    def requests(self) -> int:
        """Rows of the rush (the batch path's share of the load)."""
        return len(self.rush_time)


_CANCEL, _HANDOFF, _RETRY, _JOIN, _CHECK_IN = 0, 1, 2, 3, 4


def generate(scenario: Scenario) -> World:
    """Build the city, its population and the arrival stream from ``scenario.seed``."""
    sc = scenario
    rng = np.random.default_rng(sc.seed)
    day0 = _EPOCH_DAY * DAY - _CST          # local midnight of the first clinic day, UTC ms
    # -- sessions --
    names, tier, hosp, dept, start, cap = [], [], [], [], [], []
    for d in range(sc.days):
        for h in range(sc.hospitals):
            for k in range(sc.departments):
                for ti, t in enumerate(TIERS):
                    if not sc.slots[t]:
                        continue
                    for half in range(sc.halves):
                        names.append(f"H{h:03d}/D{k:03d}/{t}/d{d}/{'AP'[half]}M")
                        tier.append(ti)
                        hosp.append(h)
                        dept.append(k)
                        start.append(day0 + d * DAY + (8 * HOUR if half == 0 else 13 * HOUR + 30 * MINUTE))
                        cap.append(sc.slots[t])
    n_s = len(names)
    s_tier = np.array(tier, dtype=np.int8)
    s_start = np.array(start, dtype=np.int64)
    s_cap = np.array(cap, dtype=np.int32)
    s_day = (s_start + _CST) // DAY * DAY - _CST
    release = np.empty((n_s, len(CHANNELS)), dtype=np.int64)
    quotas = np.zeros((n_s, len(CHANNELS)), dtype=np.int32)
    for c, ch in enumerate(CHANNELS):
        release[:, c] = s_day - sc.release_days[ch] * DAY + 8 * HOUR + 30 * MINUTE
        if c:
            quotas[:, c] = np.floor(s_cap * sc.quota_shares.get(ch, 0.0)).astype(np.int32)
    quotas[:, 0] = s_cap - quotas[:, 1:].sum(axis=1)
    cutoff = s_day - 8 * HOUR                # Policy default: 16:00 the day before
    t0 = int(release.min()) - DAY
    # -- genuine patients: families of 1-3 share an account --
    G = sc.genuine
    fam = rng.integers(1, 4, size=G + 1)
    g_account = np.repeat(np.arange(len(fam), dtype=np.int32), fam)[:G]
    n_ga = int(g_account[-1]) + 1 if G else 0
    u = rng.random(G)
    g_channel = np.zeros(G, dtype=np.int32)
    g_channel[u < sc.elderly_share] = 1
    m = (u >= sc.elderly_share) & (u < sc.elderly_share + sc.referral_share)
    g_channel[m] = 2
    m = (u >= sc.elderly_share + sc.referral_share) & (
        u < sc.elderly_share + sc.referral_share + sc.followup_share)
    g_channel[m] = 3
    demand = np.array([sc.tier_demand[t] for t in TIERS])
    g_tier = rng.choice(len(TIERS), size=G, p=demand / demand.sum()) if G else np.zeros(0, int)
    g_day = rng.integers(0, sc.days, size=G)
    g_h = rng.integers(0, sc.hospitals, size=G)
    g_d = rng.integers(0, sc.departments, size=G)
    g_half = (rng.random(G) < 0.4).astype(np.int64) if sc.halves == 2 else np.zeros(G, np.int64)
    # session index from (day, hospital, department, tier, half)
    tiers_on = [i for i, t in enumerate(TIERS) if sc.slots[t]]
    tier_pos = np.full(len(TIERS), -1)
    tier_pos[tiers_on] = np.arange(len(tiers_on))
    g_session = ((((g_day * sc.hospitals + g_h) * sc.departments + g_d) * len(tiers_on)
                  + tier_pos[g_tier]) * sc.halves + g_half).astype(np.int32)
    delay = np.empty(G)
    spread = sc.spread_seconds * SECOND
    for c, mean in enumerate((spread, 5 * spread, 180 * spread, 3 * spread)):
        mc = g_channel == c
        delay[mc] = rng.exponential(mean, int(mc.sum()))
    g_time = release[g_session, g_channel] + 300 + delay.astype(np.int64)
    # -- scalper rings: accounts with bought identities; bots fire within ms --
    n_ra = sc.rings * sc.ring_accounts
    n_id = n_ra * sc.account_identities
    id_account = n_ga + np.repeat(np.arange(n_ra, dtype=np.int32), sc.account_identities)
    expert = np.flatnonzero(s_tier == 0)
    by_day = [expert[(s_start[expert] - day0) // DAY == d] for d in range(sc.days)]
    b_patient, b_session = [], []
    for i in range(n_id):
        pool = by_day[int(rng.integers(0, sc.days))]
        k = min(sc.identity_targets, len(pool))
        for s in rng.choice(pool, size=k, replace=False):
            b_patient.append(G + i)
            b_session.append(int(s))
    nb = len(b_patient)
    bp = np.array(b_patient, dtype=np.int32)
    bs = np.array(b_session, dtype=np.int32)
    b_time = release[bs, 0] + rng.integers(0, sc.bot_reaction_ms, size=nb)
    # -- the rush stream, in time order (genuine first at equal times: bots are
    #    already before them by construction; ties keep generation order) --
    r_time = np.concatenate([g_time, b_time]).astype(np.int64)
    r_patient = np.concatenate([np.arange(G, dtype=np.int32), bp])
    r_session = np.concatenate([g_session, bs]).astype(np.int32)
    r_channel = np.concatenate([g_channel, np.zeros(nb, dtype=np.int32)])
    order = np.argsort(r_time, kind="stable")
    r_time, r_patient, r_session, r_channel = (r_time[order], r_patient[order], r_session[order],
                                               r_channel[order])
    genuine_row = np.empty(G, dtype=np.int32)
    is_g = r_patient < G
    genuine_row[r_patient[is_g]] = np.flatnonzero(is_g)
    # fates of scalper rows and their buyers (a buyer is a real patient with own account)
    n_rows = len(r_time)
    fate = np.full(n_rows, -1, dtype=np.int8)
    bot_rows = np.flatnonzero(~is_g)
    v = rng.random(len(bot_rows))
    fate[bot_rows] = np.where(v < sc.handoff_rate, 2, np.where(v < sc.handoff_rate + sc.resale_rate, 1, 0))
    ho_rows = bot_rows[fate[bot_rows] == 2]
    n_buy = len(ho_rows)
    buyer_of_row = np.full(n_rows, -1, dtype=np.int32)
    buyer_of_row[ho_rows] = G + n_id + np.arange(n_buy, dtype=np.int32)
    n_p = G + n_id + n_buy
    p_kind = np.concatenate([np.zeros(G, np.int8), np.ones(n_id, np.int8), np.full(n_buy, 2, np.int8)])
    p_account = np.concatenate([g_account, id_account, n_ga + n_ra + np.arange(n_buy, dtype=np.int32)])
    a_kind = np.concatenate([np.zeros(n_ga, np.int8), np.ones(n_ra, np.int8), np.full(n_buy, 2, np.int8)])
    a_ring = np.full(n_ga + n_ra + n_buy, -1, dtype=np.int32)
    if sc.ring_accounts:
        a_ring[n_ga:n_ga + n_ra] = np.arange(n_ra) // sc.ring_accounts
    a_ring[n_ga + n_ra:] = a_ring[p_account[r_patient[ho_rows]]]
    noshow = rng.random(n_p) < sc.noshow_rate
    early = rng.integers(0, 20 * MINUTE, size=n_p).astype(np.int64)
    # the first accounts of every ring are already on the platforms' shared blacklist
    pos_in_ring = np.arange(n_ra) % max(sc.ring_accounts, 1)
    black = n_ga + np.flatnonzero(pos_in_ring < round(sc.blacklist_share * sc.ring_accounts))
    funded = G + np.flatnonzero(rng.random(n_id) < sc.scalper_funded_share)
    # -- later per-call actions between the rush and each session's cut-off --
    t_after = int(r_time.max()) + 10 * MINUTE if n_rows else t0 + DAY
    room = cutoff - t_after
    if n_rows and room.min() <= MINUTE:
        raise InvalidArgument("Scenario: the rush does not end before the first cancellation cut-off")
    lt, lk, lw = [], [], []
    cz = rng.random(G) < sc.cancel_rate            # genuine cancellations
    who = np.flatnonzero(cz)
    lt.append(t_after + (rng.random(len(who)) * (room[g_session[who]] - MINUTE)).astype(np.int64))
    lk.append(np.full(len(who), _CANCEL, np.int8))
    lw.append(who.astype(np.int32))
    lt.append(t_after + (rng.random(n_buy) * (room[r_session[ho_rows]] - MINUTE)).astype(np.int64))
    lk.append(np.full(n_buy, _HANDOFF, np.int8))
    lw.append(ho_rows.astype(np.int32))
    for _ in range(sc.retries):
        lt.append(t_after + (rng.random(G) * (room[g_session] - MINUTE)).astype(np.int64))
        lk.append(np.full(G, _RETRY, np.int8))
        lw.append(np.arange(G, dtype=np.int32))
    lt.append(t_after + rng.integers(0, 30 * MINUTE, size=G).astype(np.int64))
    lk.append(np.full(G, _JOIN, np.int8))
    lw.append(np.arange(G, dtype=np.int32))
    l_time = np.concatenate(lt)
    l_kind = np.concatenate(lk)
    l_who = np.concatenate(lw)
    # Bots watch the expert sessions: a genuine cancellation there draws whether a ring's
    # bot (a random identity) tries to take the freed slot, and its reaction time.  From
    # a generator of its own, so the draws above do not depend on snipe_rate.
    srng = np.random.default_rng([sc.seed, 1])
    sniper = np.full(len(l_time), -1, dtype=np.int32)
    snipe_ms = np.zeros(len(l_time), dtype=np.int64)
    n_c = len(who)  # the cancellations are the first steps of the lists
    if n_id and n_c:
        hit = (srng.random(n_c) < sc.snipe_rate) & (s_tier[g_session[who]] == 0)
        sniper[:n_c][hit] = G + srng.integers(0, n_id, size=int(hit.sum()))
        snipe_ms[:n_c][hit] = srng.integers(1, sc.bot_reaction_ms + 1, size=int(hit.sum()))
    order = np.lexsort((l_who, l_kind, l_time))
    return World(
        scenario=sc, t0=t0, session_names=names, session_tier=s_tier,
        session_hospital=np.array(hosp, dtype=np.int32), session_department=np.array(dept, dtype=np.int32),
        session_start=s_start, session_capacity=s_cap, session_cutoff=cutoff, release=release,
        quotas=quotas, patient_kind=p_kind, patient_account=p_account, account_kind=a_kind,
        account_ring=a_ring, rush_time=r_time, rush_patient=r_patient, rush_session=r_session,
        rush_channel=r_channel, genuine_row=genuine_row, noshow=noshow, checkin_early_ms=early,
        scalper_fate=fate, buyer_of_row=buyer_of_row, blacklisted=black.astype(np.int32),
        funded_scalpers=funded.astype(np.int32), later_time=l_time[order], later_kind=l_kind[order],
        later_who=l_who[order], later_sniper=sniper[order], later_snipe_ms=snipe_ms[order], day0=day0, t_after=t_after, t_end=int(s_start.max()) + DAY)


# -- policies ------------------------------------------------------------------------

@dataclass(frozen=True)
class PolicySetup:
    """One policy to compare: the engine's Policy plus what the platform does around it."""

    name: str
    policy: Policy
    blacklist: bool = False   # import the shared blacklist of known ring accounts
    waitlist: bool = False    # losers join the waitlist (else they retry by hand)
    fund: bool = False        # open credit lines: genuine patients and buyers, some identities


_RISK_OFF: dict[str, Any] = {"early_flag": (0, 1), "cancel_flag": (0, 30), "patients_flag": (0, 30),
                             "rebook_seconds": 0}
_NO_HIDE: dict[str, Any] = {"rerelease_seconds": (0, 0)}  # without a waitlist a freed slot is free at once

POLICIES: dict[str, PolicySetup] = {
    "fcfs": PolicySetup("fcfs", Policy(prequeue_minutes=0, cohort_seconds=0, **_RISK_OFF, **_NO_HIDE)),
    "lottery": PolicySetup("lottery", Policy(**_RISK_OFF, **_NO_HIDE)),
    "lottery+slow": PolicySetup("lottery+slow", Policy(**_NO_HIDE), blacklist=True),
    "+waitlist": PolicySetup("+waitlist", Policy(), blacklist=True, waitlist=True),
    "+credit": PolicySetup("+credit", Policy(require_cover=True), blacklist=True, waitlist=True,
                           fund=True),
}


# -- metrics -------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Timeline:
    """One policy's per-booking series, for the plots: when slots went, how long people waited.

    Arrays are sorted ascending and are ms.  ``taken_ms`` has one entry per
    booking ever made in an expert session (kept, cancelled or handed on),
    measured from the release of the channel it was made on;
    ``taken_by_scalper`` flags the ones a scalper identity or a hand-off
    buyer made.
    """

    expert_slots: int                # capacity of all expert sessions
    taken_ms: np.ndarray             # int64
    taken_by_scalper: np.ndarray     # bool, aligned with taken_ms
    genuine_wait_ms: np.ndarray      # int64: release of the channel -> first booking, per genuine patient
    waitlist_wait_ms: np.ndarray     # int64: join -> fill, per filled waitlist request

    def taken_curve(self, at_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Share of expert slots taken by ``at_ms`` after release: (all, by scalpers)."""
        at = np.asarray(at_ms)
        n = max(self.expert_slots, 1)
        allc = np.searchsorted(self.taken_ms, at, side="right") / n
        scalp = np.cumsum(self.taken_by_scalper)
        idx = np.searchsorted(self.taken_ms, at, side="right")
        sc = np.where(idx > 0, scalp[np.maximum(idx - 1, 0)] if len(scalp) else 0, 0) / n
        return allc, sc


@dataclass(frozen=True)
class Metrics:
    """What one policy did to one world.  Equal for equal inputs (timing fields aside).

    Rates are in [0, 1]; medians are ms, None when there is nothing to take
    a median of.  Buyers of hand-offs count as scalper wins, but their
    accounts are in neither flag count.
    """

    policy: str
    requests: int                    # book requests sent (batch rows + per-call)
    expert_slots_taken: int          # expert slots booked at the visit (arrived or no-show)
    scalper_expert_share: float      # ... of which held by scalper identities or their buyers
    genuine_patients: int
    genuine_success_rate: float      # genuine patients who got a slot at some point
    genuine_median_ms: float | None  # release of their channel -> their booking
    waitlist_joined: int
    waitlist_fill_rate: float | None
    waitlist_median_ms: float | None  # join -> fill
    utilization: float               # arrived / capacity
    no_shows: int
    handoffs: int                    # cancel-then-rebook hand-offs that reached the buyer
    sniped: int                      # genuine cancellations of expert slots a bot took
    genuine_accounts: int
    flagged_genuine: int             # false positives: genuine accounts flagged
    scalper_accounts: int
    flagged_scalper: int             # true positives: ring accounts flagged (rule or blacklist)
    engine_seconds: float = field(default=0.0, compare=False)
    requests_per_second: float = field(default=0.0, compare=False)  # of the rush (book_many + draw)
    timeline: Timeline | None = field(default=None, compare=False, repr=False)  # series for plots

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields (JSON-ready), plus percentiles of the waits from the timeline."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "timeline"}
        if self.timeline is not None:
            for name, a in (("genuine_wait_ms", self.timeline.genuine_wait_ms),
                            ("waitlist_wait_ms", self.timeline.waitlist_wait_ms)):
                out[name + "_p10_p50_p90"] = ([float(x) for x in np.percentile(a, [10, 50, 90])]
                                              if len(a) else None)
        return out

    @property
    def false_positive_rate(self) -> float:
        return self.flagged_genuine / self.genuine_accounts if self.genuine_accounts else 0.0

    @property
    def true_positive_rate(self) -> float:
        return self.flagged_scalper / self.scalper_accounts if self.scalper_accounts else 0.0

    def as_row(self) -> dict[str, object]:
        """One table row: display names -> rounded values."""
        def pct(x: float | None) -> str:
            return "-" if x is None else f"{x:.1%}"

        def sec(x: float | None) -> str:
            if x is None:
                return "-"
            s = x / 1000
            return (f"{s:.1f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200
                    else f"{s / 3600:.1f} h" if s < 172800 else f"{s / 86400:.1f} d")

        return {
            "policy": self.policy,
            "scalper expert share": pct(self.scalper_expert_share),
            "genuine success": pct(self.genuine_success_rate),
            "genuine median wait": sec(self.genuine_median_ms),
            "waitlist fill": pct(self.waitlist_fill_rate),
            "waitlist median wait": sec(self.waitlist_median_ms),
            "utilization": pct(self.utilization),
            "hand-offs": self.handoffs,
            "sniped": self.sniped,
            "flags genuine (FP)": self.flagged_genuine,
            "flags scalper (TP)": self.flagged_scalper,
            "requests": self.requests,
            "rush req/s": f"{self.requests_per_second:,.0f}",
        }


# -- the run -------------------------------------------------------------------------

_BOOKED = int(Status.BOOKED)
_QUEUED = int(Status.QUEUED)
_SERVED = int(EventKind.TICKET_SERVED)
_FILLED = int(EventKind.WAITLIST_FILLED)
_LIVE = int(BookingState.BOOKED)
_ARRIVED = int(BookingState.ARRIVED)
_NO_SHOW = int(BookingState.NO_SHOW)


def _setup(name_or_setup: str | PolicySetup) -> PolicySetup:
    if isinstance(name_or_setup, PolicySetup):
        return name_or_setup
    if type(name_or_setup) is not str:
        raise InvalidType(f"policy must be a POLICIES name or a PolicySetup, "
                          f"not {type(name_or_setup).__name__}")
    try:
        return POLICIES[name_or_setup]
    except KeyError:
        raise InvalidArgument(f"unknown policy {name_or_setup!r} (one of {list(POLICIES)})") from None


class _Run:
    """The state of one replay: an Engine plus who holds which booking."""

    def __init__(self, world: World, setup: PolicySetup, backend: str = "core") -> None:
        self.w = w = world
        self.s = setup
        self.e = e = Engine(setup.policy, seed=w.scenario.seed, backend=backend)
        self.core = e._core  # dense-id reads of bookings, requests and flags (same package)
        sc = w.scenario
        t0 = w.t0
        for i, name in enumerate(w.session_names):
            ti = int(w.session_tier[i])
            e.add_session(
                name, hospital=f"H{int(w.session_hospital[i]):03d}",
                department=f"D{int(w.session_department[i]):03d}",
                doctor=f"Dr-{int(w.session_hospital[i])}-{int(w.session_department[i])}-{TIERS[ti]}",
                tier=TIERS[ti], starts_at=int(w.session_start[i]),
                slot_minutes=max(1, 240 // int(w.session_capacity[i])),
                capacity=int(w.session_capacity[i]), fee=sc.fees[TIERS[ti]],
                quotas={ch: int(w.quotas[i, c]) for c, ch in enumerate(CHANNELS)},
                release={ch: int(w.release[i, c]) for c, ch in enumerate(CHANNELS)}, now=t0)
        # Patients and accounts are the world's indices, spoken to the core as dense ids:
        # a run never needs their names, so it skips interning millions of them.
        self.core.ensure_patients(len(w.patient_kind))
        self.core.ensure_accounts(len(w.account_kind))
        self.chan = e.channel_ids(CHANNELS)
        if setup.blacklist and len(w.blacklisted):
            n_b = len(w.blacklisted)
            self.core.import_blacklist([0] * n_b, w.blacklisted.tolist(), [t0 + 365 * DAY] * n_b, t0)
        if setup.fund:  # an outpatient line at its starting limit (dense ids: no name look-ups)
            funded = np.concatenate([np.flatnonzero(w.patient_kind != SCALPER), w.funded_scalpers])
            outpatient = int(LineKind.OUTPATIENT)
            for p in funded.tolist():
                self.core.open_line(p, outpatient, -1, t0)
        self.genuine_booking = np.full(len(w.patient_kind), -1, dtype=np.int64)  # live booking per patient
        self.requests = 0
        self.sniped = 0                            # cancellations a bot took
        self.snipe_tickets: set[int] = set()       # bots' requests that were queued
        self.requests_joined: list[int] = []
        self.joined_at: list[int] = []             # join time of each, in the same order
        self.filled_at: dict[int, int] = {}        # request -> fill time (WAITLIST_FILLED events)

    def rush(self) -> float:
        """The release rush through the batch path; returns the seconds it took."""
        w, e = self.w, self.e
        acc = w.patient_account[w.rush_patient]
        clock = time.perf_counter()
        res = e.book_many(acc, w.rush_patient, w.rush_session, self.chan[w.rush_channel], w.rush_time)
        e.advance(w.t_after, drain=False)
        took = time.perf_counter() - clock
        self.requests += len(acc)
        booking = res.booking.astype(np.int64)
        ev = e.events_array()
        served = ev["kind"] == _SERVED
        by_ticket = dict(zip(ev["detail"][served].tolist(), ev["booking"][served].tolist()))
        queued = np.flatnonzero(res.status == _QUEUED)
        for row, k in zip(queued.tolist(), res.ticket[queued].tolist()):
            b = by_ticket.get(k, -1)
            if b is not None and b >= 0:
                booking[row] = b
        self.row_booking = booking
        g = self.genuine_booking
        is_g = w.patient_kind[w.rush_patient] == GENUINE
        g[w.rush_patient[is_g]] = booking[is_g]
        return took

    def _collect(self) -> None:
        """Note waitlist fills (a genuine patient got a slot without asking again)."""
        ev = self.e.events_array()
        filled = ev["kind"] == _FILLED
        if filled.any():
            g = self.g
            for p, b in zip(ev["patient"][filled].tolist(), ev["booking"][filled].tolist()):
                g[p] = b
            self.filled_at.update(zip(ev["detail"][filled].tolist(), ev["at"][filled].tolist()))
        if self.snipe_tickets:
            served = ev["detail"][ev["kind"] == _SERVED].tolist()
            self.sniped += len(self.snipe_tickets.intersection(served))
            self.snipe_tickets.difference_update(served)

    def replay(self, tick: Callable[[str], None]) -> None:
        """After the rush, one call each in time order: cancellations, hand-offs, retries or
        waitlist joins, and on each clinic day its check-ins (the rest become no-shows)."""
        w, e = self.w, self.e
        # Python lists for the per-call loop (numpy scalar indexing is slow)
        self.g: list[int] = self.genuine_booking.tolist()
        self.rows: list[int] = self.row_booking.tolist()
        self._lists = {"acct": w.patient_account.tolist(), "rp": w.rush_patient.tolist(),
                       "rs": w.rush_session.tolist(),
                       "gr": w.genuine_row.tolist(), "buyer": w.buyer_of_row.tolist(),
                       "start": w.session_start.tolist(), "kind": w.patient_kind.tolist(),
                       "noshow": w.noshow.tolist(), "early": w.checkin_early_ms.tolist(),
                       "cap": w.session_capacity.tolist(),
                       "sid": e.session_ids(w.session_names).tolist()}
        self._klass_of = ({c: e._classes[e.policy.waitlist_class(ch)]
                           for ch, c in zip(CHANNELS, self.chan.tolist())} if self.s.waitlist else {})
        times, kinds, whos = w.later_time, w.later_kind, w.later_who
        sniper, snipe_ms = w.later_sniper, w.later_snipe_ms
        # a retry never applies with a waitlist, a join never without: drop them up front ...
        keep = kinds != (_RETRY if self.s.waitlist else _JOIN)
        rj = (kinds == _RETRY) | (kinds == _JOIN)
        wv = np.where(rj, whos, 0)
        # ... and so does a retry or join of a patient who holds a slot from the rush and
        # cancels only later (or never): the loop would skip it (a patient cancels at most once)
        cancel_at = np.full(len(w.patient_kind), np.iinfo(np.int64).max, dtype=np.int64)
        c = kinds == _CANCEL
        cancel_at[whos[c]] = times[c]
        keep &= ~(rj & (self.genuine_booking[wv] >= 0) & (cancel_at[wv] > times))
        if not keep.all():
            times, kinds, whos, rj, wv = times[keep], kinds[keep], whos[keep], rj[keep], wv[keep]
            sniper, snipe_ms = sniper[keep], snipe_ms[keep]
        # the (account, patient, session, channel, deadline) a retry or join sends, gathered once
        rv = np.where(rj, w.genuine_row[wv], 0)
        sess = w.rush_session[rv]
        args = [w.patient_account[wv], wv, np.array(self._lists["sid"])[sess], self.chan[w.rush_channel[rv]],
                w.session_start[sess] - HOUR]
        args = [np.where(rj, x, -1).astype(np.int64) for x in args]
        args += [sniper.astype(np.int64), snipe_ms]  # a cancellation's bot, if any, and its delay
        self.joined = np.zeros(len(w.patient_kind), dtype=bool)
        day0 = w.day0
        days = _clinic_days(w)
        self._b_start: list[int] = []  # session start of each booking id seen so far
        i = 0
        for k, d in enumerate(days):
            tick(f"day {k + 1}/{len(days)}")
            # local midnight: day d's cut-offs (16:00 the day before) have passed, its visits not begun
            mark = day0 + d * DAY
            nxt = day0 + days[k + 1] * DAY if k + 1 < len(days) else None
            j = int(np.searchsorted(times, mark, side="left"))
            self._play(zip(times[i:j].tolist(), kinds[i:j].tolist(), whos[i:j].tolist(),
                           *(x[i:j].tolist() for x in args)))
            i = j
            j = len(times) if nxt is None else int(np.searchsorted(times, nxt, side="left"))
            # the day's calls and check-ins in (time, calls before check-ins, kind, who) order
            visits = self._visits(d, day0)
            vt = np.array([t for t, _ in visits], dtype=np.int64)
            vb = np.array([b for _, b in visits], dtype=np.int64)
            st = np.concatenate([times[i:j].astype(np.int64), vt])
            sf = np.concatenate([np.zeros(j - i, np.int64), np.ones(len(vt), np.int64)])
            sk = np.concatenate([kinds[i:j].astype(np.int64), np.full(len(vt), _CHECK_IN, np.int64)])
            sw = np.concatenate([whos[i:j].astype(np.int64), vb])
            order = np.lexsort((sw, sk, sf, st))
            none = np.full(len(vt), -1, dtype=np.int64)
            self._play(zip(st[order].tolist(), sk[order].tolist(), sw[order].tolist(),
                           *(np.concatenate([x[i:j], none])[order].tolist() for x in args)))
            i = j
        e.advance(max(e.now, w.t_end), drain=False)
        self._collect()
        self.genuine_booking = np.array(self.g, dtype=np.int64)
        self.row_booking = np.array(self.rows, dtype=np.int64)

    def _visits(self, day: int, day0: int) -> list[tuple[int, int]]:
        """(arrival time, booking) of the patients who show up on clinic day ``day``."""
        w, core = self.w, self.core
        info = core.booking_info
        rows = np.flatnonzero(w.scalper_fate >= 0)
        rb = np.array(self.rows, dtype=np.int64)[rows] if len(rows) else np.zeros(0, np.int64)
        ok = rb >= 0
        fate_of = dict(zip(rb[ok].tolist(), w.scalper_fate[rows][ok].tolist()))
        # a booking's session never changes: note each new booking's session start once
        L = self._lists
        b_start, start_of = self._b_start, L["start"]
        b_start.extend(start_of[info(b)[0]] for b in range(len(b_start), core.n_bookings))
        lo, hi = day0 + day * DAY, day0 + (day + 1) * DAY
        bst = np.array(b_start, dtype=np.int64)
        cand = np.flatnonzero((bst >= lo) & (bst < hi)).tolist()
        kind_of, noshow, early, cap = L["kind"], L["noshow"], L["early"], L["cap"]
        visits = []
        for b in cand:
            s, slot, p, _a, _ch, _q, state = info(b)[:7]
            if state != _LIVE:
                continue
            if kind_of[p] == SCALPER:
                shows = fate_of.get(b, 0) == 1  # resold with the identity; unsold: nobody comes
            else:
                shows = not noshow[p]
            if shows:
                start = start_of[s]
                step = max(1, 240 // cap[s]) * MINUTE
                visits.append((start + (slot - 1) * step - early[p], b))
        return visits

    def _play(self, steps: Iterable[tuple[int, int, int, int, int, int, int, int, int, int]]) -> None:
        """Per-call steps in order, on dense ids; each skipped when it no longer applies
        (e.g. nothing left to cancel).  A retry or join carries (account, patient, session,
        channel, waitlist deadline), other steps -1 there; a cancellation carries the identity
        whose bot tries to take the freed slot (or -1) and how many ms later."""
        w, core = self.w, self.core
        g, row_booking = self.g, self.rows
        L = self._lists
        acct, rush_patient, rush_session = L["acct"], L["rp"], L["rs"]
        buyer_of_row, sid = L["buyer"], L["sid"]
        info, check_in, cancel, book, join = (core.booking_info, core.check_in, core.cancel,
                                              core.book, core.join_waitlist)
        waitlist, klass_of = self.s.waitlist, self._klass_of
        app = int(self.chan[0])
        gap = w.scenario.handoff_gap_ms
        BOOKED, CANCELLED, WAITLISTED, QUEUED = (Status.BOOKED, Status.CANCELLED, Status.WAITLISTED,
                                                 Status.QUEUED)
        nreq = 0  # book requests sent
        for t, kind, who, a, p, s, ch, deadline, bot, bot_ms in steps:
            if kind == _RETRY:  # the bulk of the steps: most are skipped
                if g[who] >= 0 or waitlist:  # with a waitlist, losers wait there instead
                    continue
                now = core.now
                r = book(a, p, s, ch, t if t >= now else now, False)
                nreq += 1
                if r.status == BOOKED:
                    g[who] = r.booking
                continue
            now = core.now
            if t < now:
                t = now
            if kind == _CHECK_IN:
                check_in(who, t)
            elif kind == _CANCEL:
                b = g[who]
                if b >= 0 and info(b)[6] == _LIVE:
                    cancel(b, acct[who], t)
                    g[who] = -1
                    self._collect()
                    if bot >= 0:  # a bot polling the session sees the slot come free
                        r = book(acct[bot], bot, info(b)[0], app, t + bot_ms, False)
                        nreq += 1
                        if r.status == BOOKED:
                            self.sniped += 1
                        elif r.status == QUEUED:  # e.g. a flagged account: served later, or not
                            self.snipe_tickets.add(r.ticket)
            elif kind == _HANDOFF:
                b = row_booking[who]
                if b < 0 or info(b)[6] != _LIVE:
                    continue
                r = cancel(b, acct[rush_patient[who]], t)
                if r.status != CANCELLED:
                    continue
                row_booking[who] = -1
                self._collect()
                buyer = buyer_of_row[who]
                r = book(acct[buyer], buyer, sid[rush_session[who]], app, t + gap, False)
                nreq += 1
                if r.status == BOOKED:
                    g[buyer] = r.booking
            elif kind == _JOIN and waitlist and g[who] < 0:
                if deadline <= t:  # too late to wait for this session (never, with the presets)
                    continue
                r = join(a, p, [s], ch, klass_of[ch], deadline, t)
                if r.status == WAITLISTED:
                    self.joined[who] = True
                    self.requests_joined.append(r.request)
                    self.joined_at.append(t)
                elif r.status == Status.REJECTED and r.reason == Reason.SLOTS_LEFT:  # a slot is free: book it
                    r = book(a, p, s, ch, t, False)
                    nreq += 1
                    if r.status == BOOKED:
                        g[who] = r.booking
        self.requests += nreq

    def metrics(self, rush_s: float, total_s: float) -> Metrics:
        w, core = self.w, self.core
        n_b = core.n_bookings
        info = [core.booking_info(b) for b in range(n_b)]
        bs = np.array([x[0] for x in info], dtype=np.int64).reshape(-1)
        bp = np.array([x[2] for x in info], dtype=np.int64).reshape(-1)
        bch = np.array([x[4] for x in info], dtype=np.int64).reshape(-1)
        bst = np.array([x[6] for x in info], dtype=np.int64).reshape(-1)
        bt = np.array([x[7] for x in info], dtype=np.int64).reshape(-1)
        kind = w.patient_kind[bp] if n_b else np.zeros(0, np.int8)
        at_visit = (bst == _ARRIVED) | (bst == _NO_SHOW)
        exp = at_visit & (w.session_tier[bs] == 0) if n_b else np.zeros(0, bool)
        taken = int(exp.sum())
        scalper = int((exp & (kind != GENUINE)).sum())
        G = int((w.patient_kind == GENUINE).sum())
        # first booking of each genuine patient, and its wait from its channel's release
        gmask = kind == GENUINE
        first: dict[int, int] = {}
        for b in np.flatnonzero(gmask).tolist():
            first.setdefault(int(bp[b]), b)
        waits = []
        ch_index = {int(c): i for i, c in enumerate(self.chan.tolist())}
        for p, b in first.items():
            row = int(w.genuine_row[p])
            c = ch_index.get(int(bch[b]), int(w.rush_channel[row]))
            waits.append(int(bt[b]) - int(w.release[int(bs[b]), c]))
        fill_at = self.filled_at  # every joined request that was filled, from the events
        wl_waits = [fill_at[r] - t for r, t in zip(self.requests_joined, self.joined_at) if r in fill_at]
        # slots taken over time: each expert booking's creation, from its channel's release
        is_exp = w.session_tier[bs] == 0 if n_b else np.zeros(0, bool)
        lut = np.zeros(int(self.chan.max()) + 1 if len(self.chan) else 1, dtype=np.int64)
        lut[self.chan] = np.arange(len(self.chan))
        taken_ms = bt[is_exp] - w.release[bs[is_exp], lut[bch[is_exp]]]
        order = np.argsort(taken_ms, kind="stable")
        timeline = Timeline(
            expert_slots=int(w.session_capacity[w.session_tier == 0].sum()),
            taken_ms=taken_ms[order], taken_by_scalper=(kind[is_exp] != GENUINE)[order],
            genuine_wait_ms=np.sort(np.array(waits, dtype=np.int64)),
            waitlist_wait_ms=np.sort(np.array(wl_waits, dtype=np.int64)))
        log = core.flag_log()
        flagged = {key for at, k, key, reason, until in log if k == 0 and reason > 0}
        fl = np.array(sorted(flagged), dtype=np.int64)
        akind = w.account_kind[fl] if len(fl) else np.zeros(0, np.int8)
        return Metrics(
            policy=self.s.name,
            requests=self.requests,
            expert_slots_taken=taken,
            scalper_expert_share=scalper / taken if taken else 0.0,
            genuine_patients=G,
            genuine_success_rate=len(first) / G if G else 0.0,
            genuine_median_ms=float(np.median(waits)) if waits else None,
            waitlist_joined=len(self.requests_joined),
            waitlist_fill_rate=len(wl_waits) / len(self.requests_joined) if self.requests_joined else None,
            waitlist_median_ms=float(np.median(wl_waits)) if wl_waits else None,
            utilization=float((bst == _ARRIVED).sum()) / float(w.session_capacity.sum()),
            no_shows=int((bst == _NO_SHOW).sum()),
            handoffs=int((kind == BUYER).sum()),
            sniped=self.sniped,
            genuine_accounts=int((w.account_kind == GENUINE).sum()),
            flagged_genuine=int((akind == GENUINE).sum()),
            scalper_accounts=int((w.account_kind == SCALPER).sum()),
            flagged_scalper=int((akind == SCALPER).sum()),
            engine_seconds=total_s,
            requests_per_second=w.requests / rush_s if rush_s > 0 else 0.0,
            timeline=timeline,
        )


def run(world: World, policy: str | PolicySetup = "lottery", *, check_invariants: bool = False,
        progress: Callable[[str], None] | None = None, backend: str = "core") -> Metrics:
    """Replay ``world`` through a fresh Engine under one policy and measure it.

    ``policy`` is a POLICIES name or a PolicySetup of your own.  With
    ``check_invariants`` the engine checks its own invariants at the end (slow).
    ``progress``, if given, is called with the name of each phase as it starts:
    ``"setup"``, ``"rush"``, ``"day 1/N"`` ... ``"day N/N"``, ``"metrics"``
    (``run_phases(world)`` of them in all).  ``backend="reference"`` runs the
    plain model instead of the compiled core (slow: for small worlds).
    """
    if not isinstance(world, World):
        raise InvalidType(f"world must be a World (see generate()), not {type(world).__name__}")
    setup = _setup(policy)
    if progress is not None and not callable(progress):
        raise InvalidType(f"progress must be callable, not {type(progress).__name__}")
    tick = progress or (lambda phase: None)
    clock = time.perf_counter()
    tick("setup")
    r = _Run(world, setup, backend)
    tick("rush")
    rush_s = r.rush()
    r.replay(tick)
    if check_invariants:
        r.e._check_invariants()
    total = time.perf_counter() - clock
    tick("metrics")
    return r.metrics(rush_s, total)


def run_phases(world: World) -> int:
    """How many times ``run(world, ..., progress=f)`` calls ``f``."""
    return 3 + len(_clinic_days(world))


def _clinic_days(world: World) -> list[int]:
    """The clinic days of ``world``'s sessions, as day numbers from ``world.day0``."""
    return sorted({(t - world.day0) // DAY for t in world.session_start.tolist()})


def compare(scenario: Scenario | str,
            policies: Iterable[str | PolicySetup] | None = None) -> dict[str, Metrics]:
    """Run every policy (default: all of POLICIES, in order) on one generated world.

    ``policies`` names POLICIES entries or gives PolicySetups of your own; the
    result is keyed by policy name, so the names must differ.
    """
    if isinstance(scenario, str):
        if scenario not in PRESETS:
            raise InvalidArgument(f"unknown preset {scenario!r} (one of {sorted(PRESETS)})")
        scenario = PRESETS[scenario]
    if not isinstance(scenario, Scenario):
        raise InvalidType(f"scenario must be a Scenario or a preset name, not {type(scenario).__name__}")
    if isinstance(policies, (str, PolicySetup)):
        raise InvalidType("policies must be a list of policies, not one")
    setups = [_setup(n) for n in (POLICIES if policies is None else policies)]
    names = [s.name for s in setups]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"policy names repeat: {names}")
    world = generate(scenario)
    return {s.name: run(world, s) for s in setups}
