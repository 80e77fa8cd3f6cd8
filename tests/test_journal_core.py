"""The compiled core's command journal (docs/durability.md, "Records" and "Core API").

Random command sequences drive a ``Core`` with a journal in an anonymous mmap
(every journaled op, valid and invalid input, notes on some records); replaying
the buffer into a fresh ``Core`` must give the same ``dump()`` and
``state_hash()``.  Around that: CRC-32C vectors on both code paths, record
framing, idempotent replay by sequence number, torn and corrupt records,
``find_record``, rotation (also a rotate that raises), ``sync_every``,
``journal_fail``, and the facade's paths (``book_named``, ``cancel_named``).
"""
from __future__ import annotations

import mmap
import random
import struct
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slotengine import Engine, Policy, errors
from slotengine._core import Core, _crc32c_hardware, _crc32c_soft, crc32c
from slotengine.policy import CorePolicy

HEAD = struct.Struct("<IIQHHI")  # size, crc, seq, op, flags, nlen
OPS = {  # the on-disk op numbers (_journal.pxi): never renumbered
    "book": 1, "book_many": 2, "confirm": 3, "cancel": 4, "check_in": 5, "advance": 6,
    "drain": 7, "add_session": 16, "add_capacity": 17, "suspend": 18, "block_slot": 19,
    "unblock_slot": 20, "ensure_patients": 21, "ensure_accounts": 22, "mark_known": 23,
    "flag": 24, "unflag": 25, "block": 26, "unblock": 27, "import_blacklist": 28,
    "cancel_ticket": 29, "join_waitlist": 30, "cancel_waitlist": 31, "settle": 32,
    "top_up": 33, "refund": 34, "open_line": 35, "close_line": 36, "set_limit": 37,
    "repay": 38, "rng_next": 39,
}
#: Op codes the random runs of this process have journaled (checked by the last test).
SEEN_OPS: set[int] = set()


# -- CRC-32C ----------------------------------------------------------------------------

def crc_bitwise(data: bytes, crc: int = 0) -> int:
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 & -(c & 1))
    return c ^ 0xFFFFFFFF


# RFC 3720 (iSCSI) B.4 and the usual check value
VECTORS = [
    (b"", 0),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize("fn", [crc32c, _crc32c_soft], ids=["crc32c", "soft"])
def test_crc32c_vectors(fn) -> None:
    for data, want in VECTORS:
        assert fn(data) == want, data
        assert fn(bytearray(data)) == want
        assert fn(memoryview(data)) == want
    assert fn(b"6789", fn(b"12345")) == 0xE3069283
    m = mmap.mmap(-1, 4096)
    m[:9] = b"123456789"
    assert fn(memoryview(m)[:9]) == 0xE3069283
    with pytest.raises(errors.InvalidArgument):
        fn(b"x", -1)
    with pytest.raises(errors.InvalidArgument):
        fn(b"x", 2**32)
    with pytest.raises(TypeError):
        fn("text")
    assert isinstance(_crc32c_hardware(), bool)


@given(data=st.binary(max_size=200), start=st.integers(0, 7), crc=st.integers(0, 2**32 - 1))
def test_crc32c_paths_agree(data: bytes, start: int, crc: int) -> None:
    view = memoryview(bytes(start) + data)[start:]  # unaligned starts
    want = crc_bitwise(data, crc)
    assert crc32c(view, crc) == want
    assert _crc32c_soft(view, crc) == want


# -- helpers ------------------------------------------------------------------------------

def records(buf, pos: int, end: int) -> list[tuple[int, int, int, int, int, bytes, bytes]]:
    """Parse and check every record in buf[pos:end] up to a zero size: (offset, size, seq,
    op, flags, payload, note)."""
    out = []
    while end - pos >= 4:
        size, crc, seq, op, flags, nlen = HEAD.unpack_from(buf, pos)
        if size == 0:
            break
        assert size >= 24 and size % 8 == 0 and pos + size <= end
        assert crc == crc32c(bytes(buf[pos + 8:pos + size]))
        pad = (nlen + 7) // 8 * 8
        plen = size - 24 - pad
        assert plen >= 0 and plen % 8 == 0 and flags in (0, 1) and (flags or not nlen)
        payload = bytes(buf[pos + 24:pos + 24 + plen])
        note = bytes(buf[pos + 24 + plen:pos + 24 + plen + nlen])
        assert bytes(buf[pos + 24 + plen + nlen:pos + size]) == bytes(pad - nlen)
        out.append((pos, size, seq, op, flags, payload, note))
        pos += size
    return out


def random_policy(rnd: random.Random) -> CorePolicy:
    """A small world's policy with every feature sometimes on (times in ms, short)."""
    c = rnd.choice
    rr = c([(0, 0), (4, 4), (0, 10), (3, 30)])
    return CorePolicy(
        n_channels=c([2, 3]), public_channel=c([0, 1]), hold_ms=c([10, 60]),
        patient_limits=c([(), ((2, 100),), ((2, 60), (3, 400))]),
        one_per_department_day=c([False, True]), account_patients=c([0, 2, 3]),
        account_window_ms=c([100, 400]), bar_first_visit_expert=c([False, True]),
        ban_ms=c([(30,), (30, 80, 200)]), strike_window_ms=c([150, 1000]),
        cancel_strikes=c([0, 2]), cancel_window_ms=c([100, 500]),
        prequeue_ms=c([0, 0, 5, 20]), cohort_ms=c([0, 0, 5, 20]), outflow_gap_ms=c([0, 3]),
        slow_delay_ms=c([0, 7]), slow_interval_ms=c([1, 5]), slow_burst=c([1, 2]),
        early_ms=c([0, 3]), early_count=c([0, 2]), early_window_ms=50,
        cancel_flag_count=c([0, 2]), cancel_flag_window_ms=100,
        patients_flag_count=c([0, 2]), patients_flag_window_ms=100, rebook_ms=c([0, 10]),
        flag_ms=c([20, 200]), wl_classes=c([1, 2, 3]), wl_candidates=c([1, 2, 3]),
        wl_per_patient=c([1, 2]), wl_session_cap=c([1, 3, 1000]),
        rerelease_min_ms=rr[0], rerelease_max_ms=rr[1], noshow_grace_ms=c([0, 2, 15]),
        suspend_action=c([0, 1, 2]), cover=c([False, False, True]),
        settle_at_check_in=c([True, False]),
        credit_terms=((300, 100, 600, 100), (2000, 500, 5000, 500)),
        credit_raise_after=c([0, 1, 2]), bill_due_ms=c([20, 60, 300]),
        bill_notice_ms=c([0, 5, 15]),
    )


class Driver:
    """Random commands on a Core (every journaled op), mostly valid, some bad.

    Checks, command by command: a command that raises writes no record and leaves
    the journal where it was; one that returns writes at most one record (one,
    except ensure_* that do not grow and drains with nothing to drain).  With
    ``notes``, some commands carry a note; ``self.notes`` lists (seq, payload)
    of the notes written.
    """

    OPS: ClassVar[list[str]] = [
        "book", "book", "book", "book_many", "confirm", "cancel", "cancel", "check_in",
        "add_session", "add_capacity", "suspend", "block_slot", "unblock_slot",
        "ensure_patients", "ensure_accounts", "mark_known", "advance", "advance", "drain",
        "drain_array", "flag", "unflag", "block", "unblock", "import_blacklist",
        "cancel_ticket", "join", "join", "cancel_waitlist", "settle", "top_up", "top_up",
        "refund", "open_line", "close_line", "set_limit", "repay", "rng_next", "bad", "bill"]

    def __init__(self, core: Core, policy: CorePolicy, rnd: random.Random,
                 notes: bool = False) -> None:
        self.core, self.policy, self.rnd = core, policy, rnd
        self.t = 0
        self.swallow: tuple[type, ...] = (errors.SlotEngineError,)
        self.check_hash = False  # also compare state_hash around commands that raise
        self.raised: list[BaseException] = []
        self.with_notes = notes
        self.notes: list[tuple[int, bytes]] = []
        self.call("ensure_patients", rnd.randint(1, 6))
        self.call("ensure_accounts", rnd.randint(1, 6))
        for _ in range(rnd.randint(1, 3)):
            self.do_add_session()

    def call(self, method: str, *args: object) -> object:
        core = self.core
        before = core.journal_position()
        h = core.state_hash() if self.check_hash else None
        note = None
        if self.with_notes and self.rnd.random() < 0.3:
            note = self.rnd.randbytes(self.rnd.choice([0, 1, 7, 8, 30]))
            core.journal_note(note)
        try:
            out = getattr(core, method)(*args)
        except self.swallow as exc:
            if note is not None:
                core.journal_note(None)
            assert core.journal_position() == before, f"{method}{args} raised after writing"
            assert h is None or core.state_hash() == h, f"{method}{args} raised after a change"
            self.raised.append(exc)
            return None
        after = core.journal_position()
        assert after[1] - before[1] in (0, 1), f"{method}{args}: {after[1] - before[1]} records"
        if after[1] == before[1]:
            assert method in ("ensure_patients", "ensure_accounts", "drain_events",
                              "drain_events_array"), f"{method}{args} wrote no record"
            if note is not None:
                core.journal_note(None)  # as the facade does: the note did not go out
        elif note is not None:
            self.notes.append((before[1], note))
        return out

    @property
    def np(self) -> int:
        return self.core.n_patients

    @property
    def na(self) -> int:
        return self.core.n_accounts

    def tick(self) -> int:
        self.t += self.rnd.choice([0, 0, 1, 2, 5, 15])
        return self.t

    def step(self) -> None:
        getattr(self, "do_" + self.rnd.choice(self.OPS))()

    # -- picks ---------------------------------------------------------------------------

    def _s(self) -> int:
        return self.rnd.randrange(max(1, self.core.n_sessions))

    def _b(self) -> int:
        return self.rnd.randrange(max(1, self.core.n_bookings))

    def _p(self) -> int:
        return self.rnd.randrange(self.np)

    def _a(self) -> int:
        return self.rnd.randrange(self.na)

    def _ch(self) -> int:
        return self.rnd.randrange(self.policy.n_channels)

    def _owner(self, b: int) -> int:
        if b < self.core.n_bookings and self.rnd.random() < 0.8:
            return self.core.booking_info(b)[3]
        return self._a()

    def _kk(self) -> tuple[int, int]:
        kind = self.rnd.randint(0, 1)
        return kind, self.rnd.randrange(self.na if kind == 0 else self.np)

    # -- commands ------------------------------------------------------------------------

    def do_add_session(self) -> None:
        r, t, nch = self.rnd, self.tick(), self.policy.n_channels
        quotas = [r.randint(0, 3) for _ in range(nch)]
        if not sum(quotas):
            quotas[0] = 1
        release = [max(0, t + r.randint(-5, 60)) for _ in range(nch)]
        start = t + r.randint(0, 200)
        end = start + r.randint(1, 400)
        self.call("add_session", r.randint(0, 2), r.randint(0, 1), r.randint(0, 2),
                  r.randint(0, 1), start, end, max(0, start - r.randint(-10, 150)),
                  max(0, start - r.randint(-10, 100)), r.randint(1, 20), sum(quotas),
                  r.randint(0, 500), quotas, release, t, r.choice([-1, 0, 1]))

    def do_book(self) -> None:
        self.call("book", self._a(), self._p(), self._s(),
                  self.policy.public_channel if self.rnd.random() < 0.6 else self._ch(),
                  self.tick(), self.rnd.random() < 0.3)

    def do_book_many(self) -> None:
        n = self.rnd.randint(0, 6)
        nows = []
        for _ in range(n):
            nows.append(self.tick())
        cols = ([self._a() for _ in range(n)], [self._p() for _ in range(n)],
                [self._s() for _ in range(n)], [self._ch() for _ in range(n)], nows)
        self.call("book_many", *[np.array(c, dtype=np.int64) for c in cols],
                  self.rnd.random() < 0.3)

    def do_confirm(self) -> None:
        b = self._b()
        self.call("confirm", b, self._owner(b), self.tick())

    def do_cancel(self) -> None:
        b = self._b()
        self.call("cancel", b, self._owner(b), self.tick())

    def do_check_in(self) -> None:
        self.call("check_in", self._b(), self.tick())

    def do_add_capacity(self) -> None:
        self.call("add_capacity", self._s(), self.rnd.choice([1, 2, 70]), self._ch(), self.tick())

    def do_suspend(self) -> None:
        if self.rnd.random() < 0.3:
            self.call("suspend", self._s(), self.tick())

    def _slot(self) -> tuple[int, int]:
        s = self._s()
        cap = self.core.session_flags(s)[3] if self.core.n_sessions else 1
        return s, self.rnd.randint(1, cap)

    def do_block_slot(self) -> None:
        self.call("block_slot", *self._slot(), self.tick())

    def do_unblock_slot(self) -> None:
        self.call("unblock_slot", *self._slot(), self.tick())

    def do_ensure_patients(self) -> None:
        self.call("ensure_patients", min(12, self.np + self.rnd.randint(0, 2)))

    def do_ensure_accounts(self) -> None:
        self.call("ensure_accounts", min(12, self.na + self.rnd.randint(0, 2)))

    def do_mark_known(self) -> None:
        self.call("mark_known", self._p(), self.rnd.randint(0, 2), self.tick())

    def do_advance(self) -> None:
        self.t += self.rnd.choice([0, 3, 30, 150])
        self.call("advance", self.t)

    def do_drain(self) -> None:
        self.call("drain_events")

    def do_drain_array(self) -> None:
        self.call("drain_events_array")

    def do_flag(self) -> None:
        t = self.tick()
        self.call("flag", *self._kk(), self.rnd.choice([1, 2]), t + self.rnd.randint(1, 300), t)

    def do_unflag(self) -> None:
        self.call("unflag", *self._kk(), self.tick())

    def do_block(self) -> None:
        t = self.tick()
        self.call("block", *self._kk(), t + self.rnd.randint(1, 60), t)

    def do_unblock(self) -> None:
        self.call("unblock", *self._kk(), self.tick())

    def do_import_blacklist(self) -> None:
        t = self.tick()
        rows = [self._kk() for _ in range(self.rnd.randint(0, 3))]
        self.call("import_blacklist", [k for k, _ in rows], [k for _, k in rows],
                  [t + self.rnd.randint(1, 300) for _ in rows], t)

    def do_cancel_ticket(self) -> None:
        n = self.core.n_tickets
        k = self.rnd.randrange(max(1, n))
        a = self.core.ticket_info(k)[2] if n and self.rnd.random() < 0.8 else self._a()
        self.call("cancel_ticket", k, a, self.tick())

    def do_join(self) -> None:
        ns = max(1, self.core.n_sessions)
        cands = self.rnd.sample(range(ns), self.rnd.randint(1, min(ns, 3)))
        t = self.tick()
        self.call("join_waitlist", self._a(), self._p(), cands, self._ch(),
                  self.rnd.randint(1, 3), t + self.rnd.randint(1, 400), t)

    def do_cancel_waitlist(self) -> None:
        n = self.core.n_requests
        r = self.rnd.randrange(max(1, n))
        a = self.core.waitlist_info(r)[0] if n and self.rnd.random() < 0.8 else self._a()
        self.call("cancel_waitlist", r, a, self.tick())

    def do_settle(self) -> None:
        self.call("settle", self._b(), self.rnd.choice([0, 50, 300, 1000]), self.tick())

    def do_top_up(self) -> None:
        self.call("top_up", self._p(), self.rnd.randint(1, 2000), self.tick())

    def do_refund(self) -> None:
        self.call("refund", self._p(), self.rnd.randint(1, 500), self.tick())

    def do_open_line(self) -> None:
        self.call("open_line", self._p(), self.rnd.choice([1, 2]),
                  self.rnd.choice([-1, -1, self.rnd.randint(0, 1000)]), self.tick())

    def do_close_line(self) -> None:
        self.call("close_line", self._p(), self.tick())

    def do_set_limit(self) -> None:
        self.call("set_limit", self._p(), self.rnd.randint(0, 1200), self.tick())

    def do_repay(self) -> None:
        p = self._p()
        used = self.core.wallet(p)[5]
        self.call("repay", p, self.rnd.randint(1, max(1, used)), self.tick())

    def do_bill(self) -> None:
        """A visit on credit, so that repay has something to repay."""
        p, a, s = self._p(), self._a(), self._s()
        self.call("open_line", p, 1, -1, self.tick())
        r = self.call("book", a, p, s, self.policy.public_channel, self.tick(), False)
        if r is not None and r.booking is not None:
            self.call("check_in", r.booking, self.tick())
            self.call("settle", r.booking, self.rnd.randint(1, 300), self.tick())
        self.do_repay()

    def do_rng_next(self) -> None:
        self.call("rng_next")

    def do_bad(self) -> None:
        """Commands that raise: nothing is written (call() checks it)."""
        r, t = self.rnd, self.core.now
        case = r.randrange(8)
        if case == 0:
            self.call("book", self.na + 3, 0, 0, 0, t, False)
        elif case == 1:
            self.call("book_many", [0, 0], [0, 0], [0, 0], [0, 0], [t + 1, t], False)
        elif case == 2 and t > 0:
            self.call("advance", t - 1)
        elif case == 3:
            self.call("cancel", self.core.n_bookings + 1, 0, t)
        elif case == 4:
            self.call("flag", 0, 0, 1, t, t)  # until must be after now
        elif case == 5:
            self.call("import_blacklist", [0, 2], [0, 0], [t + 1, t + 1], t)
        elif case == 6:
            self.call("top_up", 0, 0, t)
        else:
            self.call("join_waitlist", 0, 0, [], 0, 1, t + 1, t)


def run_world(seed: int, notes: bool = False, size: int = 1 << 22):
    """A seeded random world journaling into an anonymous map, and its Driver."""
    rnd = random.Random(seed)
    policy = random_policy(rnd)
    core_seed = rnd.getrandbits(64)
    core = Core(policy, core_seed)
    buf = mmap.mmap(-1, size)
    core.journal_open(buf, 0, 1, 0, None, None)
    drv = Driver(core, policy, rnd, notes)
    return core, buf, drv, policy, core_seed


# -- replay equals the original -----------------------------------------------------------

@given(seed=st.integers(0, 2**32 - 1))
def test_replay_gives_the_same_state(seed: int) -> None:
    core, buf, drv, policy, core_seed = run_world(seed, notes=True)
    replica = Core(policy, core_seed)
    got_notes: list[bytes] = []
    checked = 1
    for i in range(150):
        drv.step()
        if i % 37 == 36:  # catch up from the start: records already applied are skipped
            pos, seq = core.journal_position()
            assert replica.replay(buf, 0, len(buf), checked, got_notes.append) == (pos, seq, 0)
            checked = seq
            assert replica.state_hash() == core.state_hash()
    pos, seq = core.journal_position()
    recs = records(buf, 0, len(buf))
    assert [r[2] for r in recs] == list(range(1, seq)), "seqs must be 1, 2, 3, ... without gaps"
    assert sum(r[1] for r in recs) == pos
    SEEN_OPS.update(r[3] for r in recs)
    assert replica.replay(buf, 0, len(buf), checked, got_notes.append) == (pos, seq, 0)
    assert replica.dump() == core.dump()
    assert replica.state_hash() == core.state_hash()
    assert got_notes == [n for _, n in drv.notes]
    assert [r[2] for r in recs if r[4]] == [s for s, _ in drv.notes]
    # a second replay from the start skips everything and changes nothing
    h = replica.state_hash()
    assert replica.replay(buf, 0, pos, seq, got_notes.append) == (pos, seq, 0)
    assert replica.state_hash() == h
    # replaying into a fresh core in one go gives the same state
    fresh = Core(policy, core_seed)
    assert fresh.replay(buf, 0, len(buf), 1, lambda _: None) == (pos, seq, 0)
    assert fresh.state_hash() == core.state_hash()
    # the next command after replay gives the same result on both
    assert core.rng_next() == fresh.rng_next()


def test_record_layout_of_the_hot_ops() -> None:
    policy = random_policy(random.Random(5))._replace(
        prequeue_ms=0, cohort_ms=0, cover=False, early_count=0)
    core = Core(policy, 9)
    buf = mmap.mmap(-1, 1 << 16)
    core.journal_open(buf, 64, 7, 0, None, None)
    core.ensure_patients(4)
    core.ensure_accounts(4)
    nch = policy.n_channels
    core.add_session(0, 0, 0, 0, 1000, 5000, 900, 900, 10, 6, 0, [6] + [0] * (nch - 1),
                     [0] * nch, 0)
    pos0 = core.journal_position()[0]
    core.book(1, 2, 0, 0, 5, True)
    core.confirm(0, 1, 6)
    core.check_in(0, 7)
    core.cancel(0, 1, 8)
    core.advance(9)
    a, p, s, c, t = (np.array(x, dtype=np.int64) for x in
                     ([0, 3], [1, 3], [0, 0], [0, 0], [10, 11]))
    core.book_many(a, p, s, c, t, False)
    recs = records(buf, pos0, len(buf))
    assert [(r[3], r[1]) for r in recs] == [
        (OPS["book"], 48), (OPS["confirm"], 40), (OPS["check_in"], 40), (OPS["cancel"], 40),
        (OPS["advance"], 32), (OPS["book_many"], 24 + 16 + 48)]
    assert struct.unpack("<qiiiHH", recs[0][5]) == (5, 1, 2, 0, 0, 1)
    assert struct.unpack("<iiq", recs[1][5]) == (0, 1, 6)
    assert struct.unpack("<iiq", recs[2][5]) == (0, 0, 7)
    # book_many's record: n, hold, then columns nows i64, accounts, patients, sessions i32,
    # channels u8, zero-padded to 8
    pl = recs[-1][5]
    assert struct.unpack("<qq2q2i2i2i2B6x", pl) == (2, 0, 10, 11, 0, 3, 1, 3, 0, 0, 0, 0)
    first = records(buf, 64, len(buf))
    assert first[0][2] == 7 and first[0][3] == OPS["ensure_patients"]
    assert bytes(buf[:64]) == bytes(64), "nothing before pos is touched"


# -- torn, corrupt and gapped records ------------------------------------------------------

def _world_with_records(seed: int, n: int = 60):
    core, buf, drv, policy, core_seed = run_world(seed)
    while core.journal_position()[1] < n:
        drv.step()
    return core, buf, policy, core_seed, records(buf, 0, len(buf))


@given(seed=st.integers(0, 2**32 - 1), where=st.floats(0, 1))
def test_unwritten_size_is_end(seed: int, where: float) -> None:
    _, buf, policy, core_seed, recs = _world_with_records(seed)
    k = int(where * (len(recs) - 1))
    off, _, seq = recs[k][:3]
    buf[off:off + 4] = bytes(4)  # a record whose size was never stored
    replica = Core(policy, core_seed)
    assert replica.replay(buf, 0, len(buf), 1, lambda _: None) == (off, seq, 0)
    assert replica.find_record(buf, off, len(buf)) == (recs[k + 1][0] if k + 1 < len(recs)
                                                       else -1)


@given(seed=st.integers(0, 2**32 - 1), where=st.floats(0, 1), byte=st.integers(4, 10_000),
       bit=st.integers(0, 7))
def test_flipped_bit_is_bad_and_find_record_skips_it(seed: int, where: float, byte: int,
                                                     bit: int) -> None:
    _, buf, policy, core_seed, recs = _world_with_records(seed)
    k = int(where * (len(recs) - 1))
    off, size, seq = recs[k][:3]
    i = off + 4 + byte % (size - 4)  # anywhere but the size word
    buf[i] ^= 1 << bit
    replica = Core(policy, core_seed)
    good = Core(policy, core_seed)
    assert replica.replay(buf, 0, len(buf), 1, lambda _: None) == (off, seq, 1)
    assert good.replay(buf, 0, off, 1, lambda _: None) == (off, seq, 0)
    assert replica.state_hash() == good.state_hash(), "state up to the bad record"
    nxt = recs[k + 1][0] if k + 1 < len(recs) else -1
    assert replica.find_record(buf, off, len(buf)) == nxt
    if k > 0:  # from the record before: the bad one is passed over
        assert replica.find_record(buf, recs[k - 1][0], len(buf)) == nxt
    buf[i] ^= 1 << bit
    assert replica.replay(buf, off, len(buf), seq, lambda _: None)[2] == 0


def test_bad_sizes_gaps_and_undecodable_records() -> None:
    core, buf, policy, core_seed, recs = _world_with_records(11, 20)
    pos, seq = core.journal_position()
    off, size = recs[5][:2]
    for bad in (8, 20, size + 4, len(buf)):  # too small, not a multiple of 8, past the end
        saved = bytes(buf[off:off + 4])
        buf[off:off + 4] = struct.pack("<I", bad)
        assert Core(policy, core_seed).replay(buf, 0, len(buf), 1, print)[::2] == (off, 1)
        buf[off:off + 4] = saved
    # end inside a record: BAD at that record
    assert Core(policy, core_seed).replay(buf, 0, off + size - 8, 1, print)[::2] == (off, 1)
    # a gap: renumber a record (with a correct CRC)
    saved = bytes(buf[off:off + size])
    struct.pack_into("<Q", buf, off + 8, recs[5][2] + 1)
    struct.pack_into("<I", buf, off + 4, crc32c(bytes(buf[off + 8:off + size])))
    assert Core(policy, core_seed).replay(buf, 0, len(buf), 1, print) == (off, recs[5][2], 1)
    # a good CRC on an unknown op, bad flags, or a hot op with a payload of the wrong
    # length: BAD too (find_record passes over the first two kinds)
    wrong_len = OPS["book"] if len(recs[5][5]) != 24 else OPS["confirm"]
    for op, flags in ((99, 0), (0, 0), (recs[5][3], 2), (wrong_len, 0)):
        buf[off:off + size] = saved
        struct.pack_into("<HH", buf, off + 16, op, flags)
        struct.pack_into("<I", buf, off + 4, crc32c(bytes(buf[off + 8:off + size])))
        if op != wrong_len:
            assert Core(policy, core_seed).find_record(buf, recs[4][0], len(buf)) == recs[6][0]
        assert Core(policy, core_seed).replay(buf, 0, len(buf), 1, print) == (off, recs[5][2], 1)
    buf[off:off + size] = saved
    assert Core(policy, core_seed).replay(buf, 0, len(buf), 1, lambda _: None) == (pos, seq, 0)
    # arguments
    with pytest.raises(errors.InvalidArgument):
        Core(policy, core_seed).replay(buf, 8, 0, 1, print)
    with pytest.raises(errors.InvalidArgument):
        Core(policy, core_seed).replay(buf, 0, len(buf) + 8, 1, print)
    with pytest.raises(errors.InvalidArgument):
        Core(policy, core_seed).replay(buf, 0, len(buf), 0, print)
    with pytest.raises(errors.InvalidState):
        core.replay(buf, 0, len(buf), seq, print)  # its journal is open
    assert Core(policy, core_seed).find_record(buf, pos, len(buf)) == -1


def test_a_record_that_does_not_apply_raises() -> None:
    _, buf, policy, core_seed, recs = _world_with_records(3, 30)
    other = Core(policy, core_seed)
    other.ensure_patients(1)
    other.advance(10**12)  # every later time is in its past
    k = next(i for i, r in enumerate(recs) if r[3] not in (OPS["ensure_patients"],
                                                            OPS["ensure_accounts"]))
    with pytest.raises(errors.CorruptJournal) as info:
        other.replay(buf, recs[k][0], len(buf), recs[k][2], print)
    assert info.value.offset == recs[k][0]


# -- rotation, sync, failure, notes ------------------------------------------------------

class Segments:
    """rotate() into fresh anonymous maps of ``size`` bytes (more if a record needs it)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.maps = [mmap.mmap(-1, size)]
        self.ends: list[int] = []
        self.core: Core | None = None
        self.fail: BaseException | None = None

    def rotate(self, need: int) -> tuple[mmap.mmap, int]:
        if self.fail is not None:
            raise self.fail
        assert self.core is not None
        self.ends.append(self.core.journal_position()[0])
        self.maps.append(mmap.mmap(-1, max(self.size, need + 8)))
        return self.maps[-1], 8  # a header of 8 bytes


@given(seed=st.integers(0, 2**32 - 1), seg=st.sampled_from([256, 512, 4096]))
def test_rotate_into_small_segments(seed: int, seg: int) -> None:
    rnd = random.Random(seed)
    policy = random_policy(rnd)
    core_seed = rnd.getrandbits(64)
    core = Core(policy, core_seed)
    segs = Segments(seg)
    segs.core = core
    core.journal_open(segs.maps[0], 0, 1, 0, None, segs.rotate)
    drv = Driver(core, policy, rnd)
    for _ in range(100):
        drv.step()
    big = rnd.randint(200, 400)  # a batch larger than any segment here
    core.book_many(*[np.zeros(big, dtype=np.int64)] * 4,
                   np.full(big, core.now, dtype=np.int64), False)
    pos, seq = core.journal_position()
    core.journal_close()
    replica = Core(policy, core_seed)
    expect = 1
    for m, end in zip(segs.maps, segs.ends + [pos]):
        start = 0 if m is segs.maps[0] else 8
        got = replica.replay(m, start, len(m), expect, lambda _: None)
        assert got[0] == end and got[2] == 0
        expect = got[1]
    assert expect == seq
    assert replica.state_hash() == core.state_hash()
    for m in segs.maps:  # the core released every view: the maps can close
        m.close()


def test_rotate_that_raises_changes_nothing() -> None:
    rnd = random.Random(2)
    policy = random_policy(rnd)._replace(prequeue_ms=0, cohort_ms=0)
    core = Core(policy, 1)
    segs = Segments(1024)
    segs.core = core
    core.journal_open(segs.maps[0], 0, 1, 0, None, segs.rotate)
    drv = Driver(core, policy, rnd)
    segs.fail = OSError(28, "No space left on device")
    drv.swallow = (errors.SlotEngineError, OSError)
    drv.check_hash = True  # a command that raises changed nothing
    for _ in range(300):
        drv.step()
    assert any(exc is segs.fail for exc in drv.raised)
    segs.fail = None
    for _ in range(50):
        drv.step()
    pos, _ = core.journal_close()
    replica = Core(policy, 1)
    expect = 1
    for m, end in zip(segs.maps, segs.ends + [pos]):
        got = replica.replay(m, 0 if m is segs.maps[0] else 8, len(m), expect, print)
        assert got[0] == end and got[2] == 0
        expect = got[1]
    assert replica.state_hash() == core.state_hash()


def test_full_buffer_without_rotate_raises_journal_error() -> None:
    core = Core(random_policy(random.Random(1)), 1)
    buf = bytearray(64)
    core.journal_open(buf, 0, 1, 0, None, None)
    core.ensure_patients(1)  # 32 bytes
    core.ensure_accounts(1)  # 32 bytes: full
    h = core.state_hash()
    with pytest.raises(errors.JournalError):
        core.advance(5)
    assert core.state_hash() == h and core.journal_position() == (64, 3)
    with pytest.raises(errors.JournalError):
        core.rng_next()


def test_sync_every() -> None:
    core = Core(random_policy(random.Random(1)), 1)
    calls = []
    buf = mmap.mmap(-1, 1 << 16)
    core.journal_open(buf, 0, 1, 3, lambda: calls.append(core.journal_position()), None)
    core.ensure_patients(1)
    core.ensure_accounts(1)
    assert calls == []
    core.advance(1)
    assert calls == [(96, 4)]  # after the third record, which is complete in the buffer
    for t in range(2, 8):
        core.advance(t)
    assert [c[1] for c in calls] == [4, 7, 10]

    def boom() -> None:
        raise OSError(5, "I/O error")

    core.journal_close()
    core.journal_open(buf, core.journal_position()[0], core.journal_position()[1], 1, boom,
                      None)
    with pytest.raises(OSError):
        core.advance(20)
    assert core.now == 20 and core.journal_position()[1] == 11  # written, then sync failed
    core.journal_fail("sync failed: I/O error")
    assert len(records(buf, 0, len(buf))) == 10


def test_open_close_position_and_bad_arguments() -> None:
    core = Core(random_policy(random.Random(1)), 1)
    buf = mmap.mmap(-1, 4096)
    assert core.journal_close() == (0, 0)
    for args, err in [((buf, 4, 1, 0, None, None), errors.InvalidArgument),
                      ((buf, 8192, 1, 0, None, None), errors.InvalidArgument),
                      ((buf, -8, 1, 0, None, None), errors.InvalidArgument),
                      ((buf, 0, 0, 0, None, None), errors.InvalidArgument),
                      ((buf, 0, True, 0, None, None), errors.InvalidArgument),
                      ((buf, 0, 1, -1, None, None), errors.InvalidArgument),
                      ((buf, 0, 1, 2, None, None), errors.InvalidType),
                      ((buf, 0, 1, 0, None, 5), errors.InvalidType),
                      ((b"read-only", 0, 1, 0, None, None), BufferError)]:
        with pytest.raises(err):
            core.journal_open(*args)
        core.ensure_patients(core.n_patients + 1)  # still off: nothing written
    assert bytes(buf[:64]) == bytes(64)
    core.journal_open(buf, 16, 2**64 - 5, 0, None, None)
    with pytest.raises(errors.InvalidState):
        core.journal_open(buf, 16, 1, 0, None, None)
    core.advance(3)
    assert core.journal_position() == (48, 2**64 - 4)
    assert core.journal_close() == (48, 2**64 - 4)
    core.advance(4)  # off again: not journaled
    assert core.journal_position() == (48, 2**64 - 4)
    buf.close()  # no view left


def test_journal_reserve_rotates_early_and_refuses_bad_input() -> None:
    core = Core(random_policy(random.Random(2)), 1)
    bufs = [mmap.mmap(-1, 4096), mmap.mmap(-1, 8192)]
    asked: list[int] = []

    def rotate(need: int) -> tuple:
        asked.append(need)
        return bufs[1], 0

    core.journal_open(bufs[0], 0, 1, 0, None, rotate)
    before = (core.state_hash(), core.journal_position())
    for bad, err in [("8", errors.InvalidType), (8.0, errors.InvalidType),
                     (True, errors.InvalidType), (None, errors.InvalidType),
                     (-1, errors.InvalidArgument), (2**70, errors.InvalidArgument)]:
        with pytest.raises(err):
            core.journal_reserve(bad)
        assert (core.state_hash(), core.journal_position()) == before and not asked
    core.journal_reserve(4096)  # fits: nothing happens
    assert not asked
    core.journal_reserve(4097)  # does not fit: a new buffer now, before any record
    assert asked == [4097] and core.journal_position() == (0, 1)
    assert core.state_hash() == before[0]
    core.journal_close()
    for b in bufs:
        b.close()


def test_journal_fail_refuses_every_command() -> None:
    rnd = random.Random(4)
    policy = random_policy(rnd)
    core = Core(policy, 1)
    buf = mmap.mmap(-1, 1 << 20)
    core.journal_open(buf, 0, 1, 0, None, None)
    drv = Driver(core, policy, rnd)
    for _ in range(40):
        drv.step()
    core.journal_fail("disk gone")
    buf.close()  # the view is released
    h, where = core.state_hash(), core.journal_position()
    t = core.now
    z = np.zeros(1, dtype=np.int64)
    nch = policy.n_channels
    calls = [
        ("book", 0, 0, 0, 0, t, False), ("book_many", z, z, z, z, z + t, False),
        ("book_many", [], [], [], [], [], False), ("confirm", 0, 0, t), ("cancel", 0, 0, t),
        ("check_in", 0, t),
        ("add_session", 0, 0, 0, 0, t + 10, t + 20, t, t, 1, 1, 0, [1] + [0] * (nch - 1),
         [0] * nch, t),
        ("add_capacity", 0, 1, 0, t), ("suspend", 0, t), ("block_slot", 0, 1, t),
        ("unblock_slot", 0, 1, t), ("ensure_patients", 100), ("ensure_patients", 1),
        ("ensure_accounts", 100), ("ensure_accounts", 1), ("mark_known", 0, 1, t),
        ("advance", t), ("drain_events",), ("drain_events_array",),
        ("flag", 0, 0, 1, t + 5, t), ("unflag", 0, 0, t), ("block", 0, 0, t + 5, t),
        ("unblock", 0, 0, t), ("import_blacklist", [0], [0], [t + 5], t),
        ("join_waitlist", 0, 0, [0], 0, 1, t + 5, t), ("top_up", 0, 5, t),
        ("open_line", 0, 1, -1, t), ("rng_next",),
    ]
    for method, *args in calls:
        with pytest.raises(errors.JournalError, match="disk gone"):
            getattr(core, method)(*args)
    assert core.state_hash() == h and core.journal_position() == where
    assert core.journal_close() == where
    with pytest.raises(errors.JournalError):
        core.advance(t)  # still failed after close
    with pytest.raises(errors.JournalError):
        core.journal_open(mmap.mmap(-1, 4096), 0, 1, 0, None, None)


def test_notes() -> None:
    core = Core(random_policy(random.Random(1)), 1)
    buf = mmap.mmap(-1, 1 << 16)
    core.journal_open(buf, 0, 1, 0, None, None)
    core.journal_note(b"names: A1 P1")
    core.ensure_patients(1)
    core.journal_note(bytearray(b"x" * 9))
    core.ensure_accounts(1)
    core.advance(1)  # no note
    core.journal_note(b"")
    core.advance(2)
    core.journal_note(b"dropped")
    with pytest.raises(errors.TimeWentBackwards):
        core.advance(1)
    core.journal_note(None)  # the facade clears a note its command did not use
    core.advance(3)
    with pytest.raises(errors.InvalidType):
        core.journal_note("text")
    with pytest.raises(errors.InvalidType):
        core.journal_note(5)
    got: list[bytes] = []
    replica = Core(random_policy(random.Random(1)), 1)
    replica.replay(buf, 0, len(buf), 1, got.append)
    assert got == [b"names: A1 P1", b"x" * 9, b""]
    recs = records(buf, 0, len(buf))
    assert [r[4] for r in recs] == [1, 1, 0, 1, 0]
    assert [r[1] for r in recs] == [32 + 16, 32 + 16, 32, 32, 32]
    # the note goes on the next record written, also after skipped commands
    core.journal_note(b"later")
    core.ensure_patients(1)  # does not grow: no record
    core.drain_events()  # nothing to drain: no record
    core.advance(4)
    assert records(buf, 0, len(buf))[-1][6] == b"later"


# -- the facade's paths ---------------------------------------------------------------------

def _engine(buf: mmap.mmap) -> Engine:
    """An in-memory engine journaling into buf (the core side only: no names in notes)."""
    e = Engine(Policy(prequeue_minutes=0, cohort_seconds=0, early_flag=(0, 1),
                      cancel_flag=(0, 30), patients_flag=(0, 30), rebook_seconds=0), seed=3)
    e._core.journal_open(buf, 0, 1, 0, None, None)
    for i in range(3):
        e.add_session(f"S{i}", hospital="H", department=f"D{i}", doctor=f"Dr {i}",
                      starts_at=1_800_000_000_000 + i * 3_600_000, capacity=4, fee=0,
                      release={"app": 0}, now=1_700_000_000_000)
    return e


def test_engine_paths_write_one_record_per_core_command() -> None:
    buf = mmap.mmap(-1, 1 << 20)
    e = _engine(buf)
    core = e._core
    t = 1_700_000_000_000
    ops = lambda: [r[3] for r in records(buf, 0, len(buf))][3:]
    b0 = e.book("A1", "P1", "S0", now=t).booking  # new ids: the slow path (ensure_*, book)
    assert ops() == [OPS["ensure_accounts"], OPS["ensure_patients"], OPS["book"]]
    b1 = e.book("A1", "P1", "S1", now=t + 1).booking  # known ids: book_named's fast path
    b2 = e.book("A1", "P2", "S1", now=t + 2, hold=True).booking
    assert None not in (b0, b1, b2)
    assert ops()[3:] == [OPS["book"], OPS["ensure_patients"], OPS["book"]]
    assert e.cancel(b1, account="A1", now=t + 3).ok  # cancel_named's fast path
    with pytest.raises(errors.UnknownAccount):
        e.cancel(b0, account="A9", now=t + 4)  # the slow path, raises: nothing written
    assert e.confirm(b2, account="A1", now=t + 5).ok
    e.register_patient("P3", follow_up_at=("H",), now=t + 6)
    e.flag(account="A1", until=t + 10_000, now=t + 7)
    e.advance(t + 8)
    assert ops()[6:] == [OPS["cancel"], OPS["confirm"], OPS["ensure_patients"],
                         OPS["mark_known"], OPS["flag"], OPS["advance"], OPS["drain"]]
    res = e.book_many(e.intern_accounts(["A1", "A2"]), e.intern_patients(["P1", "P3"]),
                      e.session_ids(["S2", "S2"]), e.channel_ids(["app", "app"]),
                      np.array([t + 9, t + 9]))
    assert len(res.status) == 2
    pos, seq = core.journal_position()
    replica = Core(e._core_policy, 3)
    assert replica.replay(buf, 0, len(buf), 1, lambda _: None) == (pos, seq, 0)
    assert replica.state_hash() == core.state_hash()


def test_engine_slow_path_refuses_before_registering_when_failed() -> None:
    e = _engine(mmap.mmap(-1, 1 << 16))
    e.book("A1", "P1", "S0", now=1_700_000_000_000)
    e._core.journal_fail("sync failed")
    names = (list(e._accounts.names), list(e._patients.names))
    h = e.state_hash()
    with pytest.raises(errors.JournalError):
        e.book("A2", "P2", "S0", now=1_700_000_000_001)  # new ids: slow path
    with pytest.raises(errors.JournalError):
        e.book("A1", "P1", "S1", now=1_700_000_000_001)  # fast path
    with pytest.raises(errors.JournalError):
        e.cancel(0, account="A1", now=1_700_000_000_002)
    with pytest.raises(errors.JournalError):
        e.cancel("0", account="A1", now=1_700_000_000_002)
    assert (list(e._accounts.names), list(e._patients.names)) == names
    assert e.state_hash() == h


def test_every_op_was_journaled() -> None:
    """The random runs above (this process, in file order) wrote every op."""
    if not SEEN_OPS:
        pytest.skip("run with the replay test")
    missing = {name for name, op in OPS.items() if op not in SEEN_OPS}
    assert not missing, f"never journaled: {sorted(missing)}"
