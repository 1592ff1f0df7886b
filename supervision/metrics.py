"""Prometheus metrics, read from the actors' own counters at scrape time.

Why a custom collector rather than prometheus_client's Counter objects: the LU
already counts every command (``actors/lu_stats.py``: commands, bytes, errors,
a latency histogram) for ``pyscst admin stats``. Incrementing a second set of
counters on the datapath would cost every command; reading the existing ones
when Prometheus asks costs only the scrape. So the command path pays nothing
for metrics, on or off.

The latency histogram's ``le`` bounds are powers of two nanoseconds (1.024 µs
.. 17.2 s): every fourth bucket of the LU's log-linear histogram ends exactly
one below such a power, so these cumulative counts are exact, not estimates.
``_sum`` is the LU's latency sum (one integer add per command, the only
thing metrics added to the command path), so ``rate(_sum)/rate(_count)`` is
the exact mean.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pyscst.actors.device_unit import DeviceState
from pyscst.actors.lu_stats import SUB_BITS, StatsSnapshot
from pyscst.scsi.alua import AccessState
from pyscst.scsi.sense import SenseKey

if TYPE_CHECKING:
    from pyscst.supervision.daemon import Daemon

#: powers of two of nanoseconds used as ``le`` bounds: 2**10 ns .. 2**34 ns
_LE_EXPONENTS = range(10, 35)


def latency_buckets(snapshot: StatsSnapshot) -> list[tuple[str, float]]:
    """Cumulative ``(le seconds, count)`` pairs of a snapshot, ending with +Inf.

    The LU's bucket ``i`` with ``i & 3 == 3`` and exponent ``e`` ends at
    ``2**(e+1) - 1`` ns, so "at most that" is the sum of buckets ``0..i``.
    """
    histogram = snapshot.histogram
    out: list[tuple[str, float]] = []
    running = 0
    index = 0
    for exponent in _LE_EXPONENTS:
        # last bucket whose upper bound is 2**exponent - 1 ns
        last = ((exponent - SUB_BITS) << SUB_BITS) | ((1 << SUB_BITS) - 1)
        while index <= last and index < len(histogram):
            running += histogram[index]
            index += 1
        out.append((_seconds(1 << exponent), float(running)))
    out.append(("+Inf", float(sum(histogram))))
    return out


def _seconds(ns: int) -> str:
    return repr(ns / 1e9)


def _sense_name(key: int) -> str:
    try:
        return SenseKey(key).name.lower()
    except ValueError:
        return f"0x{key:x}"


class DaemonCollector(Collector):
    """Everything ``/metrics`` shows, collected from one running daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def describe(self) -> list[Metric]:
        return []  # the set of series depends on the running config

    def collect(self) -> Iterator[Metric]:
        yield from self._units()
        yield from self._sessions()
        yield from self._alua()
        yield from self._faults()
        yield from self._cluster()

    def _units(self) -> Iterator[Metric]:
        d = "device"
        commands = CounterMetricFamily(
            "pyscst_lu_commands", "SCSI commands finished by a logical unit", labels=[d]
        )
        errors = CounterMetricFamily(
            "pyscst_lu_errors", "commands that did not end GOOD (or were aborted)", labels=[d]
        )
        read = CounterMetricFamily("pyscst_lu_read_bytes", "bytes read by initiators", labels=[d])
        written = CounterMetricFamily(
            "pyscst_lu_written_bytes", "bytes written by initiators", labels=[d]
        )
        sense = CounterMetricFamily(
            "pyscst_lu_check_conditions",
            "CHECK CONDITION answers by sense key",
            labels=[d, "sense_key"],
        )
        latency = HistogramMetricFamily(
            "pyscst_lu_latency_seconds",
            "command latency from arrival at the LU to its answer",
            labels=[d],
        )
        tasks = GaugeMetricFamily(
            "pyscst_lu_tasks", "commands in the LU's task set (queue depth) now", labels=[d]
        )
        uas = GaugeMetricFamily(
            "pyscst_lu_unit_attentions_queued",
            "UNIT ATTENTION conditions waiting to be reported, over all nexuses",
            labels=[d],
        )
        for name, lu in sorted(self.daemon.units.items()):
            snap = lu.stats()
            commands.add_metric([name], snap.commands)
            errors.add_metric([name], snap.errors)
            read.add_metric([name], snap.bytes_read)
            written.add_metric([name], snap.bytes_written)
            for key, count in sorted(lu.sense_key_counts.items()):
                sense.add_metric([name, _sense_name(key)], count)
            latency.add_metric([name], latency_buckets(snap), snap.total_ns / 1e9)
            tasks.add_metric([name], lu.task_count())
            uas.add_metric([name], lu.unit_attentions_queued())
        yield from (commands, errors, read, written, sense, latency, tasks, uas)
        yield from self._device_states()

    def _device_states(self) -> Iterator[Metric]:
        """Each device's service state (online / restarting / offline) as a state
        set, and its crashes: what an alert on an offline device needs."""
        state = GaugeMetricFamily(
            "pyscst_device_state",
            "1 for the device's current service state, 0 for the others",
            labels=["device", "state"],
        )
        crashes = CounterMetricFamily(
            "pyscst_device_crashes", "crashes of the device's actor or LU", labels=["device"]
        )
        for name in sorted(self.daemon.units):
            unit = self.daemon.device_unit(name)
            if unit is None:
                continue
            now = unit.state
            for each in DeviceState:
                state.add_metric([name, each.value], 1.0 if each is now else 0.0)
            crashes.add_metric([name], unit.crashes)
        yield from (state, crashes)

    def _sessions(self) -> Iterator[Metric]:
        sessions = GaugeMetricFamily(
            "pyscst_sessions",
            "logged-in sessions by target and portal",
            labels=["target", "portal"],
        )
        labels = ["target", "initiator", "isid", "lun", "device"]
        commands = CounterMetricFamily(
            "pyscst_session_commands",
            "commands of one I_T_L nexus (session and LUN)",
            labels=labels,
        )
        read = CounterMetricFamily(
            "pyscst_session_read_bytes", "bytes read through one I_T_L nexus", labels=labels
        )
        written = CounterMetricFamily(
            "pyscst_session_written_bytes", "bytes written through one I_T_L nexus", labels=labels
        )
        for target in self.daemon.directory:
            per_portal: dict[str, int] = {}
            for handle in list(target.sessions.values()):
                info = handle.info()
                if info is None:
                    continue
                portal = str(getattr(handle, "portal", "") or "")
                per_portal[portal] = per_portal.get(portal, 0) + 1
                for lun, mapping in sorted(info.luns.items()):
                    snap = mapping.lu.nexus_stats(info.nexus)
                    if snap is None:
                        continue
                    values = [
                        target.name, info.initiator_name, f"0x{info.isid:012x}", str(lun),
                        mapping.lu.name,
                    ]  # fmt: skip
                    commands.add_metric(values, snap.commands)
                    read.add_metric(values, snap.bytes_read)
                    written.add_metric(values, snap.bytes_written)
            for portal, count in sorted(per_portal.items()):
                sessions.add_metric([target.name, portal], count)
        yield from (sessions, commands, read, written)

    def _alua(self) -> Iterator[Metric]:
        """Each ALUA port group's access state as a state set: what a dashboard
        of a failover, or an alert on a group left standby, needs."""
        state = GaugeMetricFamily(
            "pyscst_alua_state",
            "1 for the port group's current asymmetric access state, 0 for the others",
            labels=["target", "group", "state"],
        )
        for target in self.daemon.directory:
            if target.alua is None:
                continue
            for group in target.alua:
                for each in AccessState:
                    value = 1.0 if each is group.state else 0.0
                    state.add_metric([target.name, group.name, each.label], value)
        yield state

    def _faults(self) -> Iterator[Metric]:
        injections = CounterMetricFamily(
            "pyscst_fault_injections", "faults injected by a rule", labels=["rule", "action"]
        )
        matches = CounterMetricFamily(
            "pyscst_fault_matches", "commands or PDUs a rule matched", labels=["rule", "action"]
        )
        enabled = GaugeMetricFamily(
            "pyscst_fault_rule_enabled", "1 while a fault rule is armed", labels=["rule", "action"]
        )
        for status in self.daemon.faults.status():
            values = [str(status["id"]), str(status["action"])]
            injections.add_metric(values, status["injections"])
            matches.add_metric(values, status["matches"])
            enabled.add_metric(values, 1 if status["enabled"] else 0)
        yield from (injections, matches, enabled)

    def _cluster(self) -> Iterator[Metric]:
        """Cluster mode (docs/cluster.md): nothing for a single node."""
        node = self.daemon.cluster
        if node is None:
            return
        label = [node.settings.node]
        fenced = GaugeMetricFamily(
            "pyscst_cluster_fenced", "1 while this node is fenced (lease not renewed)",
            labels=["node"],
        )  # fmt: skip
        fenced.add_metric(label, 1 if node.fenced else 0)
        fences = CounterMetricFamily(
            "pyscst_cluster_fences", "times this node fenced itself", labels=["node"]
        )
        fences.add_metric(label, node.fence_count)
        members = GaugeMetricFamily(
            "pyscst_cluster_members", "live members this node sees, itself included",
            labels=["node"],
        )  # fmt: skip
        members.add_metric(label, len(node.members))
        yield from (fenced, fences, members)
