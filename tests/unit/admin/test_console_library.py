"""The console's ``library`` command against an in-memory backend: which ops a
line sends and what the inventory looks like."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyscst.admin.client.console.shell import Shell
from tests.console_fake import FakeBackend
from tests.unit.admin.test_console_commands import run


class LibraryBackend(FakeBackend):
    def op_library_list(self, name: str) -> Any:
        self._device(name)
        return {
            "name": name,
            "elements": [
                {"address": 1, "type": "transport", "barcode": None},
                {"address": 0x10, "type": "import_export", "barcode": "NEW01", "open": True},
                {"address": 0x100, "type": "data_transfer", "barcode": "A00001", "drive": "t0"},
                {"address": 0x400, "type": "storage", "barcode": None},
            ],
            "shelf": ["OLD01"],
            "locked": True,
        }

    def op_library_create(self, name: str, barcode: str, **options: Any) -> Any:
        return {"message": f"library {name}: blank cartridge {barcode} on the shelf"}

    def op_library_import(self, name: str, barcode: str) -> Any:
        return {"message": f"library {name}: {barcode} imported into mail slot 0x0010"}


def test_library_lists_creates_and_imports(tmp_path: Path) -> None:
    fake = LibraryBackend.with_defaults(tmp_path / "saved.toml")
    shell = Shell(fake)
    text = run(shell, "library /devices/disk0")
    assert text.splitlines() == [
        "library disk0  (mail slots locked: an initiator prevents removal)",
        "  0x0001  picker           -",
        "  0x0010  mail slot        NEW01 (open)",
        "  0x0100  drive t0         A00001",
        "  0x0400  slot             -",
        "  shelf: OLD01",
    ]
    assert "blank cartridge B1" in run(
        shell, "library /devices/disk0 create B1 capacity=100G worm=true")
    assert "imported" in run(shell, "library /devices/disk0 import B1")
    sent = [(op, args) for op, args in fake.calls if op != "tree"]
    assert sent == [
        ("library.list", {"name": "disk0"}),
        ("library.create", {"name": "disk0", "barcode": "B1", "capacity": "100G", "worm": True}),
        ("library.import", {"name": "disk0", "barcode": "B1"}),
    ]
    assert "needs a barcode" in run(shell, "library /devices/disk0 export", ok=False)
    assert "unknown action" in run(shell, "library /devices/disk0 steal B1", ok=False)
    assert "unknown attributes colour" in run(
        shell, "library /devices/disk0 create B2 colour=red", ok=False)
    assert "takes no key=value" in run(shell, "library /devices/disk0 import B2 x=1", ok=False)
    assert len([c for c in fake.calls if c[0] != "tree"]) == 3  # refused lines send nothing


def test_library_completes_its_path_then_its_actions(tmp_path: Path) -> None:
    from tests.unit.admin.test_console_completion import complete

    shell = Shell(LibraryBackend.with_defaults(tmp_path / "saved.toml"))
    assert "/devices/" in complete(shell, "library /dev")
    assert complete(shell, "library /devices/disk0 ") == [
        "list", "create", "import", "export", "delete"]
    assert complete(shell, "library /devices/disk0 ex") == ["export"]
    assert complete(shell, "library /devices/disk0 import ") == []  # a barcode: free text
