"""The journal's file layer (slotengine.journal): manifest, lock, segments, snapshots, recovery.

Most tests drive ``Journal`` with ``FakeCore``, a small Python model of the
compiled core's journal API (docs/durability.md: record layout, rotate and
sync callbacks, ``replay`` and ``find_record``), so the file rules are tested
on their own.  The tests at the end use the real compiled core when it has
the journal API.
"""
from __future__ import annotations

import errno
import gc
import hashlib
import json
import os
import random
import struct
import threading
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

import slotengine
from slotengine import _core, journal
from slotengine.errors import (
    CorruptJournal,
    InvalidArgument,
    InvalidType,
    JournalError,
    JournalWarning,
    PolicyError,
)
from slotengine.journal import SEGMENT_HEADER_SIZE as HDR
from slotengine.journal import Journal

HAVE_CRC = hasattr(_core, "crc32c")
HAVE_REPLAY = hasattr(_core.Core, "replay") and hasattr(_core.Core, "journal_open")
SMALL = 4096  # the smallest segment: a few dozen fake records


# -- a pure-Python CRC-32C (until the core has one; then a cross-check) ------

def _table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _table()


def py_crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C, continuing from ``crc`` like zlib.crc32."""
    c = crc ^ 0xFFFFFFFF
    for b in bytes(data):
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc32c(data: bytes, crc: int = 0) -> int:
    return _core.crc32c(data, crc) if HAVE_CRC else py_crc32c(data, crc)


@pytest.fixture(autouse=True)
def _crc(monkeypatch: pytest.MonkeyPatch) -> None:
    if not HAVE_CRC:
        monkeypatch.setattr(journal, "_crc32c", py_crc32c)


def test_crc32c_matches_the_reference_vector() -> None:
    assert py_crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"456789", crc32c(b"123")) == 0xE3069283  # chaining


# -- a model of the core's journal API ---------------------------------------

_REC = struct.Struct("<IIQHHI")  # size, crc, seq, op, flags, nlen


def record(seq: int, payload: bytes) -> bytes:
    """One journal record as the core lays it out (op 1, the payload as a note)."""
    body = struct.pack("<QHHI", seq, 1, 1, len(payload)) + payload
    body += bytes(-(len(body) + 8) % 8)
    size = len(body) + 8
    return struct.pack("<II", size, crc32c(body)) + body


class FakeCore:
    """The journal half of the compiled core, in Python: appends notes as records."""

    def __init__(self) -> None:
        self.applied: list[bytes] = []
        self.buf: Any = None
        self.pos = 0
        self.next_seq = 1
        self.sync_every = 0
        self.count = 0
        self.failed: str | None = None
        self.sync: Callable[[], None] | None = None
        self.rotate: Callable[[int], tuple[Any, int]] | None = None

    def state(self) -> str:
        return hashlib.sha256(b"|".join(self.applied)).hexdigest()

    # journal API
    def journal_open(self, buf: Any, pos: int, next_seq: int, sync_every: int,
                     sync: Callable[[], None], rotate: Callable[[int], tuple[Any, int]]) -> None:
        self.buf, self.pos, self.next_seq = memoryview(buf), pos, next_seq
        self.sync_every, self.sync, self.rotate = sync_every, sync, rotate

    def journal_position(self) -> tuple[int, int]:
        return self.pos, self.next_seq

    def journal_close(self) -> tuple[int, int]:
        if self.buf is not None:
            self.buf.release()
        self.buf = None
        return self.pos, self.next_seq

    def journal_fail(self, message: str) -> None:
        self.failed = message
        self.journal_close()

    def journal_note(self, payload: bytes | None) -> None:  # pragma: no cover - not used here
        pass

    def command(self, payload: bytes) -> None:
        """A state-changing command: check room (maybe rotate), apply, journal, maybe sync."""
        if self.failed is not None:
            raise JournalError(self.failed)
        rec = record(self.next_seq, payload) if self.buf is not None else b""
        if self.buf is not None and self.pos + len(rec) > len(self.buf):
            assert self.rotate is not None
            new, pos = self.rotate(len(rec))  # may raise: nothing changed
            self.buf.release()
            self.buf, self.pos = memoryview(new), pos
        self.applied.append(payload)
        if self.buf is None:
            return
        self.buf[self.pos + 4:self.pos + len(rec)] = rec[4:]
        self.buf[self.pos:self.pos + 4] = rec[:4]  # size last
        self.pos += len(rec)
        self.next_seq += 1
        self.count += 1
        if self.sync_every and self.count % self.sync_every == 0:
            assert self.sync is not None
            self.sync()

    @staticmethod
    def _valid(buf: Any, pos: int, end: int) -> bool:
        if pos + 24 > end:
            return False
        size, crc = struct.unpack_from("<II", buf, pos)
        return 24 <= size <= end - pos and size % 8 == 0 and crc == crc32c(bytes(buf[pos + 8:pos + size]))

    def replay(self, buf: Any, pos: int, end: int, expect_seq: int,
               note: Callable[[bytes], Any]) -> tuple[int, int, int]:
        while pos < end:
            if end - pos >= 4 and struct.unpack_from("<I", buf, pos)[0] == 0:
                return pos, expect_seq, 0
            if not self._valid(buf, pos, end):
                return pos, expect_seq, 1
            size, _, seq, _, _, nlen = _REC.unpack_from(buf, pos)
            if seq > expect_seq:
                return pos, expect_seq, 1
            if seq == expect_seq:
                payload = bytes(buf[pos + 24:pos + 24 + nlen])
                if payload.startswith(b"UNAPPLIABLE"):
                    raise CorruptJournal(f"record {seq} at offset {pos} does not apply", "", pos)
                self.applied.append(payload)
                note(payload)
                expect_seq += 1
            pos += size
        return pos, expect_seq, 0

    def find_record(self, buf: Any, pos: int, end: int) -> int:
        for off in range((pos + 8) & ~7, end, 8):
            if struct.unpack_from("<I", buf, off)[0] and self._valid(buf, off, end):
                return off
        return -1


# -- helpers ------------------------------------------------------------------

def segments(d: Path) -> list[Path]:
    return sorted(d.glob("journal-*.sej"))


def snapshots(d: Path) -> list[Path]:
    return sorted(d.glob("snapshot-*.ses"))


def files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def payloads(n: int, start: int = 0) -> list[bytes]:
    return [f"cmd{i:05d}".encode() * (1 + i % 3) for i in range(start, start + n)]


def journaled(d: Path, n: int, *, seg: int = SMALL, **kw: Any) -> FakeCore:
    """A fresh directory with ``n`` fake commands journaled, closed."""
    j = Journal(d, segment_bytes=seg, **kw)
    j.settle_manifest(None, None)
    core = FakeCore()
    j.attach(core, 1)
    for p in payloads(n):
        core.command(p)
    j.close()
    return core


def recover(d: Path, **kw: Any) -> tuple[FakeCore, int, Journal]:
    """Open ``d``, load the snapshot's applied list (if any), replay; the journal stays open."""
    j = Journal(d, segment_bytes=SMALL, **kw)
    j.settle_manifest(None, None)
    core = FakeCore()
    try:
        snap = j.latest_snapshot()
        if snap is not None:
            core.applied = [p for p in snap[1].split(b"|") if p]
        nxt = j.replay(core, lambda payload: None)
    except BaseException:
        j.close()
        raise
    return core, nxt, j


def record_offsets(path: Path) -> list[int]:
    """Offsets of the records in a segment."""
    data = path.read_bytes()
    out, pos = [], HDR
    while pos + 4 <= len(data):
        size = struct.unpack_from("<I", data, pos)[0]
        if size == 0:
            break
        out.append(pos)
        pos += size
    return out


def poke(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


# -- arguments, lock, directory ----------------------------------------------

@pytest.mark.parametrize("kw, err", [
    (dict(durability=1), InvalidType), (dict(durability="sometimes"), InvalidArgument),
    (dict(segment_bytes=True), InvalidType), (dict(segment_bytes=1.5), InvalidType),
    (dict(segment_bytes=100), InvalidArgument), (dict(group_ms=0), InvalidArgument),
    (dict(group_records=0), InvalidArgument), (dict(group_records="7"), InvalidType),
    (dict(repair=1), InvalidType),
])
def test_bad_arguments_raise_before_touching_the_disk(tmp_path: Path, kw: dict[str, Any],
                                                      err: type[Exception]) -> None:
    with pytest.raises(err):
        Journal(tmp_path / "eng", **kw)
    assert not (tmp_path / "eng").exists()


def test_directory_must_be_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for bad, err in ((42, InvalidType), (None, InvalidType), (b"x", InvalidType), ("", InvalidArgument)):
        with pytest.raises(err):
            Journal(bad)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    journal.check_policy_and_seed(None, None)
    journal.check_policy_and_seed(slotengine.Policy(), 2**64 - 1)
    for policy, seed, err in (("p", None, InvalidType), (None, True, InvalidType),
                              (None, 2**64, InvalidArgument), (None, -1, InvalidArgument)):
        with pytest.raises(err):
            journal.check_policy_and_seed(policy, seed)


def test_creates_the_directory_and_holds_the_lock(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    j = Journal(d)
    assert d.is_dir() and (d / "LOCK").exists() and j.directory == d and j.durability == "process"
    with pytest.raises(JournalError, match=str(d)):
        Journal(d)
    j.close()
    j.close()  # idempotent
    Journal(d).close()  # released


def test_a_directory_never_settled_is_removed_again(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b"
    Journal(d).close()  # e.g. Engine.open failed on a bad policy before the manifest
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    Journal(tmp_path / "kept").close()  # it existed before: only the lock file stays
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["LOCK"]
    with Journal(d) as j:
        j.settle_manifest(None, None)
    assert (d / "manifest.json").exists()


def test_a_file_in_the_way_is_a_journal_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(JournalError):
        Journal(tmp_path / "f")


# -- manifest -----------------------------------------------------------------

def test_manifest_is_created_with_defaults(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        policy, seed = j.settle_manifest(None, None)
    assert policy == slotengine.Policy() and seed == 0
    doc = json.loads((tmp_path / "manifest.json").read_text())
    assert doc["format"] == 1 and doc["seed"] == 0 and doc["policy_repr"] == repr(policy)
    assert not list(tmp_path.glob("*.tmp"))


def test_manifest_keeps_policy_and_seed(tmp_path: Path) -> None:
    p = slotengine.Policy(hold_minutes=7, release_days={"referral": 21})
    with Journal(tmp_path) as j:
        assert j.settle_manifest(p, 99) == (p, 99)
    with Journal(tmp_path) as j:
        stored, seed = j.settle_manifest(None, None)
        assert stored == p and seed == 99 and stored.release_days["referral"] == 21
        assert j.settle_manifest(p, 99) == (p, 99)
        assert j.settle_manifest(None, 99)[0] == p
    with Journal(tmp_path) as j:
        with pytest.raises(PolicyError, match="hold_minutes"):
            j.settle_manifest(slotengine.Policy(), None)
        with pytest.raises(PolicyError, match="seed"):
            j.settle_manifest(None, 100)
        with pytest.raises(InvalidType):
            j.settle_manifest("policy", None)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument):
            j.settle_manifest(None, -1)


def test_damaged_or_missing_manifest(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        j.settle_manifest(None, None)
    (tmp_path / "manifest.json").write_text("{not json")
    with Journal(tmp_path) as j, pytest.raises(JournalError, match="manifest"):
        j.settle_manifest(None, None)
    journaled(tmp_path / "e", 3)
    (tmp_path / "e" / "manifest.json").unlink()
    with Journal(tmp_path / "e") as j, pytest.raises(JournalError, match="no manifest"):
        j.settle_manifest(None, None)


# -- segments -----------------------------------------------------------------

def test_attach_creates_a_preallocated_segment(tmp_path: Path) -> None:
    j = Journal(tmp_path, segment_bytes=SMALL)
    j.settle_manifest(None, None)
    core = FakeCore()
    j.attach(core, 1)
    (seg,) = segments(tmp_path)
    assert seg.name == "journal-00000000000000000001.sej" and seg.stat().st_size == SMALL
    head = seg.read_bytes()[:HDR]
    assert head[:8] == b"SLOTJNL1"
    assert struct.unpack_from("<IIQ", head, 8) == (1, HDR, 1)
    assert struct.unpack_from("<I", head, 60)[0] == crc32c(head[:60])
    assert core.journal_position() == (HDR, 1)
    with pytest.raises(JournalError, match="already attached"):
        j.attach(FakeCore(), 1)
    j.close()


def test_segments_rotate_and_are_named_by_first_seq(tmp_path: Path) -> None:
    core = journaled(tmp_path, 300)
    segs = segments(tmp_path)
    assert len(segs) >= 3
    firsts = [int(p.name[8:28]) for p in segs]
    assert firsts[0] == 1 and firsts == sorted(firsts)
    total = 0
    for p, first in zip(segs, firsts):
        data = p.read_bytes()
        assert struct.unpack_from("<Q", data, 16)[0] == first
        offs = record_offsets(p)
        assert struct.unpack_from("<Q", data, offs[0] + 8)[0] == first  # its first record
        total += len(offs)
    assert total == 300 == len(core.applied)
    assert all(p.stat().st_size == SMALL for p in segs[:-1])
    # close() gave back the unused tail of the active segment
    assert segs[-1].stat().st_size == record_offsets(segs[-1])[-1] + len(record(300, payloads(1, 299)[0]))


def test_a_record_bigger_than_a_segment_gets_its_own(tmp_path: Path) -> None:
    j = Journal(tmp_path, segment_bytes=SMALL)
    j.settle_manifest(None, None)
    core = FakeCore()
    j.attach(core, 1)
    core.command(b"small")
    core.command(b"x" * 10_000)
    core.command(b"after")
    j.close()
    segs = segments(tmp_path)
    assert [p.name[8:28] for p in segs] == [f"{s:020d}" for s in (1, 2, 3)]
    assert segs[1].stat().st_size >= 10_000 + HDR
    again, nxt, j2 = recover(tmp_path)
    assert again.applied == core.applied and nxt == 4
    j2.close()


def _enospc(*args: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_at_attach(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path, segment_bytes=SMALL)
    j.settle_manifest(None, None)
    monkeypatch.setattr(os, "posix_fallocate", _enospc)
    with pytest.raises(JournalError, match="disk full"):
        j.attach(FakeCore(), 1)
    assert segments(tmp_path) == [] and not list(tmp_path.glob("*.tmp"))
    j.close()


def test_disk_full_at_rotate_fails_the_command_and_nothing_else(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal(tmp_path, segment_bytes=SMALL)
    j.settle_manifest(None, None)
    core = FakeCore()
    j.attach(core, 1)
    cmds = iter(payloads(1000))
    n_segs = 1
    while len(segments(tmp_path)) == n_segs:  # fill the first segment
        core.command(next(cmds))
    applied = list(core.applied)
    # Fill the second one too, but with the disk full at the next rotate.
    with monkeypatch.context() as m:
        m.setattr(os, "posix_fallocate", _enospc)
        while True:
            p = next(cmds)
            try:
                core.command(p)
            except JournalError as exc:
                assert "disk full" in str(exc)
                break
            applied.append(p)
        assert core.applied == applied and len(segments(tmp_path)) == 2
        assert not list(tmp_path.glob("*.tmp"))
    core.command(p)  # space again: the same command now goes through
    j.close()
    again, _, j2 = recover(tmp_path)
    assert again.applied == applied + [p]
    j2.close()


def test_attach_refuses_to_overwrite_records(tmp_path: Path) -> None:
    journaled(tmp_path, 10)
    j = Journal(tmp_path, segment_bytes=SMALL)
    with pytest.raises(JournalError, match="replay"):
        j.attach(FakeCore(), 1)
    j.close()


def test_off_mode_journals_nothing(tmp_path: Path) -> None:
    j = Journal(tmp_path, durability="off")
    j.settle_manifest(None, None)
    core = FakeCore()
    j.attach(core, 1)
    core.command(b"x")
    j.commit()
    j.close()
    assert segments(tmp_path) == []


# -- snapshots ----------------------------------------------------------------

def _snap(applied: list[bytes]) -> bytes:
    return b"|".join(applied)


def test_snapshot_roundtrip_and_pruning(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        assert j.latest_snapshot() is None
        for seq in (5, 9, 12):
            path = j.write_snapshot(seq, b"core%d" % seq, b"facade")
            assert path.name == f"snapshot-{seq:020d}.ses"
        assert [p.name[9:29] for p in snapshots(tmp_path)] == [f"{s:020d}" for s in (9, 12)]
        assert j.latest_snapshot() == (12, b"core12", b"facade")
        assert not list(tmp_path.glob("*.tmp"))
        j.write_snapshot(13, b"", b"")
        assert j.latest_snapshot() == (13, b"", b"")


@pytest.mark.parametrize("damage", ["body", "magic", "truncate", "header", "rename", "empty"])
def test_a_bad_snapshot_falls_back_to_the_older(tmp_path: Path, damage: str) -> None:
    with Journal(tmp_path) as j:
        j.write_snapshot(3, b"old core", b"old facade")
        newest = j.write_snapshot(7, b"new core" * 100, b"new facade")
    data = bytearray(newest.read_bytes())
    if damage == "body":
        data[-5] ^= 1
    elif damage == "magic":
        data[0:8] = b"SLOTSNP9"
    elif damage == "truncate":
        del data[-10:]
    elif damage == "header":
        data[16] ^= 0x40  # the seq: the header CRC no longer matches
    elif damage == "empty":
        data = bytearray()
    newest.write_bytes(bytes(data))
    if damage == "rename":
        newest.rename(tmp_path / f"snapshot-{8:020d}.ses")
    with Journal(tmp_path) as j:
        with pytest.warns(JournalWarning, match="snapshot-0000"):
            assert j.latest_snapshot() == (3, b"old core", b"old facade")


def test_no_good_snapshot_means_none(tmp_path: Path) -> None:
    with Journal(tmp_path) as j:
        p = j.write_snapshot(3, b"c", b"f")
    p.write_bytes(b"garbage")
    with Journal(tmp_path) as j, pytest.warns(JournalWarning):
        assert j.latest_snapshot() is None


def test_a_failed_snapshot_write_leaves_old_files_intact(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    journaled(tmp_path, 100)
    with Journal(tmp_path) as j:
        j.write_snapshot(40, b"a", b"b")
        j.write_snapshot(60, b"c", b"d")
        before = files(tmp_path)
        calls = []

        def failing(fd: int, data: Any) -> None:
            calls.append(len(data))
            if len(calls) == 2:  # the header went out; the body hits a full disk
                raise OSError(errno.ENOSPC, "No space left on device")
            os.write(fd, data)

        with monkeypatch.context() as m:
            m.setattr(journal, "_write_all", failing)
            with pytest.raises(JournalError, match="snapshot"):
                j.write_snapshot(90, b"e" * 5000, b"f")
        assert files(tmp_path) == before
        with monkeypatch.context() as m:
            m.setattr(os, "fsync", _enospc)
            with pytest.raises(JournalError):
                j.write_snapshot(91, b"e", b"f")
        assert files(tmp_path) == before
        assert j.latest_snapshot() == (60, b"c", b"d")


def test_segments_covered_by_the_older_kept_snapshot_are_deleted(tmp_path: Path) -> None:
    j = Journal(tmp_path, segment_bytes=SMALL)
    j.settle_manifest(None, None)
    core = FakeCore()
    j.attach(core, 1)
    for p in payloads(400):
        core.command(p)
    firsts = [int(p.name[8:28]) for p in segments(tmp_path)]
    assert len(firsts) >= 4
    cut = firsts[2]  # a snapshot up to cut - 1 covers segments 0 and 1 exactly
    j.write_snapshot(cut - 1, _snap(core.applied[:cut - 1]), b"")
    assert len(segments(tmp_path)) == len(firsts)  # one snapshot: nothing deleted
    j.write_snapshot(cut + 5, _snap(core.applied[:cut + 5]), b"")
    assert [int(p.name[8:28]) for p in segments(tmp_path)] == firsts[2:]
    j.write_snapshot(400, _snap(core.applied), b"")  # keeps cut + 5 and 400: segment 2 stays
    assert [int(p.name[8:28]) for p in segments(tmp_path)] == firsts[2:]
    for p in payloads(50, 400):
        core.command(p)
    j.close()
    again, nxt, j2 = recover(tmp_path)
    assert again.applied == core.applied and nxt == 451
    j2.close()


def test_the_active_segment_is_never_deleted(tmp_path: Path) -> None:
    j = Journal(tmp_path, segment_bytes=SMALL)
    j.settle_manifest(None, None)
    core = FakeCore()
    j.attach(core, 1)
    for p in payloads(5):
        core.command(p)
    j.write_snapshot(5, _snap(core.applied), b"")
    j.write_snapshot(5, _snap(core.applied), b"")
    assert len(segments(tmp_path)) == 1
    j.close()


# -- recovery -----------------------------------------------------------------

def test_replay_gives_back_every_command(tmp_path: Path) -> None:
    core = journaled(tmp_path, 120)
    again, nxt, j = recover(tmp_path)
    assert again.applied == core.applied and nxt == 121
    j.attach(again, nxt)  # new commands go to a new segment
    assert segments(tmp_path)[-1].name == f"journal-{121:020d}.sej"
    again.command(b"more")
    j.close()
    third, nxt, j = recover(tmp_path)
    assert third.applied == core.applied + [b"more"] and nxt == 122
    j.close()


def test_replay_after_a_snapshot_skips_what_it_covers(tmp_path: Path) -> None:
    core = journaled(tmp_path, 80)
    with Journal(tmp_path) as j:
        j.write_snapshot(50, _snap(core.applied[:50]), b"")
    again, nxt, j = recover(tmp_path)
    assert again.applied == core.applied and nxt == 81
    j.close()


@pytest.mark.parametrize("damage", ["flip", "zero"])
def test_damage_among_records_a_snapshot_covers_is_not_read(tmp_path: Path, damage: str) -> None:
    core = journaled(tmp_path, 60)
    seg = segments(tmp_path)[0]
    offs = record_offsets(seg)
    with Journal(tmp_path) as j:
        j.write_snapshot(40, _snap(core.applied[:40]), b"")
    if damage == "flip":
        poke(seg, offs[10] + 20, b"\xff")
    else:
        poke(seg, offs[10], bytes(offs[12] - offs[10]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again, nxt, j = recover(tmp_path)
    assert again.applied == core.applied and nxt == 61
    j.close()
    with Journal(tmp_path) as j:  # without the snapshot the same damage is corruption
        with pytest.raises(CorruptJournal):
            j.replay(FakeCore(), lambda payload: None)


def test_damage_on_the_first_needed_record_is_still_corruption(tmp_path: Path) -> None:
    core = journaled(tmp_path, 60)
    seg = segments(tmp_path)[0]
    offs = record_offsets(seg)
    with Journal(tmp_path) as j:
        j.write_snapshot(40, _snap(core.applied[:40]), b"")
    poke(seg, offs[40] + 20, b"\xff")  # record 41
    with pytest.raises(CorruptJournal) as info:
        recover(tmp_path)
    assert info.value.offset == offs[40]


def test_an_empty_directory_starts_at_one(tmp_path: Path) -> None:
    core, nxt, j = recover(tmp_path)
    assert nxt == 1 and core.applied == []
    j.attach(core, nxt)
    j.close()
    core, nxt, j = recover(tmp_path)  # an empty segment: still 1
    assert nxt == 1
    j.attach(core, nxt)  # replaces the empty segment
    assert len(segments(tmp_path)) == 1
    j.close()


def test_a_torn_last_record_is_dropped_with_a_warning(tmp_path: Path) -> None:
    core = journaled(tmp_path, 100)
    last = segments(tmp_path)[-1]
    off = record_offsets(last)[-1]
    poke(last, off + 20, b"\xff")  # the body of the last record: its CRC fails
    with pytest.warns(JournalWarning, match=f"offset {off} of .*{last.name}"):
        again, nxt, j = recover(tmp_path)
    assert again.applied == core.applied[:-1] and nxt == 100
    assert not any(last.read_bytes()[off:])  # zeroed
    j.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again, nxt, j = recover(tmp_path)  # nothing to warn about any more
    assert nxt == 100
    j.close()


def test_a_half_written_record_at_the_end_is_torn(tmp_path: Path) -> None:
    # size written, the rest of the page never reached the disk
    core = journaled(tmp_path, 30)
    last = segments(tmp_path)[-1]
    end = record_offsets(last)[-1] + len(record(30, core.applied[-1]))
    with open(last, "r+b") as f:
        f.truncate(SMALL)
    poke(last, end, struct.pack("<I", 48))
    with pytest.warns(JournalWarning, match="torn"):
        again, nxt, j = recover(tmp_path)
    assert again.applied == core.applied and nxt == 31
    j.close()


def test_a_truncated_last_segment_is_a_torn_tail(tmp_path: Path) -> None:
    core = journaled(tmp_path, 100)
    last = segments(tmp_path)[-1]
    off = record_offsets(last)[-1]
    os.truncate(last, off + 12)
    with pytest.warns(JournalWarning, match="torn"):
        again, nxt, j = recover(tmp_path)
    assert again.applied == core.applied[:-1] and nxt == 100
    j.close()


def test_a_corrupt_record_in_the_middle_changes_nothing(tmp_path: Path) -> None:
    journaled(tmp_path, 100)
    seg = segments(tmp_path)[-1]
    off = record_offsets(seg)[1]
    poke(seg, off + 20, b"\xff")
    before = files(tmp_path)
    with pytest.raises(CorruptJournal) as info:
        recover(tmp_path)
    assert info.value.path == str(seg) and info.value.offset == off
    assert str(off) in str(info.value) and seg.name in str(info.value)
    assert files(tmp_path) == before
    Journal(tmp_path).close()  # the lock was released


def test_a_corrupt_segment_before_others_is_corrupt(tmp_path: Path) -> None:
    journaled(tmp_path, 400)
    first = segments(tmp_path)[0]
    off = record_offsets(first)[-1]  # the last record of a full segment: records follow elsewhere
    poke(first, off + 20, b"\xff")
    before = files(tmp_path)
    with pytest.raises(CorruptJournal) as info:
        recover(tmp_path)
    assert info.value.path == str(first) and info.value.offset == off
    assert files(tmp_path) == before


def test_a_zeroed_hole_before_valid_records_is_corrupt(tmp_path: Path) -> None:
    journaled(tmp_path, 20)
    seg = segments(tmp_path)[0]
    offs = record_offsets(seg)
    poke(seg, offs[5], bytes(offs[6] - offs[5]))
    with pytest.raises(CorruptJournal) as info:
        recover(tmp_path)
    assert info.value.offset == offs[5]


def test_a_truncated_middle_segment_is_corrupt(tmp_path: Path) -> None:
    journaled(tmp_path, 400)
    first = segments(tmp_path)[0]
    off = record_offsets(first)[-1]
    os.truncate(first, off + 8)
    with pytest.raises(CorruptJournal) as info:
        recover(tmp_path)
    assert info.value.path == str(first)


def test_a_missing_segment_is_corrupt(tmp_path: Path) -> None:
    journaled(tmp_path, 400)
    segs = segments(tmp_path)
    segs[1].unlink()
    with pytest.raises(CorruptJournal, match="expected") as info:
        recover(tmp_path)
    assert info.value.path == str(segs[2]) and info.value.offset == 0


def test_a_bad_header_in_the_middle_is_corrupt(tmp_path: Path) -> None:
    journaled(tmp_path, 400)
    segs = segments(tmp_path)
    poke(segs[1], 3, b"X")
    with pytest.raises(CorruptJournal, match="header") as info:
        recover(tmp_path)
    assert info.value.path == str(segs[1]) and info.value.offset == 0


@pytest.mark.parametrize("size", [0, 10, HDR, SMALL])
def test_a_last_segment_cut_while_being_created_is_dropped(tmp_path: Path, size: int) -> None:
    core = journaled(tmp_path, 400)
    nxt_name = tmp_path / f"journal-{401:020d}.sej"
    nxt_name.write_bytes(bytes(size))
    with pytest.warns(JournalWarning, match="incomplete"):
        again, nxt, j = recover(tmp_path)
    assert again.applied == core.applied and nxt == 401 and not nxt_name.exists()
    j.close()


def test_repair_truncates_at_the_corruption(tmp_path: Path) -> None:
    core = journaled(tmp_path, 400)
    segs = segments(tmp_path)
    offs = record_offsets(segs[1])
    poke(segs[1], offs[3] + 20, b"\xff")
    kept = len(record_offsets(segs[0])) + 3
    with pytest.warns(JournalWarning, match=r"repair: .* dropped \d+ bytes and deleted (\d+) segment") as rec:
        again, nxt, j = recover(tmp_path, repair=True)
    assert f"deleted {len(segs) - 2} segment" in str(rec[0].message)
    assert again.applied == core.applied[:kept] and nxt == kept + 1
    assert segments(tmp_path) == segs[:2]
    j.attach(again, nxt)
    again.command(b"new")
    j.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third, nxt, j = recover(tmp_path)
    assert third.applied == core.applied[:kept] + [b"new"] and nxt == kept + 2
    j.close()


def test_repair_of_a_bad_header_deletes_from_there(tmp_path: Path) -> None:
    core = journaled(tmp_path, 400)
    segs = segments(tmp_path)
    poke(segs[1], 0, b"XXXX")
    with pytest.warns(JournalWarning, match="repair"):
        again, nxt, j = recover(tmp_path, repair=True)
    kept = len(record_offsets(segs[0]))
    assert again.applied == core.applied[:kept] and nxt == kept + 1
    assert segments(tmp_path) == segs[:1]
    j.close()


def test_a_record_the_core_refuses_is_corrupt(tmp_path: Path) -> None:
    j = Journal(tmp_path, segment_bytes=SMALL)
    j.settle_manifest(None, None)
    core = FakeCore()
    j.attach(core, 1)
    for p in payloads(10) + [b"UNAPPLIABLE"] + payloads(5, 10):
        core.command(p)
    j.close()
    seg = segments(tmp_path)[0]
    off = record_offsets(seg)[10]
    before = files(tmp_path)
    with pytest.raises(CorruptJournal, match="does not apply") as info:
        recover(tmp_path)
    assert info.value.path == str(seg) and info.value.offset == off
    assert files(tmp_path) == before
    with pytest.warns(JournalWarning, match="repair"):
        again, nxt, j = recover(tmp_path, repair=True)
    assert again.applied == core.applied[:10] and nxt == 11
    assert j.last_seq(again) == 10
    j.close()


def test_last_seq_and_closed(tmp_path: Path) -> None:
    core = journaled(tmp_path, 12)
    again, nxt, j = recover(tmp_path)
    assert j.last_seq(again) == 12 and not j.closed
    j.attach(again, nxt)
    again.command(b"x")
    assert j.last_seq(again) == 13
    j.close()
    assert j.closed and j.last_seq(again) == 13
    j = Journal(tmp_path / "off", durability="off")
    assert j.latest_snapshot() is None and j.replay(core, print) == 1
    j.attach(core, 1)
    assert j.last_seq(core) == 0
    j.write_snapshot(j.last_seq(core), b"c", b"f")
    j.close()
    with Journal(tmp_path / "off", durability="off") as j:
        assert j.latest_snapshot() == (0, b"c", b"f")
        assert j.last_seq(core) == 0


# -- syncing ------------------------------------------------------------------

class Counting:
    """Wraps Journal._flush_to to count the msyncs that actually had work."""

    def __init__(self, j: Journal, delay: float = 0.0, fail: bool = False) -> None:
        self.j, self.delay, self.fail, self.calls = j, delay, fail, 0
        self.inner = j._flush_to
        j._flush_to = self  # type: ignore[method-assign]

    def __call__(self, pos: int, next_seq: int) -> None:
        if next_seq - 1 > self.j._synced_seq:
            self.calls += 1
            if self.fail:
                raise OSError(errno.EIO, "Input/output error")
            time.sleep(self.delay)
        self.inner(pos, next_seq)


def test_fsync_mode_syncs_every_record(tmp_path: Path) -> None:
    j = Journal(tmp_path, durability="fsync", segment_bytes=SMALL)
    j.settle_manifest(None, None)
    core = FakeCore()
    j.attach(core, 1)
    assert core.sync_every == 1
    count = Counting(j)
    for p in payloads(10):
        core.command(p)
    assert count.calls == 10 and j._synced_seq == 10
    j.defer_sync = True
    for p in payloads(5):
        core.command(p)
    assert count.calls == 10 and j._synced_seq == 10
    j.commit()
    assert count.calls == 11 and j._synced_seq == 15
    j.commit()  # nothing new: no msync
    assert count.calls == 11
    j.close()


def test_sync_every_by_mode(tmp_path: Path) -> None:
    for mode, every in (("process", 0), ("grouped", 17), ("fsync", 1)):
        j = Journal(tmp_path / mode, durability=mode, group_records=17, segment_bytes=SMALL)
        core = FakeCore()
        j.attach(core, 1)
        assert core.sync_every == every
        j.commit()  # a no-op but in fsync mode, where there is nothing to sync
        j.close()


def test_group_commit_shares_msyncs(tmp_path: Path) -> None:
    j = Journal(tmp_path, durability="fsync", segment_bytes=1 << 20)
    j.settle_manifest(None, None)
    core = FakeCore()
    j.attach(core, 1)
    j.defer_sync = True
    count = Counting(j, delay=0.005)
    engine_lock = threading.Lock()
    written: list[int] = []
    done: list[tuple[int, int]] = []
    n_threads, per_thread = 8, 25

    def worker(k: int) -> None:
        for i in range(per_thread):
            with engine_lock:  # the thread-safe facade's lock
                core.command(b"t%d-%d" % (k, i))
                seq = core.next_seq - 1
                written.append(seq)
            j.commit()
            done.append((seq, j._synced_seq))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == n_threads * per_thread
    assert all(synced >= seq for seq, synced in done)  # nobody returned before its record was synced
    assert count.calls < n_threads * per_thread  # and msyncs were shared
    j.close()


def test_a_failed_group_commit_fails_every_waiter(tmp_path: Path) -> None:
    j = Journal(tmp_path, durability="fsync", segment_bytes=1 << 20)
    core = FakeCore()
    j.attach(core, 1)
    j.defer_sync = True
    Counting(j, delay=0.01, fail=True)
    lock = threading.Lock()
    outcomes: list[str] = []

    def worker(k: int) -> None:
        with lock:
            try:
                core.command(b"w%d" % k)
            except JournalError:
                outcomes.append("refused")
                return
        try:
            j.commit()
            outcomes.append("acknowledged")
        except JournalError:
            outcomes.append("failed")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "acknowledged" not in outcomes and len(outcomes) == 6
    assert core.failed is not None
    j.close()


def test_a_dropped_journal_releases_its_lock(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    del j
    gc.collect()
    Journal(tmp_path).close()


def test_a_failed_sync_fails_the_journal(tmp_path: Path) -> None:
    j = Journal(tmp_path, durability="fsync", segment_bytes=SMALL)
    j.settle_manifest(None, None)
    core = FakeCore()
    j.attach(core, 1)
    core.command(b"ok")
    Counting(j, fail=True)
    with pytest.raises(JournalError, match="sync"):
        core.command(b"lost")
    assert core.failed is not None
    with pytest.raises(JournalError):
        core.command(b"refused")
    with pytest.raises(JournalError):
        j.commit()
    j.close()  # the failure was reported through fail(): close is quiet


def test_grouped_mode_flushes_in_the_background_and_stops_on_close(tmp_path: Path) -> None:
    j = Journal(tmp_path, durability="grouped", group_ms=1, group_records=10**6, segment_bytes=SMALL)
    j.settle_manifest(None, None)
    core = FakeCore()
    j.attach(core, 1)
    flusher = j._flusher
    assert flusher is not None and flusher.is_alive() and flusher.daemon
    for p in payloads(5):
        core.command(p)
    deadline = time.monotonic() + 5
    while j._synced_seq < 5 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert j._synced_seq == 5
    j.close()
    assert not flusher.is_alive() and j._flusher is None


def test_grouped_mode_syncs_every_group_records(tmp_path: Path) -> None:
    j = Journal(tmp_path, durability="grouped", group_ms=3_600_000, group_records=4, segment_bytes=SMALL)
    core = FakeCore()
    j.attach(core, 1)
    for p in payloads(9):
        core.command(p)
    assert j._synced_seq == 8
    j.close()


def test_a_background_sync_failure_is_raised_by_close(tmp_path: Path) -> None:
    j = Journal(tmp_path, durability="grouped", group_ms=1, group_records=10**6, segment_bytes=SMALL)
    core = FakeCore()
    j.attach(core, 1)
    Counting(j, fail=True)
    core.command(b"x")
    deadline = time.monotonic() + 5
    while j._failed is None and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(JournalError, match="Input/output"):
        j.close()
    j.close()


def test_rotation_syncs_the_old_segment_in_durable_modes(tmp_path: Path) -> None:
    j = Journal(tmp_path, durability="grouped", group_ms=3_600_000, group_records=10**6,
                segment_bytes=SMALL)
    core = FakeCore()
    j.attach(core, 1)
    while len(segments(tmp_path)) < 3:
        core.command(b"y" * 40)
    # Everything in the retired segments is synced; the active one is not yet.
    assert j._synced_seq == int(segments(tmp_path)[-1].name[8:28]) - 1
    j.close()


# -- the real compiled core ---------------------------------------------------

needs_core = pytest.mark.skipif(not HAVE_REPLAY, reason="the compiled core has no journal API yet")


def test_crc32c_of_the_core_matches() -> None:
    if not HAVE_CRC:
        pytest.skip("the compiled core has no crc32c yet")
    for data in (b"", b"a", bytes(range(256)) * 3):
        assert _core.crc32c(data) == py_crc32c(data)
        assert _core.crc32c(data[7:], _core.crc32c(data[:7])) == py_crc32c(data)


CST = timezone(timedelta(hours=8))


def workload(engine: slotengine.Engine, n: int, hook: Callable[[int], None] = lambda i: None,
             *, seed: int = 1, start: int = 0) -> None:
    """``n`` deterministic commands (sessions, bookings, cancels, advances); ``hook(i)`` after each."""
    rng = random.Random(seed)
    t0 = datetime(2026, 11, 24, 9, 0, tzinfo=CST)
    if start == 0:
        for s in range(4):
            engine.add_session(f"S{s}", hospital="H", department=f"D{s % 2}", doctor=f"Dr{s}",
                               tier="general", starts_at=datetime(2026, 12, 1 + s, 8, 0, tzinfo=CST),
                               slot_minutes=10, capacity=40, fee=500, quotas={"app": 40},
                               release={"app": datetime(2026, 11, 20, 8, 30, tzinfo=CST)})
    booked: list[int] = []
    for i in range(start, start + n):
        now = t0 + timedelta(seconds=i)
        k = rng.random()
        if k < 0.75 or not booked:
            r = engine.book(f"A{rng.randrange(60)}", f"P{rng.randrange(150)}", f"S{rng.randrange(4)}",
                            now=now)
            if r.booking is not None:
                booked.append(r.booking)
        elif k < 0.9:
            b = booked.pop(rng.randrange(len(booked)))
            engine.cancel(b, account=engine.booking(b).account, now=now)
        else:
            engine.advance(now)
        hook(i)


def run_journaled(d: Path, n: int, *, durability: str = "process", seg: int = 16384
                  ) -> tuple[slotengine.Engine, list[int]]:
    """An Engine whose core journals into ``d`` through a Journal; the seq after each command."""
    eng = slotengine.Engine(seed=3)
    j = Journal(d, durability=durability, segment_bytes=seg)
    j.settle_manifest(None, 3)
    j.attach(eng._core, 1)
    after: list[int] = []
    workload(eng, n, lambda i: after.append(j.last_seq(eng._core)))
    j.close()
    return eng, after


def hash_after(n_commands: int) -> str:
    """The core state hash of a plain Engine after the workload's first ``n_commands``."""
    eng = slotengine.Engine(seed=3)
    workload(eng, n_commands)
    return str(eng._core.state_hash())


def real_recover(d: Path, **kw: Any) -> tuple[slotengine.Engine, int, Journal]:
    eng = slotengine.Engine(seed=3)
    j = Journal(d, segment_bytes=16384, **kw)
    try:
        j.settle_manifest(None, None)
        snap = j.latest_snapshot()
        if snap is not None:
            eng._core.restore(snap[1])
        nxt = j.replay(eng._core, lambda payload: None)
    except BaseException:
        j.close()
        raise
    return eng, nxt, j


def find_seq(d: Path, seq: int) -> tuple[Path, int]:
    """The segment and offset of the record with ``seq``."""
    for p in segments(d):
        data = p.read_bytes()
        for off in record_offsets(p):
            if struct.unpack_from("<Q", data, off + 8)[0] == seq:
                return p, off
    raise AssertionError(f"no record {seq}")


@needs_core
@pytest.mark.parametrize("durability", ["process", "grouped", "fsync"])
def test_real_core_replays_to_the_same_state(tmp_path: Path, durability: str) -> None:
    n = 100 if durability == "fsync" else 300  # fsync: a disk flush per command
    eng, after = run_journaled(tmp_path, n, durability=durability, seg=SMALL)
    assert len(segments(tmp_path)) > 1
    again, nxt, j = real_recover(tmp_path)
    assert nxt == after[-1] + 1
    assert again._core.state_hash() == eng._core.state_hash()
    j.close()


@needs_core
def test_real_core_torn_tail(tmp_path: Path) -> None:
    _, after = run_journaled(tmp_path, 300)
    i = len(after) - 5
    # A crash while writing the record after command i: later records never
    # reached the file, the one being written is half there.
    seg, off = find_seq(tmp_path, after[i] + 1)
    for later in segments(tmp_path):
        if later > seg:
            later.unlink()
    data = bytearray(seg.read_bytes())
    size = struct.unpack_from("<I", data, off)[0]
    data[off + size:] = bytes(len(data) - off - size)
    data[off + size - 1] ^= 0x5A
    seg.write_bytes(bytes(data))
    with pytest.warns(JournalWarning, match=f"offset {off} of .*{seg.name}"):
        again, nxt, j = real_recover(tmp_path)
    assert nxt == after[i] + 1 and again._core.state_hash() == hash_after(i + 1)
    j.attach(again._core, nxt)  # and it carries on
    j.close()


@needs_core
def test_real_core_corrupt_middle_and_repair(tmp_path: Path) -> None:
    _, after = run_journaled(tmp_path, 300)
    i = len(after) // 2
    seg, off = find_seq(tmp_path, after[i] + 1)
    poke(seg, off + 8, struct.pack("<Q", 10**9))  # a wrong seq: the CRC fails
    before = files(tmp_path)
    with pytest.raises(CorruptJournal) as info:
        real_recover(tmp_path)
    assert (info.value.path, info.value.offset) == (str(seg), off)
    assert files(tmp_path) == before
    with pytest.warns(JournalWarning, match="repair"):
        again, nxt, j = real_recover(tmp_path, repair=True)
    assert nxt == after[i] + 1 and again._core.state_hash() == hash_after(i + 1)
    j.attach(again._core, nxt)
    j.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third, nxt, j = real_recover(tmp_path)
    assert nxt == after[i] + 1 and third._core.state_hash() == hash_after(i + 1)
    j.close()


@needs_core
def test_real_core_disk_full_at_rotate_changes_nothing(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    eng = slotengine.Engine(seed=3)
    j = Journal(tmp_path, segment_bytes=SMALL)
    j.settle_manifest(None, 3)
    j.attach(eng._core, 1)
    workload(eng, 0)  # the sessions
    t0 = datetime(2026, 11, 24, 9, 0, tzinfo=CST)
    for k in range(5):  # names known before the disk fills
        eng.book(f"A{k}", f"P{k}", "S0", now=t0)
    rng = random.Random(5)
    failed = 0
    with monkeypatch.context() as m:
        m.setattr(os, "posix_fallocate", _enospc)
        for i in range(150):
            state = eng._core.state_hash()
            try:
                eng.book(f"A{rng.randrange(5)}", f"P{rng.randrange(5)}", f"S{i % 4}",
                         now=t0 + timedelta(seconds=i))
            except JournalError as exc:
                assert "disk full" in str(exc)
                assert eng._core.state_hash() == state
                failed += 1
    assert failed and len(segments(tmp_path)) == 1
    for i in range(150, 300):  # space again
        eng.book(f"A{rng.randrange(5)}", f"P{rng.randrange(5)}", f"S{i % 4}", now=t0 + timedelta(seconds=i))
    want = eng._core.state_hash()
    j.close()
    assert len(segments(tmp_path)) > 1
    again, _, j = real_recover(tmp_path)
    assert again._core.state_hash() == want
    j.close()


@needs_core
def test_real_core_snapshot_then_replay(tmp_path: Path) -> None:
    if not hasattr(_core.Core, "snapshot"):
        pytest.skip("the compiled core has no snapshot yet")
    eng = slotengine.Engine(seed=3)
    j = Journal(tmp_path, segment_bytes=16384)
    j.settle_manifest(None, 3)
    j.attach(eng._core, 1)
    workload(eng, 200)
    j.write_snapshot(j.last_seq(eng._core), eng._core.snapshot(), b"")
    workload(eng, 100, seed=2, start=200)
    j.write_snapshot(j.last_seq(eng._core), eng._core.snapshot(), b"")
    workload(eng, 100, seed=3, start=300)
    want = eng._core.state_hash()
    j.close()
    again, nxt, j = real_recover(tmp_path)
    assert again._core.state_hash() == want and nxt == eng._core.journal_position()[1]
    j.close()


@needs_core
def test_real_core_group_commit(tmp_path: Path) -> None:
    eng = slotengine.Engine(seed=3)
    j = Journal(tmp_path, durability="fsync", segment_bytes=1 << 20)
    j.settle_manifest(None, 3)
    j.attach(eng._core, 1)
    workload(eng, 0)
    j.defer_sync = True
    lock = threading.Lock()
    t0 = datetime(2026, 11, 24, 9, 0, tzinfo=CST)
    clock = iter(range(10**6))
    done: list[tuple[int, int]] = []

    def worker(k: int) -> None:
        for i in range(30):
            with lock:
                eng.book(f"A{k}", f"P{k}-{i}", f"S{i % 4}", now=t0 + timedelta(seconds=next(clock)))
                seq = j.last_seq(eng._core)
            j.commit()
            done.append((seq, j._synced_seq))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) == 180 and all(synced >= seq for seq, synced in done)
    want = eng._core.state_hash()
    j.close()
    again, _, j = real_recover(tmp_path)
    assert again._core.state_hash() == want
    j.close()
