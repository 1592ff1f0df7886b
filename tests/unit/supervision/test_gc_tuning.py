"""The daemon keeps the cyclic collector off its datapath (supervision/gc_tuning.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pyscst.supervision.gc_tuning import GEN0_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_what_exists_is_frozen_and_young_collections_are_rarer() -> None:
    held: list[list[int]] = [[] for _ in range(1000)]  # what a started daemon holds for good
    _, gen1, gen2 = gc.get_threshold()
    tune_gc()
    assert gc.get_freeze_count() >= len(held)
    assert gc.get_threshold() == (GEN0_THRESHOLD, gen1, gen2)
    assert GEN0_THRESHOLD > 700  # (CPython's default)
    # a full collection walks only what was made since (get_objects: what it sees)
    assert len(gc.get_objects()) < gc.get_freeze_count()

@pytest.mark.usefixtures("restored_gc")
def test_cycles_made_after_tuning_are_still_collected() -> None:
    tune_gc()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    del a, b
    assert gc.collect() >= 2
