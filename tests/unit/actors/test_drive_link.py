"""The changer's way to a drive (ActorDriveLink) against a stand-in drive actor:
refusals become the changer's exceptions, a load raises 28/00 on the drive's LU,
an unload makes the drive forget its cartridge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from pyscst.actors.device import DeviceActor
from pyscst.actors.drive_link import ActorDriveLink
from pyscst.actors.messages import OperateLibrary
from pyscst.devices.changer import ChangerDevice, DriveOccupied, DriveUnavailable
from pyscst.devices.device_config import DeviceConfig
from pyscst.devices.library import LibraryLayout
from pyscst.devices.library_store import LibrarySettings
from pyscst.devices.medium import MediumLocked
from pyscst.scsi.inquiry import StandardInquiry
from pyscst.scsi.sense import Asc


@attrs.define
class FakeDevice:
    inquiry: StandardInquiry = attrs.field(
        factory=lambda: StandardInquiry(device_type=1, product="pyscst tape")
    )


@attrs.frozen
class FakeCfg:
    serial: str = "SER123"
    path: Path | None = Path("/lib/A1")


@attrs.define
class FakeActor:
    running: bool = True
    present: bool = False
    locked: bool = False
    fail: Exception | None = None
    dies: bool = True  # the failure is the actor going down (else: a refusal)
    requests: list[tuple[bool, Path | None, bool]] = attrs.field(factory=list)
    cfg: Any = attrs.field(factory=FakeCfg)

    def medium_present(self) -> bool:
        return self.present

    def last_device(self) -> FakeDevice:
        return FakeDevice()

    async def change_medium(self, load: bool, path: Path | None = None,
                            forget: bool = False) -> bool:  # fmt: skip
        self.requests.append((load, path, forget))
        if self.fail is not None:
            self.running = not self.dies
            raise self.fail
        if self.locked:
            raise MediumLocked("prevented")
        changed = self.present != load
        self.present = load
        return changed


@attrs.define
class FakeLu:
    raised: list[Asc] = attrs.field(factory=list)

    def unit_attention(self, asc: Asc) -> None:
        self.raised.append(asc)


def link(actor: FakeActor | None, lu: FakeLu) -> ActorDriveLink:
    return ActorDriveLink("t0", lambda name: None if actor is None else (actor, lu))  # type: ignore[arg-type,return-value]


async def test_load_and_unload_through_the_drive_actor() -> None:
    actor, lu = FakeActor(), FakeLu()
    drive = link(actor, lu)
    await drive.load(Path("/lib/A1"))
    assert actor.requests == [(True, Path("/lib/A1"), False)]
    assert lu.raised == [Asc.NOT_READY_TO_READY_CHANGE]
    assert drive.holds() == Path("/lib/A1")
    with pytest.raises(DriveOccupied):
        await drive.load(Path("/lib/A2"))
    actor.locked = True
    with pytest.raises(MediumLocked):
        await drive.unload()
    actor.locked = False
    await drive.unload()
    assert actor.requests[-1] == (False, None, True)  # forget: a restart comes back empty
    assert drive.available() and drive.holds() is None  # unloaded
    assert drive.identifier() == b"PYSCST  pyscst tape     SER123          "


async def test_a_drive_that_is_gone_or_goes_down() -> None:
    lu = FakeLu()
    with pytest.raises(DriveUnavailable):
        await link(None, lu).load(Path("/lib/A1"))
    assert not link(None, lu).available() and link(None, lu).identifier() is None
    with pytest.raises(DriveUnavailable):
        await link(FakeActor(running=False), lu).unload()
    dying = FakeActor(fail=ValueError("device t0 did not answer"))
    with pytest.raises(DriveUnavailable):
        await link(dying, lu).load(Path("/lib/A1"))
    refusing = FakeActor(fail=ValueError("not a cartridge"), dies=False)
    with pytest.raises(ValueError, match="not a cartridge"):
        await link(refusing, lu).load(Path("/lib/A1"))
    assert lu.raised == []


async def test_a_request_to_a_device_actor_that_stops_mid_way_ends_at_once(
    tmp_path: Path,
) -> None:
    """A device actor stopped while it handles a request (offline, shutdown)
    closes that request's reply: the caller (a changer's move, the admin plane)
    hears it at once instead of waiting out the request timeout."""
    settings = LibrarySettings(LibraryLayout(slots=2), tmp_path / "library" / "lib.json")
    cfg = DeviceConfig("lib", "vchanger", 0, path=tmp_path / "lib", library=settings)
    actor = DeviceActor(cfg, roots=(tmp_path,))
    answers: list[object] = []
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as inner:
            await inner.start(actor.run)
            device = actor.current()
            assert isinstance(device, ChangerDevice)
            await device._robot.acquire()  # the robot is busy: the request waits inside

            async def ask() -> None:
                answers.append(await actor.request(OperateLibrary("import", "A1")))

            outer.start_soon(ask)
            await trio.sleep(0.1)
            began = trio.current_time()
            inner.cancel_scope.cancel()  # the actor stops mid-request
        await trio.sleep(0.1)
        assert answers and isinstance(answers[0], ValueError), answers
        assert "stopped before it answered" in str(answers[0])
        assert trio.current_time() - began < 5
