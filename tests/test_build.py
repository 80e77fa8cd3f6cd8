"""What the C++ compiler made of the core: the prefetches the source asks for are there.

GCC once deleted every call to the core's prefetch helpers (a function made
only of ``__builtin_prefetch`` counted as without effect), which halved the
batch release rush and failed no other test.  This reads the built module's
machine code, so it runs only where it can: x86-64 with objdump.
"""
from __future__ import annotations

import platform
import re
import shutil
import subprocess
from functools import cache

import pytest

from slotengine import _core

pytestmark = pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or shutil.which("objdump") is None,
    reason="reads x86-64 machine code with objdump")


@cache
def _functions() -> dict[str, str]:
    """The built module's functions: (mangled) name -> disassembled body."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", _core.__file__],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return {m.group(1): m.group(2)
            for m in re.finditer(r"^[0-9a-f]+ <([^>]+)>:\n(.*?)(?=\n\n|\Z)", out, re.M | re.S)}


def _prefetches(method: str) -> int:
    """Prefetch instructions a Core method runs: its own, and those of the helpers it calls."""
    key = f"4Core_{method}P"  # the mangled name: ..._4Core__book_rowsP34__pyx_obj...
    fns = _functions()
    bodies = [body for name, body in fns.items() if key in name]
    assert bodies, f"no function {method} in the build"
    n = 0
    for body in bodies:
        n += _count(body)
        for callee in set(re.findall(r"call\s+[0-9a-f]+ <([^>]+)>", body)):
            if "prefetch" in callee:  # a helper such as _prefetch_row, not inlined
                n += _count(fns.get(callee, ""))
    return n


def _count(body: str) -> int:
    """Prefetch instructions in a disassembled body (not mentions in call targets)."""
    return len(re.findall(r"^\s*[0-9a-f]+:\s+prefetch", body, re.M))


def test_book_many_prefetches_rows_ahead() -> None:
    # each row's patient, account, session, early ring, queued-ticket head and
    # cohort-list end, 16 rows ahead (plus the account's newest booking, 4 ahead)
    assert _prefetches("_book_rows") >= 6


def test_the_cohort_draw_prefetches_tickets_and_what_serving_them_reads() -> None:
    assert _prefetches("_cohort_close") >= 4


def test_book_named_overlaps_its_three_index_probes() -> None:
    assert _prefetches("_named_three") >= 3
