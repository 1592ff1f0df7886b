"""The Prometheus state set of ALUA port groups (supervision/metrics.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from pyscst.actors.alua import PortGroupSpec
from pyscst.actors.target import Target
from pyscst.scsi.alua import AccessState
from pyscst.supervision.metrics import DaemonCollector


def test_each_group_has_one_state_set_to_one() -> None:
    with_alua = Target("iqn.2026-11.org.pyscst:a", portals=[("h", 1)], default_luns={})
    with_alua.set_port_groups([PortGroupSpec("x", 1, (("h", 1),)), PortGroupSpec("y", 2, ())])
    assert with_alua.alua is not None
    with_alua.alua.set_state("y", AccessState.STANDBY)
    without = Target("iqn.2026-11.org.pyscst:b", portals=[("h", 1)], default_luns={})
    daemon = cast(Any, SimpleNamespace(directory=[with_alua, without]))
    (family,) = list(DaemonCollector(daemon)._alua())
    ones = {
        (s.labels["target"], s.labels["group"], s.labels["state"])
        for s in family.samples if s.value == 1.0
    }  # fmt: skip
    assert ones == {
        ("iqn.2026-11.org.pyscst:a", "x", "active/optimized"),
        ("iqn.2026-11.org.pyscst:a", "y", "standby"),
    }
    assert len(family.samples) == 2 * len(AccessState)  # no series for a target without ALUA
