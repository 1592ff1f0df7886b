"""The reservation record kept in etcd: round trip, and hostile values refused."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyscst.actors.persistent_reservations import Notice
from pyscst.actors.shared_state import ResvChange, ResvState
from pyscst.scsi.command import Nexus
from pyscst.scsi.sense import Asc
from pyscst.supervision.cluster import resv_codec
from tests.unit.actors.test_pr_store import STATE, B

NEXUS = Nexus.iscsi("iqn.2026-11.org.example:a", 0x400001, "iqn.t", 1)
TWO = B


def test_round_trip() -> None:
    change = ResvChange(
        ResvState(STATE, NEXUS),
        by=NEXUS,
        notices=(Notice(TWO, Asc.REGISTRATIONS_PREEMPTED),),
        abort=(TWO,),
    )
    decoded, node = resv_codec.decode(resv_codec.encode(change, "node-a"))
    assert node == "node-a"
    assert decoded == change


def _record(**change: object) -> bytes:
    doc = json.loads(resv_codec.encode(ResvChange(ResvState(STATE)), "a"))
    doc["change"].update(change)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"format": 2}',
        b'{"format": 1, "pr": null}',
        b"[" * 100000,
        b'{"format": 1}' + b" " * (resv_codec.MAX_VALUE + 1),
        _record(
            notices=[
                [
                    {"initiator": "x", "isid": None, "target_port": None, "relative_port": 0},
                    [0x29, 0],
                ]
            ]
        ),
        _record(notices=[["x", [0x2A, 3]]]),
        _record(abort=[{"initiator": 5, "isid": None, "target_port": None, "relative_port": 0}]),
        _record(
            by={
                "initiator_name": "a",
                "initiator_port": "b",
                "target_name": "c",
                "target_port": "d",
                "relative_port": -1,
                "isid": 0,
            }
        ),
        _record(node=None),
    ],
)
def test_hostile_values_are_refused(value: bytes) -> None:
    with pytest.raises(ValueError):
        resv_codec.decode(value)


@given(st.binary(max_size=400))
def test_decode_raises_only_value_error(value: bytes) -> None:
    try:
        resv_codec.decode(value)
    except ValueError:
        pass


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    )
)
def test_decode_of_any_json_in_the_change_raises_only_value_error(junk: object) -> None:
    for field in ("notices", "abort", "by", "node"):
        try:
            resv_codec.decode(_record(**{field: junk}))
        except ValueError:
            pass
