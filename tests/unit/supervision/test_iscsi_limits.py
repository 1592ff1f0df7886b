"""The key values the daemon offers at login come from the [iscsi] table through
the transport's one builder (TargetOffer.limits); the config model's defaults and
the transport's are the same (they are written twice: see TargetOffer)."""

from __future__ import annotations

import attrs

from pyscst.admin.config.model import Digest, IscsiSettings
from pyscst.supervision.daemon import iscsi_limits
from pyscst.transports.iscsi.login import DEFAULT_LIMITS, TargetOffer


def test_the_default_config_offers_what_a_bare_policy_offers() -> None:
    assert iscsi_limits(IscsiSettings()) == dict(DEFAULT_LIMITS)
    offer = TargetOffer()
    settings = IscsiSettings()
    for field in attrs.fields(TargetOffer):
        mine = getattr(settings, field.name)
        if field.name.endswith("_digest"):
            mine = tuple(d.value for d in mine)
        assert mine == getattr(offer, field.name), field.name


def test_configured_values_reach_the_offer() -> None:
    settings = attrs.evolve(
        IscsiSettings(), max_burst_length=131072, first_burst_length=8192, initial_r2t=True,
        immediate_data=False, max_outstanding_r2t=4, default_time2wait=0,
        header_digest=(Digest.CRC32C,), data_digest=(Digest.CRC32C, Digest.NONE),
    )  # fmt: skip
    limits = iscsi_limits(settings)
    assert limits["MaxBurstLength"] == "131072" and limits["FirstBurstLength"] == "8192"
    assert limits["InitialR2T"] == "Yes" and limits["ImmediateData"] == "No"
    assert limits["MaxOutstandingR2T"] == "4" and limits["DefaultTime2Wait"] == "0"
    assert limits["HeaderDigest"] == "CRC32C" and limits["DataDigest"] == "CRC32C,None"
    assert limits["ErrorRecoveryLevel"] == "0"  # what this target fixes
