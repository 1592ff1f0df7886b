"""Shared pytest setup: a marker for each kind of test, from the directory it lives in.

``tests/unit/<layer>/`` (one package in-process, no daemon, no external tool)
gets ``unit``, ``tests/e2e/`` (a real daemon, the pyscst command, a built wheel)
``e2e``, ``tests/conformance/`` (libiscsi, qemu-img, tgtd) ``conformance``, and
the benchmark harness's own tests ``bench``. ``make test`` runs them all; a
developer runs one kind with ``pytest -m unit`` (``make test-unit``) or one
layer with ``pytest tests/unit/actors``. The markers are registered in
pyproject.toml, where ``--strict-markers`` holds them to that list.

The test helpers shared by many modules (tests/daemon.py runs the daemon,
tests/fakes.py, tests/wire.py, tests/cdbs.py) stay plain modules beside this
file; each fixture is still used by one module only, so none moved here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
BENCHMARKS = TESTS.parent / "benchmarks"
KINDS = {"unit": pytest.mark.unit, "e2e": pytest.mark.e2e,
         "conformance": pytest.mark.conformance}


def kind_of(path: Path) -> pytest.MarkDecorator | None:
    """The marker a test file's place in the tree gives it, if any."""
    path = path.resolve()
    if path.is_relative_to(BENCHMARKS):
        return pytest.mark.bench
    if path.is_relative_to(TESTS):
        parts = path.relative_to(TESTS).parts
        if len(parts) > 1:
            return KINDS.get(parts[0])
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        mark = kind_of(item.path)
        if mark is not None:
            item.add_marker(mark)
