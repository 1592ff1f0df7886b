"""Per-test outcomes of a libiscsi ``iscsi-test-cu`` run, parsed from its output.

iscsi-test-cu is a CUnit program: in its default verbose mode it prints
``Suite: NAME``, then ``  Test: NAME ...`` followed by whatever the test logs
and CUnit's verdict, ``passed`` or ``FAILED``, at the start of a line. libiscsi
reports a skipped test as *passed* after logging ``[SKIPPED] reason``, so a
skip is recognised from that marker. A test that started but has no verdict
(crash, hang, killed on timeout) is an ERROR. Outcomes rank
ERROR = FAIL < SKIP < PASS; the harness fails on any step down.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator

import attrs


class Outcome(enum.Enum):
    ERROR = "ERROR"  # started, no verdict (crash, hang, timeout) or never ran
    FAIL = "FAIL"
    SKIP = "SKIP"
    PASS = "PASS"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def recordable(self) -> Outcome:
        """What an expectations file records for it (ERROR is a kind of FAIL)."""
        return Outcome.FAIL if self is Outcome.ERROR else self


_RANK = {Outcome.ERROR: 0, Outcome.FAIL: 0, Outcome.SKIP: 1, Outcome.PASS: 2}


@attrs.frozen
class TestResult:
    """One test's outcome, why (skip/fail reason), and its slice of the log."""

    __test__ = False  # not a pytest test class despite the name

    name: str  # e.g. ALL.Inquiry.Standard
    outcome: Outcome
    reason: str = ""
    log: str = ""


_MARKER_RE = re.compile(
    r"^(?:Suite: (?P<suite>\S+).*$|[ \t]+Test: (?P<test>\S+) \.\.\.|Run Summary:.*$"
    r"|WARNING - Suite (?:initialization|cleanup) failed for '(?P<bad_suite>[^']*)'.*$)",
    re.MULTILINE,
)
_VERDICT_RE = re.compile(r"(?:\A|\n)(?P<verdict>passed|FAILED)(?![\w\]])")
_SKIP_RE = re.compile(r"\[SKIPPED\][ \t]*(?P<reason>[^\n]*)")
_FAIL_RE = re.compile(r"\[FAILED\][ \t]*(?P<reason>[^\n]*)")
_ASSERT_RE = re.compile(r"^\s*1\. (?P<where>\S+)\s+- (?P<cond>[^\n]*)", re.MULTILINE)


def _blocks(text: str) -> Iterator[tuple[str, str, str]]:
    """(suite, test, text after "...") for every test start in the output."""
    suite = ""
    current: tuple[str, int] | None = None
    for match in _MARKER_RE.finditer(text):
        if current is not None:
            yield suite, current[0], text[current[1] : match.start()]
            current = None
        if match.group("suite"):
            suite = match.group("suite")
        elif match.group("test"):
            current = (match.group("test"), match.end())
    if current is not None:
        yield suite, current[0], text[current[1] :]


def classify(block: str) -> tuple[Outcome, str]:
    """Outcome and reason of one test from its log block."""
    verdict = _VERDICT_RE.search(block)
    before = block if verdict is None else block[: verdict.start()]
    if verdict is None:
        return Outcome.ERROR, "no verdict: the test crashed, hung or was killed"
    if verdict.group("verdict") == "FAILED":
        failed = _FAIL_RE.search(block)
        if failed:
            return Outcome.FAIL, failed.group("reason").strip()
        asserted = _ASSERT_RE.search(block, verdict.end())
        if asserted:
            return Outcome.FAIL, f"{asserted.group('where')} {asserted.group('cond').strip()}"
        return Outcome.FAIL, ""
    skipped = _SKIP_RE.search(before)
    if skipped:
        return Outcome.SKIP, skipped.group("reason").strip()
    return Outcome.PASS, ""


def parse_output(text: str, family: str = "ALL", suffix: str = "") -> dict[str, TestResult]:
    """``{"ALL.Suite.Test" + suffix: TestResult}`` for every test that started."""
    results: dict[str, TestResult] = {}
    for suite, test, block in _blocks(text):
        name = f"{family}.{suite}.{test}{suffix}"
        outcome, reason = classify(block)
        results[name] = TestResult(name=name, outcome=outcome, reason=reason, log=block.strip())
    return results


def parse_test_list(text: str, family: str = "ALL") -> list[str]:
    """Test names (FAMILY.Suite.Test) from ``iscsi-test-cu --list``."""
    names = []
    for line in text.splitlines():
        parts = line.strip().split(".")
        if len(parts) == 3 and parts[0] == family:
            names.append(line.strip())
    return names


def totals(results: dict[str, TestResult]) -> dict[Outcome, int]:
    counts = dict.fromkeys(Outcome, 0)
    for result in results.values():
        counts[result.outcome] += 1
    return counts
