"""[cluster]: accepted as documented, every bad value named by its key path."""

from __future__ import annotations

import pytest

from pyscst.admin.config.files import ConfigError, dump_config, parse_config
from pyscst.admin.config.model import ClusterSettings

GOOD = '[cluster]\netcd = ["http://127.0.0.1:2379", "http://[::1]:2379"]\nnode = "node-a.1"\n'


def parse(body: str) -> ClusterSettings | None:
    return parse_config('state_dir = "/srv"\n' + body, "/srv").cluster


def test_defaults_and_round_trip() -> None:
    cluster = parse(GOOD)
    assert cluster == ClusterSettings(("http://127.0.0.1:2379", "http://[::1]:2379"), "node-a.1")
    assert cluster.lease_ttl == 10 and cluster.prefix == "/pyscst"
    config = parse_config('state_dir = "/srv"\n' + GOOD + "lease_ttl = 30\n", "/srv")
    assert parse_config(dump_config(config), "/srv") == config
    assert parse("") is None  # no [cluster]: one node, no etcd


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[cluster]\nnode = "a"\n', "cluster.etcd: required key missing"),
        ('[cluster]\netcd = []\nnode = "a"\n', "cluster.etcd: give at least one endpoint"),
        ('[cluster]\netcd = ["127.0.0.1:2379"]\nnode = "a"\n', "cluster.etcd[0]:"),
        ('[cluster]\netcd = ["http://h:1", "ftp://h:2"]\nnode = "a"\n', "cluster.etcd[1]:"),
        ('[cluster]\netcd = ["http://h:1"]\nnode = "a/b"\n', "cluster.node:"),
        ('[cluster]\netcd = ["http://h:1"]\nnode = ""\n', "cluster.node:"),
        ('[cluster]\netcd = ["http://h:1"]\nnode = "a"\nlease_ttl = 1\n', "cluster.lease_ttl:"),
        ('[cluster]\netcd = ["http://h:1"]\nnode = "a"\nlease_ttl = "5"\n', "cluster.lease_ttl:"),
        ('[cluster]\netcd = ["http://h:1"]\nnode = "a"\nprefix = "pyscst/"\n', "cluster.prefix:"),
        ('[cluster]\netcd = ["http://h:1"]\nnode = "a"\nnodes = 2\n', "cluster.nodes"),
    ],
)
def test_bad_values_name_their_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(body)
    assert message in str(err.value)
