"""The hand-written stub of the compiled core tells type checkers the truth."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import slotengine

ALLOWLIST = Path(__file__).with_name("stubtest_allowlist.txt")


def test_core_stub_matches_the_compiled_module():
    cmd = [sys.executable, "-m", "mypy.stubtest", "slotengine._core"]
    if ALLOWLIST.exists():
        cmd += ["--allowlist", str(ALLOWLIST)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_core_stub_ships_with_the_package():
    pkg = Path(slotengine.__file__).parent
    assert (pkg / "_core.pyi").is_file()
    assert (pkg / "py.typed").is_file()


def test_all_public_names_import():
    assert len(set(slotengine.__all__)) == len(slotengine.__all__)
    for name in slotengine.__all__:
        assert hasattr(slotengine, name), name
    ns: dict = {}
    exec("from slotengine import *", ns)
    assert set(slotengine.__all__) <= set(ns)
    for mod in ("engine", "errors", "outcomes", "policy", "times", "reference", "_core"):
        m = importlib.import_module(f"slotengine.{mod}")
        for name in getattr(m, "__all__", ()):
            assert hasattr(m, name), f"slotengine.{mod}.{name}"
