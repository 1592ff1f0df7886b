"""Library ops: a tape library's operator, live (``pyscst admin library ...``).

What an operator does at a real library's front panel: list what is loaded
where, create blank cartridges (barcode, capacity, WORM), import one through
a mail slot, export one from a mail slot, delete one that is out of the
library. Each is a message to the changer's device actor (which owns the
library) and waits for its answer; an import or export then raises IMPORT
OR EXPORT ELEMENT ACCESSED (28/01) for every nexus of the changer (SMC-3
6.1: the application must re-read the element status). These change no
configuration: the inventory lives in the library's own state file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pyscst.actors.messages import OperateLibrary
from pyscst.admin.config.values import parse_size
from pyscst.admin.control.ops.args import Args
from pyscst.admin.control.protocol import ErrorCode, OpError
from pyscst.admin.control.server import OpHandler
from pyscst.devices.library import Element, describe
from pyscst.scsi.sense import Asc

if TYPE_CHECKING:
    from pyscst.admin.control.operations import Controller

#: a blank cartridge's capacity unless the operator says
DEFAULT_CAPACITY = "1G"


def operations(controller: Controller) -> dict[str, OpHandler]:
    daemon = controller.daemon

    def changer(op: str, name: str) -> Any:
        unit = daemon.device_unit(name)
        changers = [d.name for d in daemon.config.devices if d.library is not None]
        if unit is None or unit.device.cfg.library is None:
            raise OpError(
                ErrorCode.NOT_FOUND,
                f'{op}: no vchanger device named "{name}" '
                f"(libraries: {', '.join(changers) or 'none'})",
                f"devices.{name}",
            )
        return unit

    async def ask(op: str, name: str, message: OperateLibrary) -> Any:
        unit = changer(op, name)
        if not unit.device.running:
            raise OpError(ErrorCode.INVALID, f"library {name} is not running ({unit.state.value})",
                          f"devices.{name}")  # fmt: skip
        result = await unit.device.request(message)
        if isinstance(result, Exception):
            raise OpError(ErrorCode.INVALID, f"library {name}: {result}", f"devices.{name}")
        return result

    async def library_list(args: Mapping[str, Any]) -> dict[str, Any]:
        a = Args("library.list", args)
        name = a.text("name")
        a.done()
        inventory = await ask("library.list", name, OperateLibrary("list"))
        return {"name": name, **inventory}

    async def library_create(args: Mapping[str, Any]) -> dict[str, Any]:
        a = Args("library.create", args)
        name, barcode = a.text("name"), a.text("barcode")
        written = a.opt_size("capacity")
        worm = a.flag("worm")
        a.done()
        try:
            capacity = parse_size(written if written is not None else DEFAULT_CAPACITY)
        except ValueError as exc:
            raise OpError(ErrorCode.INVALID, f"capacity: {exc}", "args.capacity") from None
        options = (("capacity", capacity), ("worm", worm))
        await ask("library.create", name, OperateLibrary("create", barcode, options))
        kind = "WORM cartridge" if worm else "cartridge"
        return {"message": f"library {name}: blank {kind} {barcode} ({capacity} bytes) "
                f"on the shelf; import it to put it in the library"}  # fmt: skip

    async def through_mail_slot(op: str, args: Mapping[str, Any], action: str) -> dict[str, Any]:
        a = Args(op, args)
        name, barcode = a.text("name"), a.text("barcode")
        a.done()
        element: Element = await ask(op, name, OperateLibrary(action, barcode))
        lu = daemon.units.get(name)
        if lu is not None:  # the application must re-read the element status
            lu.unit_attention(Asc.IMPORT_OR_EXPORT_ELEMENT_ACCESSED)
        where = describe(element)
        verb = "imported into" if action == "import" else "exported from"
        return {"message": f"library {name}: {barcode} {verb} {where}",
                "address": element.address}  # fmt: skip

    async def library_import(args: Mapping[str, Any]) -> dict[str, Any]:
        return await through_mail_slot("library.import", args, "import")

    async def library_export(args: Mapping[str, Any]) -> dict[str, Any]:
        return await through_mail_slot("library.export", args, "export")

    async def library_delete(args: Mapping[str, Any]) -> dict[str, Any]:
        a = Args("library.delete", args)
        name, barcode = a.text("name"), a.text("barcode")
        a.done()
        await ask("library.delete", name, OperateLibrary("delete", barcode))
        return {"message": f"library {name}: cartridge {barcode} deleted"}

    return {
        "library.list": library_list,
        "library.create": library_create,
        "library.import": library_import,
        "library.export": library_export,
        "library.delete": library_delete,
    }
