"""etc/pyscst-grafana.json: valid, and every series it queries is one pyscst exports.

The dashboard is checked against a real scrape, not a list kept by hand: a
daemon with a fault rule and a logged-in session that has sent commands
(including one CHECK CONDITION) exports every family there is, so a metric
renamed in supervision/metrics.py and not in the dashboard fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from pyscst.transports.iscsi.initiator import Initiator
from tests.daemon import DEFAULT_TARGET, REPO_ROOT, free_port
from tests.e2e.test_metrics import metrics_daemon, scrape

DASHBOARD = REPO_ROOT / "etc" / "pyscst-grafana.json"
_METRIC = re.compile(r"\bpyscst_[a-z_]+\b")


def _queries(node: Any) -> Iterator[str]:
    """Every PromQL string in the dashboard: panel targets and variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str) and "pyscst_" in value:
                yield value
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_dashboard_is_valid_grafana_json() -> None:
    dash = _dashboard()
    assert dash["title"] == "pyscst" and dash["uid"] == "pyscst"
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    variables = {v["name"] for v in dash["templating"]["list"]}
    for query in _queries(dash):
        for var in re.findall(r"\$(\w+)", query):
            assert var in variables or var.startswith("__"), var


async def test_every_queried_metric_is_exported(tmp_path: Path) -> None:
    wanted = {m for q in _queries(_dashboard()) for m in _METRIC.findall(q)}
    assert len(wanted) >= 12
    mport = free_port()
    async with metrics_daemon(tmp_path, mport) as d:
        async with await Initiator.connect(d.host, d.port, target_name=DEFAULT_TARGET) as ini:
            await ini.execute(0, bytes(6))  # the power-on UA: a CHECK CONDITION
            await ini.execute(0, bytes(6))
            samples = await trio.to_thread.run_sync(scrape, mport)
    exported = {name for name, _labels in samples}
    missing = sorted(wanted - exported)
    assert not missing, f"the dashboard queries series no scrape has: {missing}"
