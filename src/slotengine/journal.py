"""Journal files: one engine directory's manifest, segments, snapshots and lock.

The compiled core writes journal records straight into a shared file mapping
(see docs/durability.md); this module owns everything around that: the
directory lock, the manifest that pins the policy and seed, creating and
rotating preallocated segments, syncing them per durability mode, writing and
choosing snapshots, and recovery (replaying segments through the core and
telling a torn last record from corruption in the middle).

Layouts (little-endian):

* segment ``journal-<first seq:020d>.sej``: a 64-byte header (magic
  ``SLOTJNL1``, u32 format version, u32 header size, u64 first seq, zeros,
  u32 CRC-32C of bytes [0, 60) at offset 60), then the core's records.
* snapshot ``snapshot-<last seq:020d>.ses``: a 48-byte header (magic
  ``SLOTSNP1``, u32 version, u32 header size, u64 last seq, u64 core length,
  u64 facade length, u32 CRC-32C of the body, u32 CRC-32C of the header's
  first 44 bytes), then the core's snapshot and the facade's tables.
"""
from __future__ import annotations

import base64
import copyreg
import dataclasses
import errno
import fcntl
import io
import json
import mmap
import os
import pickle
import re
import struct
import sys
import threading
import types
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .errors import (
    CorruptJournal,
    InvalidArgument,
    InvalidType,
    JournalError,
    JournalWarning,
    PolicyError,
    SlotEngineError,
)
from .policy import Policy

__all__ = ["Journal", "check_policy_and_seed", "DURABILITY_MODES", "SEGMENT_HEADER_SIZE",
           "SNAPSHOT_HEADER_SIZE"]

DURABILITY_MODES = ("process", "grouped", "fsync", "off")
MANIFEST_FORMAT = 1

SEGMENT_MAGIC = b"SLOTJNL1"
SEGMENT_VERSION = 1
SEGMENT_HEADER_SIZE = 64
_SEG_HEAD = struct.Struct("<8sIIQ")  # magic, version, header size, first seq
_SEG_CRC_AT = SEGMENT_HEADER_SIZE - 4

SNAPSHOT_MAGIC = b"SLOTSNP1"
SNAPSHOT_VERSION = 1
# magic, version, header size, seq, core length, facade length, body CRC
_SNAP_HEAD = struct.Struct("<8sIIQQQI")
SNAPSHOT_HEADER_SIZE = _SNAP_HEAD.size + 4  # + CRC-32C of the fields above

#: Statuses of ``Core.replay``.
END, BAD = 0, 1

_SEGMENT_NAME = re.compile(r"journal-(\d{20})\.sej")
_SNAPSHOT_NAME = re.compile(r"snapshot-(\d{20})\.ses")
_MAX_SEQ = 2**64 - 1
_PAGE = mmap.PAGESIZE
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
# Fault a new segment's pages in *for writing* when it is made: the first store to
# a page of a shared file mapping otherwise costs a write fault (~4.5 us here, 50 ns a
# booking record) on the command path, and 3x more in all than populating at once.
_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE",
                          23 if sys.platform.startswith("linux") else None)
_DATASYNC: Callable[[int], None] | None = getattr(os, "fdatasync", None)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_MIN_SEGMENT = 4096
_MAX_SEGMENT = 1 << 40


def _crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc``: the core's implementation."""
    from . import _core

    fn: Callable[[bytes, int], int] = getattr(_core, "crc32c")
    return fn(data, crc)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_name(first_seq: int) -> str:
    return f"journal-{first_seq:020d}.sej"


def _snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:020d}.ses"


def segment_header(first_seq: int) -> bytes:
    """The 64-byte header of a segment whose first record has ``first_seq``."""
    head = _SEG_HEAD.pack(SEGMENT_MAGIC, SEGMENT_VERSION, SEGMENT_HEADER_SIZE, first_seq)
    head += bytes(_SEG_CRC_AT - len(head))
    return head + struct.pack("<I", _crc32c(head))


def _segment_header_ok(head: bytes, first_seq: int) -> bool:
    """Whether ``head`` is a valid header for a segment named by ``first_seq``."""
    if len(head) < SEGMENT_HEADER_SIZE:
        return False
    magic, version, size, first = _SEG_HEAD.unpack_from(head)
    if (magic, version, size, first) != (SEGMENT_MAGIC, SEGMENT_VERSION, SEGMENT_HEADER_SIZE,
                                         first_seq):
        return False
    (crc,) = struct.unpack_from("<I", head, _SEG_CRC_AT)
    return crc == _crc32c(bytes(head[:_SEG_CRC_AT]))


def _mapping_proxy(items: dict[Any, Any]) -> Mapping[Any, Any]:
    """Unpickle a read-only mapping (Policy holds MappingProxyType fields, which pickle refuses)."""
    return types.MappingProxyType(items)


class _PolicyPickler(pickle.Pickler):
    dispatch_table = copyreg.dispatch_table.copy()
    dispatch_table[types.MappingProxyType] = lambda m: (_mapping_proxy, (dict(m),))


def _pickle_policy(policy: Policy) -> bytes:
    buf = io.BytesIO()
    _PolicyPickler(buf, protocol=4).dump(policy)
    return buf.getvalue()


def _policy_difference(stored: Policy, given: Policy) -> str:
    """The names of the fields in which two policies differ, for an error message."""
    names = [f.name for f in dataclasses.fields(Policy)
             if getattr(stored, f.name) != getattr(given, f.name)]
    return ", ".join(names) or "(unknown)"


def check_policy_and_seed(policy: object, seed: object) -> None:
    """Raise InvalidType / InvalidArgument for a policy or seed that is neither None nor valid.

    ``settle_manifest`` checks them too; call this before creating a Journal
    so that bad input leaves no directory behind.
    """
    if policy is not None and not isinstance(policy, Policy):
        raise InvalidType(f"policy must be a slotengine.Policy, not {type(policy).__name__}")
    if seed is not None:
        if type(seed) is not int:
            raise InvalidType(f"seed must be an int, not {type(seed).__name__}")
        if not 0 <= seed <= _MAX_SEQ:
            raise InvalidArgument("seed must be in 0 .. 2**64-1")


class _Mapped:
    """A segment being written: its shared mapping and an open descriptor to sync it by.

    Syncing uses ``fdatasync`` on the descriptor rather than ``mmap.flush``:
    CPython calls msync with the GIL held, which would stall every thread
    (the group commit's followers, the writer behind the "grouped" flusher)
    for a whole disk flush; fdatasync releases it.  On Linux both write back
    the pages the mapping dirtied.
    """

    def __init__(self, mm: mmap.mmap, fd: int, path: Path) -> None:
        self.mm, self.fd, self.path = mm, fd, path

    def sync(self, start: int, stop: int) -> None:
        """Make bytes [start, stop) durable (with fdatasync: all the file's dirty pages)."""
        if _DATASYNC is not None:
            _DATASYNC(self.fd)
        else:  # pragma: no cover - platforms without fdatasync
            start -= start % _PAGE
            self.mm.flush(start, stop - start)

    def close(self) -> None:
        """Unmap and close; BufferError if the core still holds a view (then nothing is closed)."""
        self.mm.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Segment:
    """An existing segment opened for recovery: its mapping and what its header says."""

    def __init__(self, path: Path, first_seq: int) -> None:
        self.path = path
        self.first_seq = first_seq
        self.mm: mmap.mmap | None = None
        self._records: bool | None = None
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise JournalError(f"cannot open journal segment {path}: {exc}") from exc
        try:
            self.size = os.fstat(fd).st_size
            if self.size > 0:
                self.mm = mmap.mmap(fd, self.size, flags=mmap.MAP_SHARED,
                                    prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            raise JournalError(f"cannot map journal segment {path}: {exc}") from exc
        finally:
            os.close(fd)
        head = self.mm[:SEGMENT_HEADER_SIZE] if self.mm is not None else b""
        self.header_ok = _segment_header_ok(head, first_seq)
        #: Shorter than a header or an all-zero header: a crash while the file was being created.
        self.blank = len(head) < SEGMENT_HEADER_SIZE or not any(head)

    def has_records(self, core: Any) -> bool:
        """Whether anything in the segment could be a record (a bad, non-blank header counts)."""
        if self._records is None:
            if not self.header_ok and not self.blank:
                self._records = True
            elif self.mm is None or self.size <= SEGMENT_HEADER_SIZE:
                self._records = False
            else:
                self._records = core.find_record(self.mm, SEGMENT_HEADER_SIZE - 8, self.size) >= 0
        return self._records

    def zero_from(self, offset: int) -> int:
        """Zero every non-zero byte from ``offset`` on and flush; returns the bytes dropped."""
        if self.mm is None or offset >= self.size:
            return 0
        arr = np.frombuffer(self.mm, dtype=np.uint8)
        try:
            nonzero = np.flatnonzero(arr[offset:])
            if not len(nonzero):
                return 0
            stop = offset + int(nonzero[-1]) + 1
            arr[offset:stop] = 0
        finally:
            del arr
        start = offset - offset % _PAGE
        self.mm.flush(start, stop - start)
        return stop - offset

    def close(self) -> None:
        if self.mm is not None:
            self.mm.close()
            self.mm = None


class Journal:
    """One engine directory: manifest, segments, snapshots, lock.

    Created by ``Engine.open``; the engine calls ``settle_manifest``, then
    ``latest_snapshot`` and ``replay`` to recover, then ``attach`` to journal
    new commands, and ``close`` at the end.  Holds an exclusive ``flock`` on
    ``<directory>/LOCK`` from construction until ``close``.
    """

    durability: str
    #: When True the per-record sync callback does nothing: the thread-safe
    #: facade calls ``commit()`` after releasing its lock instead.
    defer_sync: bool

    def __init__(self, directory: str | os.PathLike[str], *, durability: str = "process",
                 segment_bytes: int = 64 << 20, group_ms: int = 10, group_records: int = 1000,
                 repair: bool = False) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise InvalidType(f"directory must be a str or a path, not {type(directory).__name__}")
        if not isinstance(os.fspath(directory), str):
            raise InvalidType("directory must be a str path, not bytes")
        if os.fspath(directory) == "":
            raise InvalidArgument("directory must not be empty (say \".\" for the current one)")
        if type(durability) is not str:
            raise InvalidType(f"durability must be a str, not {type(durability).__name__}")
        if durability not in DURABILITY_MODES:
            raise InvalidArgument(f"durability must be one of {list(DURABILITY_MODES)}, "
                                  f"not {durability!r}")
        for name, value, low, high in (("segment_bytes", segment_bytes, _MIN_SEGMENT, _MAX_SEGMENT),
                                       ("group_ms", group_ms, 1, 3_600_000),
                                       ("group_records", group_records, 1, 2**31 - 1)):
            if type(value) is not int:
                raise InvalidType(f"{name} must be an int, not {type(value).__name__}")
            if not low <= value <= high:
                raise InvalidArgument(f"{name} must be in {low} .. {high}, not {value}")
        if type(repair) is not bool:
            raise InvalidType(f"repair must be a bool, not {type(repair).__name__}")
        self._dir = Path(os.fspath(directory))
        self.durability = durability
        self.segment_bytes = segment_bytes
        self.group_ms = group_ms
        self.group_records = group_records
        self.repair = repair
        self.defer_sync = False
        self._closed = False
        self._lock_fd = -1
        self._snap_seq = 0
        self._next_seq = 1  # the next seq when not attached (after replay, "off" mode, close)
        self._core: Any = None
        self._active: _Mapped | None = None
        self._active_path: Path | None = None
        self._retired: list[_Mapped] = []
        self._synced_pos = 0   # bytes of the active mapping known to be on disk
        self._synced_seq = 0   # records known to be on disk
        self._failed: BaseException | None = None
        self._fail_reported = False  # fail() told the core (and so the caller)
        self._io_lock = threading.Lock()                # mapping swaps and msyncs
        self._commit_cond = threading.Condition()       # group commit leader/follower
        self._committing = False
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        # The directories this journal creates: removed again by close() if
        # no manifest was ever written (a failed open leaves nothing behind).
        self._made: list[Path] = []
        missing = self._dir.absolute()
        while not missing.exists() and missing != missing.parent:
            self._made.append(missing)
            missing = missing.parent
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._dir / "LOCK", os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot use {self._dir} as an engine directory: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise JournalError(f"{self._dir} is in use by another engine "
                                   "(its LOCK is held)") from exc
            raise JournalError(f"cannot lock {self._dir}: {exc}") from exc
        self._lock_fd = fd

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def closed(self) -> bool:
        return self._closed

    def last_seq(self, core: Any) -> int:
        """The seq of the last record written or replayed (0: none); tags a snapshot."""
        if self._core is not None:
            return int(core.journal_position()[1]) - 1
        return self._next_seq - 1

    # -- manifest ------------------------------------------------------------

    def settle_manifest(self, policy: Policy | None, seed: int | None) -> tuple[Policy, int]:
        """The directory's policy and seed: written on first use, checked against later opens.

        ``None`` means "whatever the directory has" (``Policy()`` and 0 for a
        new directory); a value that differs from the stored one raises
        ``PolicyError``, because replaying a journal under other rules would
        give another state.
        """
        check_policy_and_seed(policy, seed)
        path = self._dir / "manifest.json"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raw = None
        except OSError as exc:
            raise JournalError(f"cannot read {path}: {exc}") from exc
        if raw is None:
            if self._segments() or self._snapshots():
                raise JournalError(f"{self._dir} holds journal files but no manifest.json")
            policy = Policy() if policy is None else policy
            seed = 0 if seed is None else seed
            doc = {"format": MANIFEST_FORMAT, "seed": seed,
                   "policy": base64.b64encode(_pickle_policy(policy)).decode("ascii"),
                   "policy_repr": repr(policy)}
            self._write_atomic(path, json.dumps(doc, indent=1).encode() + b"\n")
            self._made = []  # an engine directory now: close() keeps it
            return policy, seed
        try:
            doc = json.loads(raw)
            if doc.get("format") != MANIFEST_FORMAT:
                raise JournalError(f"{path}: unknown manifest format {doc.get('format')!r}")
            stored_seed = doc["seed"]
            stored = pickle.loads(base64.b64decode(doc["policy"]))
        except JournalError:
            raise
        except Exception as exc:  # a damaged manifest: JSON, base64 or pickle errors
            raise JournalError(f"{path} is unreadable: {exc}") from exc
        if not isinstance(stored, Policy) or type(stored_seed) is not int:
            raise JournalError(f"{path} does not hold a Policy and an int seed")
        if policy is not None and policy != stored:
            raise PolicyError(f"{self._dir} was created with another policy "
                              f"(differs in: {_policy_difference(stored, policy)}); "
                              "open it with policy=None to use the stored one")
        if seed is not None and seed != stored_seed:
            raise PolicyError(f"{self._dir} was created with seed {stored_seed}, not {seed}")
        return stored, stored_seed

    def _write_atomic(self, path: Path, *parts: bytes, what: str = "") -> None:
        """Write ``parts`` to ``path`` all or nothing: a temporary file, fsync, rename,
        directory fsync.  An OSError (a full disk) → JournalError, no temporary left."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for data in parts:
                    _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(self._dir)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise JournalError(f"cannot write {what}{path}: {exc}") from exc

    # -- listing -------------------------------------------------------------

    def _listing(self, pattern: re.Pattern[str]) -> list[tuple[int, Path]]:
        try:
            names = os.listdir(self._dir)
        except OSError as exc:
            raise JournalError(f"cannot list {self._dir}: {exc}") from exc
        found = []
        for name in names:
            m = pattern.fullmatch(name)
            if m:
                found.append((int(m.group(1)), self._dir / name))
        found.sort()
        return found

    def _segments(self) -> list[tuple[int, Path]]:
        """Segments as (first seq, path), oldest first."""
        return self._listing(_SEGMENT_NAME)

    def _snapshots(self) -> list[tuple[int, Path]]:
        """Snapshots as (last seq, path), oldest first."""
        return self._listing(_SNAPSHOT_NAME)

    # -- snapshots -----------------------------------------------------------

    def latest_snapshot(self, load: Callable[[bytes, bytes], object] | None = None
                        ) -> tuple[int, bytes, bytes] | None:
        """(last seq, core bytes, facade bytes) of the newest snapshot that checks, or None.

        A snapshot whose header or checksum is bad, or that ``load(core, facade)``
        refuses (raising a ``SlotEngineError``), is skipped with a ``JournalWarning``
        and the next older one tried; replay then starts after the seq of the
        one returned.
        """
        for seq, path in reversed(self._snapshots()):
            problem = None
            try:
                data = path.read_bytes()
            except OSError as exc:
                problem = f"unreadable: {exc}"
            else:
                parsed = self._parse_snapshot(data, seq)
                if isinstance(parsed, str):
                    problem = parsed
                else:
                    try:
                        if load is not None:
                            load(*parsed)
                    except SlotEngineError as exc:
                        problem = f"does not load: {exc}"
                    else:
                        self._snap_seq, self._next_seq = seq, seq + 1
                        return (seq, *parsed)
            warnings.warn(f"skipping snapshot {path}: {problem}", JournalWarning, stacklevel=2)
        self._snap_seq, self._next_seq = 0, 1
        return None

    @staticmethod
    def _parse_snapshot(data: bytes, seq: int) -> tuple[bytes, bytes] | str:
        """The (core, facade) bytes of a snapshot file, or what is wrong with it."""
        if len(data) < SNAPSHOT_HEADER_SIZE:
            return "shorter than its header"
        magic, version, hsize, hseq, core_len, facade_len, body_crc = _SNAP_HEAD.unpack_from(data)
        (head_crc,) = struct.unpack_from("<I", data, _SNAP_HEAD.size)
        if magic != SNAPSHOT_MAGIC:
            return "bad magic"
        if head_crc != _crc32c(data[:_SNAP_HEAD.size]):
            return "header checksum mismatch"
        if version != SNAPSHOT_VERSION or hsize != SNAPSHOT_HEADER_SIZE:
            return f"unknown version {version} (header size {hsize})"
        if hseq != seq:
            return f"header says seq {hseq}, the name {seq}"
        if len(data) != hsize + core_len + facade_len:
            return f"{len(data)} bytes, the header says {hsize + core_len + facade_len}"
        core = data[hsize:hsize + core_len]
        facade = data[hsize + core_len:]
        if _crc32c(facade, _crc32c(core)) != body_crc:
            return "body checksum mismatch"
        return core, facade

    def write_snapshot(self, seq: int, core_bytes: bytes, facade_bytes: bytes) -> Path:
        """Write a snapshot covering records up to ``seq`` durably, then prune old files.

        Keeps the two newest snapshots and deletes segments whose records are
        all covered by the older of them (never the active or last segment),
        so a damaged newest snapshot still leaves a way back.  A write error
        (a full disk) raises ``JournalError`` with every old file intact.
        """
        if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
            raise InvalidArgument(f"seq must be an int in 0 .. 2**64-1, not {seq!r}")
        core_bytes, facade_bytes = bytes(core_bytes), bytes(facade_bytes)
        body_crc = _crc32c(facade_bytes, _crc32c(core_bytes))
        head = _SNAP_HEAD.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SNAPSHOT_HEADER_SIZE, seq,
                               len(core_bytes), len(facade_bytes), body_crc)
        head += struct.pack("<I", _crc32c(head))
        path = self._dir / _snapshot_name(seq)
        self._write_atomic(path, head, core_bytes, facade_bytes, what="snapshot ")
        self._prune()
        return path

    def _prune(self) -> None:
        """Keep the two newest snapshots; drop segments the older of them covers."""
        snaps = self._snapshots()
        for _, old in snaps[:-2]:
            self._unlink_quietly(old)
        if len(snaps) < 2:
            return
        covered = snaps[-2][0]
        segs = self._segments()
        for (first, path), (next_first, _) in zip(segs, segs[1:]):
            # Records of this segment end before the next one starts.
            if next_first - 1 <= covered and path != self._active_path:
                self._unlink_quietly(path)

    @staticmethod
    def _unlink_quietly(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            warnings.warn(f"could not delete {path}: {exc}", JournalWarning, stacklevel=3)

    # -- recovery ------------------------------------------------------------

    def replay(self, core: Any, note: Callable[[bytes], Any]) -> int:
        """Replay the records after the loaded snapshot into ``core``; return the next seq.

        A bad record with nothing valid after it (a torn tail) is dropped with
        a ``JournalWarning``; one followed by valid records raises
        ``CorruptJournal`` before anything in the directory changes, unless
        ``repair=True`` (then the journal is truncated there, with a warning).
        """
        expect = self._snap_seq + 1
        listing = self._segments()
        next_seq = expect
        self._next_seq = next_seq
        if not listing:
            return next_seq
        start = 0
        for i, (first, _) in enumerate(listing):
            if first <= expect:
                start = i
        segs: list[_Segment] = []
        zero: tuple[_Segment, int] | None = None    # (segment, offset) to zero from
        drop: list[_Segment] = []                  # segments to delete
        notice = repaired = ""
        dropped = 0
        try:
            for first, path in listing[start:]:
                segs.append(_Segment(path, first))

            def later_records(j: int) -> bool:
                return any(s.has_records(core) for s in segs[j:])

            for j, seg in enumerate(segs):
                if not seg.header_ok:
                    if seg.blank and not later_records(j):
                        drop = segs[j:]
                        notice = (f"dropped journal segment {seg.path}: "
                                  "its header is incomplete (a crash while creating it)")
                        break
                    where, why = 0, "bad segment header"
                elif seg.first_seq > next_seq or (j > 0 and seg.first_seq != next_seq):
                    if not later_records(j):
                        drop = segs[j:]  # empty leftovers: nothing to replay, nothing lost
                        break
                    where, why = 0, f"segment starts at seq {seg.first_seq}, expected {next_seq}"
                else:
                    assert seg.mm is not None
                    try:
                        pos, nxt, status, valid_after = self._replay_segment(
                            core, seg, next_seq, note)
                    except CorruptJournal as exc:
                        # A record with a good CRC that does not apply (the core
                        # refuses it before changing anything): corrupt, wherever it is.
                        where, why = exc.offset, str(exc)
                        if not self.repair or where < SEGMENT_HEADER_SIZE:
                            raise CorruptJournal(f"corrupt journal: {why} ({seg.path})",
                                                 str(seg.path), where) from exc
                        next_seq = struct.unpack_from("<Q", seg.mm, where + 8)[0]
                    else:
                        next_seq = nxt
                        if status == END and not valid_after:
                            continue
                        if not valid_after and not later_records(j + 1):
                            zero, drop = (seg, pos), segs[j + 1:]
                            notice = f"dropped a torn record at offset {pos} of {seg.path}"
                            break
                        where, why = pos, ("bad record" if status != END
                                           else "valid records after an empty one")
                if not self.repair:
                    raise CorruptJournal(f"corrupt journal: {why} at offset {where} of {seg.path} "
                                         "(valid records follow; repair=True drops them)",
                                         str(seg.path), where)
                if where < SEGMENT_HEADER_SIZE:
                    drop = segs[j:]
                else:
                    zero, drop = (seg, where), segs[j + 1:]
                repaired = f"repair: {why} at offset {where} of {seg.path}"
                break
            # The decision is made: only now change files.
            dropped = zero[0].zero_from(zero[1]) if zero is not None else 0
            for seg in drop:
                seg.close()
                self._unlink_quietly(seg.path)
            if drop:
                _fsync_dir(self._dir)
        finally:
            for seg in segs:
                seg.close()
        if repaired:
            notice = f"{repaired}: dropped {dropped} bytes and deleted {len(drop)} segment(s)"
        elif zero is not None and drop:
            notice += f" and deleted {len(drop)} empty later segment(s)"
        if notice:
            warnings.warn(notice, JournalWarning, stacklevel=2)
        self._next_seq = next_seq
        return next_seq

    def _replay_segment(self, core: Any, seg: _Segment, next_seq: int,
                        note: Callable[[bytes], Any]) -> tuple[int, int, int, bool]:
        """Replay one segment from ``next_seq``: (stop offset, next seq, status, valid after).

        The core checks every record, even those it skips; bad or zeroed
        bytes among records the loaded snapshot covers are stepped over (to
        the next valid record, if that one is still covered or is the first
        one needed), since nothing there is read.
        """
        assert seg.mm is not None  # a valid header means a non-empty mapping
        first_needed = self._snap_seq + 1
        pos = SEGMENT_HEADER_SIZE
        while True:
            pos, nxt, status = core.replay(seg.mm, pos, seg.size, next_seq, note)
            next_seq = max(next_seq, int(nxt))
            after = core.find_record(seg.mm, pos, seg.size)
            if after < 0:
                return pos, next_seq, status, False
            after_seq = struct.unpack_from("<Q", seg.mm, after + 8)[0]
            if next_seq == first_needed and after_seq <= next_seq:
                pos = after  # damage among covered records only
                continue
            return pos, next_seq, status, True

    # -- writing -------------------------------------------------------------

    def attach(self, core: Any, next_seq: int) -> None:
        """Journal ``core``'s commands from ``next_seq`` on, into a new segment.

        Durability "off" journals nothing.  Leftover empty segments at or after
        ``next_seq`` (and temporary files) are removed first.
        """
        if self._closed:
            raise JournalError(f"the journal of {self._dir} is closed")
        if self._core is not None:
            raise JournalError(f"the journal of {self._dir} is already attached")
        if type(next_seq) is not int or not 1 <= next_seq <= _MAX_SEQ:
            raise InvalidArgument(f"next_seq must be an int in 1 .. 2**64-1, not {next_seq!r}")
        self._next_seq = next_seq
        if self.durability == "off":
            return
        for name in os.listdir(self._dir):
            if name.endswith(".tmp"):
                self._unlink_quietly(self._dir / name)
        for first, path in self._segments():
            if first >= next_seq:
                seg = _Segment(path, first)
                try:
                    if seg.has_records(core):
                        raise JournalError(f"{path} holds records at or after seq {next_seq}: "
                                           "replay the journal before attaching")
                finally:
                    seg.close()
                self._unlink_quietly(path)
        active = self._create_segment(next_seq, self.segment_bytes)
        self._active, self._active_path = active, active.path
        self._synced_pos, self._synced_seq = SEGMENT_HEADER_SIZE, next_seq - 1
        sync_every = {"fsync": 1, "grouped": self.group_records}.get(self.durability, 0)
        self._core = core
        try:
            core.journal_open(active.mm, SEGMENT_HEADER_SIZE, next_seq, sync_every, self._sync,
                              self._rotate)
        except BaseException:
            self._core = self._active = self._active_path = None
            active.close()
            raise
        if self.durability == "grouped":
            self._stop.clear()
            self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                             name=f"slotengine-flush {self._dir}")
            self._flusher.start()

    def _create_segment(self, first_seq: int, size: int) -> _Mapped:
        """Create, preallocate and map the segment starting at ``first_seq``.

        The file is built under a temporary name and renamed, so a segment
        with its final name always had its header written; in "fsync" and
        "grouped" modes the file and directory are fsynced so the segment
        survives power loss.  A full disk raises ``JournalError`` here, before
        the command that needed the space changes anything.
        """
        path = self._dir / _segment_name(first_seq)
        tmp = path.with_name(path.name + ".tmp")
        durable = self.durability in ("fsync", "grouped")
        fd = -1
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | _CLOEXEC, 0o644)
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)
            else:  # pragma: no cover - platforms without posix_fallocate
                os.ftruncate(fd, size)
            os.pwrite(fd, segment_header(first_seq), 0)
            if durable:
                os.fsync(fd)
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _POPULATE,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
            try:
                if _POPULATE_WRITE is not None:
                    try:
                        mm.madvise(_POPULATE_WRITE)
                    except OSError:  # an older kernel: the pages fault in as written
                        pass
                    if durable:  # write the now-dirty zero pages back here, not at the
                        os.fdatasync(fd)  # first command's sync
                os.replace(tmp, path)
                if durable:
                    _fsync_dir(self._dir)
            except BaseException:
                mm.close()
                raise
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            try:
                tmp.unlink()
            except OSError:
                pass
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise JournalError(f"disk full: cannot preallocate {size} bytes for journal "
                                   f"segment {path}: {exc}") from exc
            raise JournalError(f"cannot create journal segment {path}: {exc}") from exc
        return _Mapped(mm, fd, path)

    def _rotate(self, need: int) -> tuple[mmap.mmap, int]:
        """The core's callback when a record of ``need`` bytes does not fit: a new segment.

        Named by the seq of the record that needs it.  In "fsync" and
        "grouped" modes the old segment is synced first.  The old mapping
        stays open until the next rotate (or close): the core releases its
        view of it only after this returns.
        """
        if self._failed is not None:
            raise JournalError(f"the journal of {self._dir} failed: {self._failed}")
        pos, next_seq = self._core.journal_position()
        durable = self.durability in ("fsync", "grouped")
        if durable:
            try:
                self._flush_to(pos, next_seq)
            except OSError as exc:
                self.fail(exc)
                raise JournalError(f"cannot sync the journal of {self._dir}: {exc}") from exc
        seg = self._create_segment(next_seq, max(self.segment_bytes, SEGMENT_HEADER_SIZE + need))
        with self._io_lock:
            if self._failed is not None:  # another thread's commit failed meanwhile
                seg.close()
                self._unlink_quietly(seg.path)
                raise JournalError(f"the journal of {self._dir} failed: {self._failed}")
            still: list[_Mapped] = []
            for old in self._retired:
                try:
                    old.close()
                except BufferError:  # pragma: no cover - the core still holds a view
                    still.append(old)
            assert self._active is not None
            self._retired = still + [self._active]
            self._active, self._active_path = seg, seg.path
            self._synced_pos = SEGMENT_HEADER_SIZE
            if durable:
                self._synced_seq = next_seq - 1
        return seg.mm, SEGMENT_HEADER_SIZE

    def _flush_to(self, pos: int, next_seq: int) -> None:
        """Sync the active segment's records before ``next_seq`` (ending at byte ``pos``)."""
        with self._io_lock:
            if next_seq - 1 <= self._synced_seq or self._active is None:
                return
            pos = min(pos, len(self._active.mm))
            self._active.sync(self._synced_pos, pos)
            self._synced_pos = max(self._synced_pos, pos)
            self._synced_seq = next_seq - 1

    def _sync(self) -> None:
        """The core's per-record ("fsync") or per-``group_records`` ("grouped") callback."""
        if self.defer_sync:
            return
        if self._failed is not None:
            exc = self._failed
            self.fail(exc)
            raise JournalError(f"the journal of {self._dir} failed: {exc}")
        try:
            self._flush_to(*self._core.journal_position())
        except OSError as exc:
            self.fail(exc)
            raise JournalError(f"cannot sync the journal of {self._dir}: {exc}") from exc

    def _flush_loop(self) -> None:
        """The "grouped" mode's background flusher: sync new records every ``group_ms``."""
        while not self._stop.wait(self.group_ms / 1000):
            core = self._core
            if core is None or self._failed is not None:
                return
            try:
                self._flush_to(*core.journal_position())
            except OSError as exc:
                # Not the writer's thread: record it; the next sync, rotate or close raises it.
                self._failed = exc
                return
            except Exception:  # pragma: no cover - the core closed its journal under us
                return

    def commit(self) -> None:
        """In "fsync" mode make every record written so far durable; a no-op otherwise.

        Threads calling at the same time share one sync: the first becomes the
        leader and syncs up to the newest record; the others wait and return
        as soon as a sync covered their own record.  A failed sync fails the
        journal (``fail``) and raises ``JournalError``.
        """
        if self.durability != "fsync" or self._core is None:
            return
        core = self._core
        with self._commit_cond:
            target = -1  # the newest record when this caller arrived: its own is at or before it
            while True:
                if self._failed is not None:
                    raise JournalError(f"the journal of {self._dir} failed: {self._failed}")
                if target < 0:
                    target = core.journal_position()[1] - 1
                if self._synced_seq >= target:
                    return
                if not self._committing:
                    break
                self._commit_cond.wait()
            self._committing = True
        try:
            self._flush_to(*core.journal_position())
        except OSError as exc:
            self.fail(exc)
            raise JournalError(f"cannot sync the journal of {self._dir}: {exc}") from exc
        finally:
            with self._commit_cond:
                self._committing = False
                self._commit_cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """A sync or write failed after a command ran: the core refuses every later command."""
        if self._failed is None:
            self._failed = exc
        self._fail_reported = True
        if self._core is not None:
            self._core.journal_fail(str(exc))

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Stop journaling and release the directory (idempotent).

        Stops the flusher, syncs the last records (not in "off" mode), trims
        the active segment to its records and releases the lock.  A sync that
        failed in the background flusher and was never reported, or the final
        sync, raises ``JournalError`` after everything is released.
        """
        if self._closed:
            return
        self._closed = True
        error: BaseException | None = None
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        if self._failed is not None and self._core is not None and not self._fail_reported:
            error = self._failed  # a background flush failed and nobody heard of it
        pos = next_seq = -1
        if self._core is not None:
            core, self._core = self._core, None
            try:
                pos, next_seq = core.journal_close()
                self._next_seq = next_seq
            except Exception as exc:  # pragma: no cover - a core that cannot close
                error = error or exc
            if error is None and self._failed is None:
                try:
                    for old in self._retired:
                        old.sync(0, len(old.mm))
                    self._flush_to(pos, next_seq)
                except OSError as exc:
                    error = exc
        with self._io_lock:
            for old in self._retired + ([self._active] if self._active is not None else []):
                old.close()
            self._retired, self._active = [], None
        if error is None and self._failed is None and pos >= SEGMENT_HEADER_SIZE \
                and self._active_path is not None:
            try:  # give back the preallocated space the records did not use
                os.truncate(self._active_path, pos)
            except OSError:
                pass
        if self._lock_fd >= 0:
            if self._made:
                self._unmake()
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = -1
        if error is not None:
            raise JournalError(f"the journal of {self._dir} could not be synced: "
                               f"{error}") from error

    def _unmake(self) -> None:
        """Remove the directories this journal created, if they hold nothing but the lock."""
        try:
            if os.listdir(self._dir) != ["LOCK"]:
                return
            os.unlink(self._dir / "LOCK")
            for made in self._made:  # deepest first
                os.rmdir(made)
        except OSError:
            pass

    def __del__(self) -> None:
        # A journal dropped without close() still gives the directory back.
        fd = getattr(self, "_lock_fd", -1)
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
