"""Record conformance improvements: ``python -m tests.conformance.update [RESULTS]``.

Reads a results file written by tests/conformance/test_libiscsi.py (default:
the latest, under build/conformance/) and moves each expectation in
libiscsi-expected.txt up to the outcome achieved. It refuses, changing
nothing, if any test did worse than expected: expectations never go back.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.conformance.expectations import (
    EXPECTED_PATH,
    ExpectationsError,
    advance,
    format_expectations,
    read_outcomes,
)
from tests.conformance.runner import results_dir

RESULTS_NAME = "results-latest.txt"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance.update",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("results", nargs="?", type=Path,
                        help=f"results file (default: build/conformance/{RESULTS_NAME})")
    parser.add_argument("--expected", type=Path, default=EXPECTED_PATH,
                        help="expectations file to update")
    args = parser.parse_args(argv)
    results_path: Path = args.results or results_dir() / RESULTS_NAME
    try:
        expected = read_outcomes(args.expected)
        actual = read_outcomes(results_path, allow_error=True)
        merged = advance(expected, actual)
    except (OSError, ExpectationsError) as exc:
        print(f"update: {exc}", file=sys.stderr)
        return 1
    moved = [n for n in merged if expected.get(n) is not merged[n]]
    args.expected.write_text(format_expectations(merged))
    for name in moved:
        before = expected[name].value if name in expected else "new"
        print(f"{name}: {before} -> {merged[name].value}")
    print(f"{len(moved)} expectation(s) moved forward in {args.expected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
