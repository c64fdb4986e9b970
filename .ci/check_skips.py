"""Fail a CI step whose pytest report (--junitxml) skips a test that the allow-list does not expect, or runs none.

    python .ci/check_skips.py REPORT.xml [--allow .ci/expected_skips.txt]

A skip is named by its pytest node id (`tests/test_x.py::test_y[param]`; a module skipped while being collected is
`tests/test_x.py`). Each allow-list line is `PATTERN | REASON`: PATTERN matches a whole id, `*` standing for any text;
REASON says why CI may skip it. Blank lines and lines starting with `#` are ignored. xfails are not skips.
Exit status: 0 when every skip is expected, 1 when one is not or the report holds no test, 2 for unreadable input.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
import sys
import xml.etree.ElementTree as ET

DEFAULT_ALLOW = pathlib.Path(__file__).resolve().with_name("expected_skips.txt")


class InputError(Exception):
    """A report or allow-list that cannot be read."""


@dataclasses.dataclass(frozen=True)
class Skip:
    """One skipped test: its node id and pytest's reason."""

    test_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Allowed:
    """One allow-list entry: the id pattern, its reason and compiled form."""

    pattern: str
    reason: str
    regex: re.Pattern[str]

    def matches(self, test_id: str) -> bool:
        """Whether the pattern matches the whole id."""
        return self.regex.fullmatch(test_id) is not None


def parse_allow_list(text: str) -> list[Allowed]:
    """The entries of an allow-list; a line without `PATTERN | REASON` raises InputError."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, reason = (part.strip() for part in line.partition("|"))
        if not pattern or not reason:
            raise InputError(f"allow-list line {number}: expected 'PATTERN | REASON', got {line!r}")
        regex = re.compile(".*".join(re.escape(piece) for piece in pattern.split("*")))
        entries.append(Allowed(pattern, reason, regex))
    return entries


def node_id(classname: str, name: str, collected: bool) -> str:
    """pytest's node id from a junit testcase's dotted classname and name (classes start with a capital)."""
    parts = [p for p in classname.split(".") if p]
    if collected:  # a module skipped at collection: pytest writes its dotted path as the name
        return "/".join(parts + name.split(".")) + ".py"
    classes = []
    while parts and parts[-1][:1].isupper():
        classes.insert(0, parts.pop())
    return "::".join(["/".join(parts) + ".py", *classes, name])


def collection_reason(text: str) -> str:
    """The reason inside a collection skip's text, `('path', line, 'Skipped: reason')`."""
    found = re.search(r"Skipped: (.*)['\"]\)\s*$", text, re.S)
    return found.group(1) if found else text.strip()


def read_report(path: pathlib.Path) -> tuple[int, list[Skip]]:
    """The number of test cases in a junit xml report and its skips (xfails excluded)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise InputError(f"cannot read the pytest report {path}: {e}") from e
    cases = list(root.iter("testcase"))
    skips = []
    for case in cases:
        skipped = case.find("skipped")
        if skipped is None or skipped.get("type") == "pytest.xfail":
            continue
        collected = skipped.get("message") == "collection skipped"
        reason = collection_reason(skipped.text or "") if collected else skipped.get("message", "")
        skips.append(Skip(node_id(case.get("classname", ""), case.get("name", ""), collected), reason))
    return len(cases), skips


def unexpected(skips: list[Skip], allowed: list[Allowed]) -> list[Skip]:
    """The skips that no allow-list entry matches."""
    return [s for s in skips if not any(a.matches(s.test_id) for a in allowed)]


def check(report: pathlib.Path, allow: pathlib.Path) -> int:
    """Print what the report skipped and return the exit status (0 all expected, 1 otherwise)."""
    total, skips = read_report(report)
    try:
        allowed = parse_allow_list(allow.read_text())
    except OSError as e:
        raise InputError(f"cannot read the allow-list {allow}: {e}") from e
    if total == 0:
        print(f"check_skips: {report} holds no test; a CI step that runs nothing is a failure")
        return 1
    bad = unexpected(skips, allowed)
    print(f"check_skips: {total} tests, {len(skips)} skipped, {len(skips) - len(bad)} of them expected ({allow.name})")
    for s in bad:
        print(f"  unexpected skip: {s.test_id}: {s.reason}")
    if bad:
        print(f"check_skips: CI installs everything these tests need; fix the cause, or add a line "
              f"'PATTERN | REASON' to {allow} if CI truly cannot run them")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=pathlib.Path, help="pytest's --junitxml file")
    parser.add_argument("--allow", type=pathlib.Path, default=DEFAULT_ALLOW, help="the allow-list of expected skips")
    args = parser.parse_args(argv)
    try:
        return check(args.report, args.allow)
    except InputError as e:
        print(f"check_skips: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
