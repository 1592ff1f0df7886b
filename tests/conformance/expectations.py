"""The checked-in conformance expectations and how a run compares with them.

``libiscsi-expected.txt`` records, per test, the worst outcome we accept
(``ALL.Inquiry.Standard PASS``). A run may do better (an improvement, to be
recorded with ``python -m tests.conformance.update``) but never worse (a
regression, which fails the test suite). Recording only moves forward.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

from tests.conformance.outcomes import Outcome, TestResult

EXPECTED_PATH = Path(__file__).resolve().parent / "libiscsi-expected.txt"

EXPECTED_HEADER = """\
# libiscsi iscsi-test-cu conformance expectations for pyscst.
# One test per line: NAME OUTCOME, OUTCOME one of FAIL < SKIP < PASS (the
# minimum accepted; FAIL means "not yet passing"). Names ending in [readonly]
# come from the ALL.ReadOnly run against a LUN mapped read-only, [multipath]
# from the ALL.MultipathIO run with two sessions to LUN 0, [removable] from
# the PREVENT ALLOW / START STOP UNIT runs on a removable disk (LUN 2),
# [4k-physical] from the WRITE SAME / COMPARE AND WRITE runs on a disk with
# physical_block_size = 4096 (LUN 3), [alua] from the runs against a target
# with two portals in two ALUA port groups (MultipathIO: one path per port).
# Checked by tests/conformance/test_libiscsi.py; never edit by hand to a lower
# outcome. Record improvements with: python -m tests.conformance.update
"""


class ExpectationsError(ValueError):
    """A malformed expectations/results file, or an update that would step back."""


@attrs.frozen
class Change:
    name: str
    expected: Outcome
    actual: TestResult


@attrs.frozen
class Comparison:
    regressions: tuple[Change, ...]
    improvements: tuple[Change, ...]
    unexpected: tuple[TestResult, ...]  # ran but not in the expectations file

    @property
    def ok(self) -> bool:
        return not self.regressions


def parse_outcomes(text: str, *, allow_error: bool = False) -> dict[str, Outcome]:
    """``NAME OUTCOME [# comment]`` lines; '#' starts a comment."""
    outcomes: dict[str, Outcome] = {}
    for number, line in enumerate(text.splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        parts = body.split()
        if len(parts) != 2:
            raise ExpectationsError(f"line {number}: expected 'NAME OUTCOME', got {line!r}")
        name, word = parts
        try:
            outcome = Outcome(word)
        except ValueError:
            raise ExpectationsError(f"line {number}: unknown outcome {word!r}") from None
        if outcome is Outcome.ERROR and not allow_error:
            raise ExpectationsError(f"line {number}: ERROR is not an expectation (use FAIL)")
        if name in outcomes:
            raise ExpectationsError(f"line {number}: {name} listed twice")
        outcomes[name] = outcome
    return outcomes


def read_outcomes(path: Path, *, allow_error: bool = False) -> dict[str, Outcome]:
    return parse_outcomes(path.read_text(), allow_error=allow_error)


def format_expectations(outcomes: Mapping[str, Outcome]) -> str:
    lines = [f"{name} {outcome.recordable.value}" for name, outcome in outcomes.items()]
    return EXPECTED_HEADER + "\n".join(lines) + "\n"


def format_results(results: Iterable[TestResult]) -> str:
    """The results file: like expectations, with ERROR kept and reasons as comments."""
    lines = []
    for r in results:
        reason = f"  # {r.reason}" if r.reason else ""
        lines.append(f"{r.name} {r.outcome.value}{reason}")
    return "\n".join(lines) + "\n"


def compare(expected: Mapping[str, Outcome], results: Mapping[str, TestResult]) -> Comparison:
    """Each expected test against its result; a missing result is an ERROR."""
    regressions: list[Change] = []
    improvements: list[Change] = []
    for name, want in expected.items():
        got = results.get(name) or TestResult(name, Outcome.ERROR, "did not run")
        if got.outcome.rank < want.rank:
            regressions.append(Change(name, want, got))
        elif got.outcome.rank > want.rank:
            improvements.append(Change(name, want, got))
    unexpected = tuple(r for name, r in results.items() if name not in expected)
    return Comparison(tuple(regressions), tuple(improvements), unexpected)


def advance(
    expected: Mapping[str, Outcome], actual: Mapping[str, Outcome]
) -> dict[str, Outcome]:
    """Expectations moved forward to ``actual``; refuses if anything would step back.

    Tests absent from ``actual`` keep their expectation only if it is FAIL
    (otherwise they count as a regression: they did not run). New tests are
    added with their outcome.
    """
    backwards = [
        f"{name}: expected {want.value}, got {actual.get(name, Outcome.ERROR).value}"
        for name, want in expected.items()
        if actual.get(name, Outcome.ERROR).rank < want.rank
    ]
    if backwards:
        raise ExpectationsError(
            "refusing to record a run with regressions (expectations only move forward):\n  "
            + "\n  ".join(backwards)
        )
    merged = {
        name: max(want, actual.get(name, want), key=lambda o: o.rank).recordable
        for name, want in expected.items()
    }
    for name, outcome in actual.items():
        merged.setdefault(name, outcome.recordable)
    return merged


def excerpt(log: str, limit: int = 1500) -> str:
    log = log.strip()
    return log if len(log) <= limit else log[:limit] + "\n    ..."


def report(comparison: Comparison, totals: Mapping[Outcome, int], results_path: Path) -> str:
    """Human summary: totals, regressions with their log, improvements."""
    out = [
        "libiscsi conformance: "
        + ", ".join(f"{totals.get(o, 0)} {o.value}" for o in
                    (Outcome.PASS, Outcome.SKIP, Outcome.FAIL, Outcome.ERROR)),
        f"results: {results_path}",
    ]
    if comparison.regressions:
        out.append(f"\n{len(comparison.regressions)} REGRESSION(S) (below expectation):")
        for change in comparison.regressions:
            reason = f" ({change.actual.reason})" if change.actual.reason else ""
            out.append(
                f"- {change.name}: expected {change.expected.value}, "
                f"got {change.actual.outcome.value}{reason}"
            )
            if change.actual.log:
                out.append("    " + excerpt(change.actual.log).replace("\n", "\n    "))
    if comparison.improvements:
        out.append(f"\n{len(comparison.improvements)} improvement(s) (above expectation):")
        out.extend(
            f"- {c.name}: {c.expected.value} -> {c.actual.outcome.value}"
            for c in comparison.improvements
        )
        out.append(f"record them with: python -m tests.conformance.update {results_path}")
    if comparison.unexpected:
        out.append(f"\n{len(comparison.unexpected)} test(s) not in {EXPECTED_PATH.name}:")
        out.extend(f"- {r.name}: {r.outcome.value}" for r in comparison.unexpected)
    return "\n".join(out)
