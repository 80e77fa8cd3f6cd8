"""README.md must stay true: its code runs, its tables match the code.

Convention for code blocks in README.md:

* A fenced block whose language is ``python`` is run.  The blocks of one
  ``## `` section (with its ``###`` subsections) run in order in one
  namespace, so a later block may use what an earlier one of the same
  section defined; each ``## `` section starts from an empty namespace.
  They run in a temporary working directory, and ``tempfile`` makes its
  directories there.
* A ``python`` block that is a listing rather than a program (the Public API
  signatures) has ``<!-- not run: why -->`` on the line before its fence.
* Blocks in any other language (``sh``, ``text``, none: terminal output)
  are not run.  Don't put code of modules that may be missing (FHIR, the web
  service) in ``python`` blocks: describe them and link.

Besides the blocks: the reason-code table lists every ``Reason`` with its
code, every error class is named, the Public API listing names only things
that exist (with keyword names the signatures accept), and every example
script is mentioned.
"""
from __future__ import annotations

import inspect
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

import slotengine as se
import slotengine.errors
import slotengine.simulate
import slotengine.testing
import slotengine.threadsafe
from slotengine.credit import Credit

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
NOT_RUN = "<!-- not run"
FENCE = re.compile(r"^```([\w+-]*)\s*$")


def _blocks(text: str) -> list[tuple[str, str, str, bool, int]]:
    """(``## `` section, language, code, marked not-run, line number) of every fenced block."""
    out = []
    section = "(top)"
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        m = FENCE.match(line)
        if m:
            start = i
            i += 1
            body = []
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            before = next((x for x in reversed(lines[:start]) if x.strip()), "")
            out.append((section, m.group(1), "\n".join(body) + "\n",
                        before.startswith(NOT_RUN), start + 1))
        i += 1
    return out


BLOCKS = _blocks(README)
RUN = [b for b in BLOCKS if b[1] == "python" and not b[3]]
SECTIONS = list(dict.fromkeys(b[0] for b in RUN))


def test_readme_starts_with_the_two_commands() -> None:
    head = README.split("\n```", 2)[1]
    assert "make demo" in head and "make test" in head
    assert README.startswith("# slotengine\n\n```sh\nmake demo")


def test_blocks_are_found_and_only_listings_are_skipped() -> None:
    assert len(RUN) >= 9 and "Quick start" in SECTIONS and "The model" in SECTIONS
    skipped = [b for b in BLOCKS if b[1] == "python" and b[3]]
    assert len(skipped) <= 2, [b[4] for b in skipped]  # a listing or two, not half the README


@pytest.mark.parametrize("section", SECTIONS)
def test_python_blocks_run(section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # mkdtemp() in a snippet: cleaned up
    namespace: dict[str, Any] = {"__name__": "readme"}
    for _, _, code, _, line in (b for b in RUN if b[0] == section):
        # blank lines up front keep tracebacks' line numbers those of README.md
        exec(compile("\n" * line + code, "README.md", "exec"), namespace)  # noqa: S102


def _table_rows(heading: str) -> list[list[str]]:
    part = README.split(heading, 1)[1]
    rows = []
    for line in part.splitlines()[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_reason_table_lists_every_reason_with_its_code() -> None:
    rows = _table_rows("### Outcomes and reason codes")
    table = {}
    for cells in rows:
        m = re.match(r"`(\w+)`", cells[1]) if len(cells) > 1 else None
        if cells[0].isdigit() and m:
            table[m.group(1)] = int(cells[0])
    assert table == {r.name: int(r) for r in se.Reason}
    for r in se.Reason:  # and each in its stage's range
        stage = next(c for c in rows if c[0] == str(int(r)))[2]
        assert stage == (r.stage if r != se.Reason.NONE else "-"), r


def test_every_error_class_is_named() -> None:
    names = list(slotengine.errors.__all__) + ["EngineClosed"]
    for name in names:
        assert f"`{name}`" in README, name
    assert issubclass(slotengine.threadsafe.EngineClosed, se.errors.InvalidState)


def test_every_status_and_example_is_named() -> None:
    for s in se.Status:
        assert f"`{s.name}`" in README, s
    for script in sorted((ROOT / "examples").glob("*.py")):
        assert f"examples/{script.name}" in README, script.name


# -- the Public API listing ---------------------------------------------------------------

_PREFIX = re.compile(r"(?<![\w.])(engine\.credit|engine|aengine|se\.Engine|se\.LockedEngine|se"
                     r"|simulate\.Scenario|simulate|testing)\.(\w+)")


def _listing() -> str:
    return next(code for section, lang, code, skip, _ in BLOCKS
                if skip and lang == "python" and section == "The model")


def _owner(prefix: str) -> Any:
    engine = se.Engine(seed=0)
    return {"engine": engine, "engine.credit": engine.credit, "aengine": se.AsyncEngine,
            "se": se, "se.Engine": se.Engine, "se.LockedEngine": se.LockedEngine,
            "simulate": slotengine.simulate, "simulate.Scenario": slotengine.simulate.Scenario,
            "testing": slotengine.testing}[prefix]


def _callable_for_signature(prefix: str, name: str) -> Any:
    """The function whose signature the listing shows (the class's, not a bound core method)."""
    cls = {"engine": se.Engine, "engine.credit": Credit}.get(prefix)
    if cls is not None:
        return getattr(cls, name)
    return getattr(_owner(prefix), name)


def _call_args(text: str, start: int) -> str | None:
    """The text inside the parentheses that open at ``text[start]``, or None if no call."""
    if start >= len(text) or text[start] != "(":
        return None
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1:i]
    return None


def test_public_api_listing_names_only_what_exists() -> None:
    listing = _listing()
    code = "\n".join(line.split("  #", 1)[0] for line in listing.splitlines())  # drop comments
    seen = 0
    for m in _PREFIX.finditer(code):
        prefix, name = m.group(1), m.group(2)
        owner = _owner(prefix)
        assert hasattr(owner, name), f"README Public API: {prefix}.{name} does not exist"
        seen += 1
        args = _call_args(code, m.end())
        if not args or "..." in args:
            continue
        keywords = set(re.findall(r"(?<![\w=<>!])(\w+)=(?!=)", args))
        if not keywords:
            continue
        target = _callable_for_signature(prefix, name)
        params = inspect.signature(target).parameters
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            continue
        missing = keywords - set(params)
        assert not missing, f"README Public API: {prefix}.{name}() has no parameter(s) {missing}"
    assert seen > 80


def test_public_api_listing_covers_the_public_methods() -> None:
    listing = _listing()
    for name, member in inspect.getmembers(se.Engine):
        if name.startswith("_") or name in ("book_named", "cancel_named"):
            continue
        assert f".{name}" in listing, f"Engine.{name} is missing from the README's Public API"
    for name, _ in inspect.getmembers(Credit, inspect.isfunction):
        if not name.startswith("_"):
            assert f"engine.credit.{name}(" in listing, f"credit.{name} missing from the Public API"
    for name in ("compare", "generate", "run", "POLICIES", "PRESETS", "PolicySetup"):
        assert f"simulate.{name}" in listing, name
    for name in ("policies", "session_specs", "arrival_streams", "rush_scenarios", "build_engine",
                 "run_rush", "check_rush"):
        assert f"testing.{name}(" in listing, name
