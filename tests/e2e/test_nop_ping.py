"""Target NOP-In pings ([iscsi] nop_interval / nop_timeout, RFC 7143 11.19): an
initiator that answers keeps its session; one that stays silent past the
timeout loses its connection, so its commands end instead of hanging."""

from __future__ import annotations

from pathlib import Path

import trio

from pyscst.transports.iscsi.initiator import ConnectionLost, Initiator
from tests.cdbs import TUR
from tests.daemon import running_daemon_async


async def test_answered_pings_keep_the_session(tmp_path: Path) -> None:
    async with running_daemon_async(
        tmp_path, iscsi={"nop_interval": 0.2, "nop_timeout": 2}
    ) as d:
        async with await Initiator.connect(d.host, d.port, target_name=d.target) as ini:
            await ini.execute(0, TUR)  # the power-on UA
            with trio.fail_after(20):
                while ini.nop_in_answered < 3:
                    await trio.sleep(0.05)
            r = await ini.execute(0, TUR)
            assert r.status == 0


async def test_an_unanswered_ping_drops_the_connection(tmp_path: Path) -> None:
    async with running_daemon_async(
        tmp_path, iscsi={"nop_interval": 0.2, "nop_timeout": 1}
    ) as d:
        async with await Initiator.connect(d.host, d.port, target_name=d.target) as ini:
            ini.answer_pings = False
            await ini.execute(0, TUR)
            with trio.fail_after(20):
                while True:
                    try:
                        await ini.execute(0, TUR)
                    except ConnectionLost:
                        break
                    await trio.sleep(0.05)
            assert ini.nop_in_answered == 0


async def test_no_pings_by_default(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path) as d:
        async with await Initiator.connect(d.host, d.port, target_name=d.target) as ini:
            ini.answer_pings = False
            await ini.execute(0, TUR)
            await trio.sleep(1.0)
            assert (await ini.execute(0, TUR)).status == 0
