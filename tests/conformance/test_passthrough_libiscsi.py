"""libiscsi's full run through a ``passthrough`` device to a tgt disk: no FAIL.

tgt used directly fails some reservation tests (PrinServiceactionRange,
ProutReserve ownership, Reserve6 with two initiators), GET LBA STATUS
beyond the end, and it has no COMPARE AND WRITE. Through pyscst those pass:
reservations are the middle level's, LBA ranges are checked before
forwarding, and COMPARE AND WRITE is emulated. The run is ``ALL`` with both
initiator names, ``ALL.ReadOnly`` on a read-only mapping of the same device
and ``ALL.MultipathIO`` over two sessions. What tgt cannot do at all
(thin provisioning, SANITIZE, WRITE ATOMIC, ...) is a SKIP, as it is
against tgt itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance import expectations as ex
from tests.conformance.outcomes import Outcome, totals
from tests.conformance.runner import (
    RUN_MULTIPATH,
    RUN_READONLY,
    Run,
    find_tool,
    results_dir,
    run_suite,
)
from tests.daemon import running_daemon
from tests.helpers_tgt import tgtd_daemon, tgtd_unavailable, wait_until_ready

#: what tgt fails when used directly and pyscst in front of it must pass
TGT_FAILS_DIRECTLY = (
    "ALL.PrinServiceactionRange.Range",
    "ALL.ProutReserve.OwnershipEA",
    "ALL.ProutReserve.OwnershipWE",
    "ALL.Reserve6.2Initiators",
    "ALL.GetLBAStatus.BeyondEol",
)


@pytest.mark.skipif(tgtd_unavailable() is not None, reason=str(tgtd_unavailable()))
@pytest.mark.timeout(1800)
def test_libiscsi_through_passthrough_to_tgt(tmp_path: Path) -> None:
    tool = find_tool()
    if tool is None:
        pytest.skip("iscsi-test-cu (libiscsi-bin) is absent")
    out_dir = results_dir() / "passthrough"
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = (Run("passthrough-all", "ALL", lun=0), RUN_READONLY, RUN_MULTIPATH)
    with tgtd_daemon(tmp_path, size=128 << 20) as tgt:
        devices = {"pt": {"handler": "passthrough", "backend": tgt.url}}
        luns = ({"lun": 0, "device": "pt"}, {"lun": 1, "device": "pt", "read_only": True})
        with running_daemon(tmp_path / "d", devices=devices, luns=luns) as daemon:
            # (the suite must not start before the backend is reached and probed)
            wait_until_ready(daemon.host, daemon.port, daemon.target)
            results = run_suite(tool, daemon.url, out_dir, runs=runs)
    results_path = out_dir / "results-passthrough.txt"
    results_path.write_text(ex.format_results(results.values()))
    counts = totals(results)
    bad = sorted(f"{n}: {r.outcome.name} {r.reason}" for n, r in results.items()
                 if r.outcome in (Outcome.FAIL, Outcome.ERROR))  # fmt: skip
    print(counts, results_path)
    assert bad == [], "\n".join(bad)
    for name in TGT_FAILS_DIRECTLY:
        assert results[name].outcome is Outcome.PASS, name
