"""Where a library lives on disk: its inventory file and its cartridges.

A ``vchanger`` device's ``path`` is the library directory: one cartridge
per barcode (``<directory>/<barcode>/``, devices/tape_cartridge.py). Which
cartridge is in which element is the inventory, kept in
``<state_dir>/library/<device>.json`` and written after every move or
operator change as the APTPL file is: temp file, fsync, rename, fsync of the
directory, never through a symlink below ``state_dir`` (devices/confine.py).
A crash leaves the old inventory or the new one. A file that cannot be read
or is not an inventory stops the device from starting with an error naming
the file (the operator decides: repair it, or remove it to start empty);
it is never silently replaced.

The changer's "store" (what the device actor opens and closes) is this
object: it has no blocks, so it is a read-only :class:`NullStore` of one
block that also carries the inventory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from pyscst.devices.confine import dir_beneath, read_beneath, write_beneath
from pyscst.devices.library import Library, LibraryLayout, OperatorRefused, check_barcode
from pyscst.devices.stores import NullStore
from pyscst.devices.tape_cartridge import CartridgeError, create_blank, read_meta

log = logging.getLogger(__name__)

#: a cartridge's capacity when the configuration does not say (bytes)
DEFAULT_CAPACITY = 1 << 30


@attrs.frozen
class CartridgeSpec:
    """A cartridge the configuration asks for (created blank if missing)."""

    barcode: str
    capacity: int = DEFAULT_CAPACITY
    worm: bool = False
    #: storage slot number, 1-based, when it is first placed (None: first free)
    slot: int | None = None


@attrs.frozen
class LibrarySettings:
    """A ``vchanger`` device's ``[devices.NAME.library]`` table, resolved."""

    layout: LibraryLayout
    #: the inventory file (``<state_dir>/library/<device>.json``)
    state_file: Path
    cartridges: tuple[CartridgeSpec, ...] = ()


class LibraryStore(NullStore):
    """The inventory of one library, and the directory of its cartridges."""

    def __init__(
        self, library: Library, state_file: Path, directory: Path, roots: Sequence[Path]
    ) -> None:
        super().__init__(512, read_only=True)
        self.library = library
        self.state_file = state_file
        self.directory = directory
        self._roots = tuple(roots)

    @classmethod
    def open(
        cls, settings: LibrarySettings, directory: Path, roots: Sequence[Path]
    ) -> LibraryStore:
        """Load the inventory (or start one), create the configured cartridges
        that do not exist yet and place the new ones. Blocking. ValueError
        naming the file when the inventory is unreadable or malformed."""
        state_file = settings.state_file
        try:
            text = read_beneath(state_file, roots).decode()
        except FileNotFoundError:
            library, notes = Library(settings.layout), list[str]()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"library state {state_file}: cannot read: {exc}") from None
        else:
            try:
                library, notes = Library.from_json(settings.layout, json.loads(text))
            except ValueError as exc:  # json.JSONDecodeError is one
                raise ValueError(
                    f"library state {state_file} is corrupt: {exc}; repair or remove it "
                    "(removing it forgets which cartridge is where)"
                ) from None
        for note in notes:
            log.warning("%s: %s", state_file, note)
        with dir_beneath(directory, roots, create=True):
            pass  # the library directory exists and is no symlink
        store = cls(library, state_file, directory, roots)
        for spec in settings.cartridges:
            if not store.cartridge_path(spec.barcode).exists():
                store._create(spec.barcode, spec.capacity, spec.worm)
            if not library.knows(spec.barcode):
                library.add_to_shelf(spec.barcode)
                address = None if spec.slot is None else library.storage_address(spec.slot)
                library.place(spec.barcode, address)
        store._write()
        return store

    def cartridge_path(self, barcode: str) -> Path:
        return self.directory / check_barcode(barcode)

    def _create(self, barcode: str, capacity: int, worm: bool) -> None:
        try:
            create_blank(self.cartridge_path(barcode), barcode, capacity, worm=worm)
        except CartridgeError as exc:
            raise OperatorRefused(f"cannot create cartridge {barcode}: {exc}") from None

    async def create_cartridge(self, barcode: str, capacity: int, worm: bool) -> None:
        """A blank cartridge on the shelf (the operator's ``create``)."""
        self.library.add_to_shelf(barcode)
        try:
            await trio.to_thread.run_sync(self._create, barcode, capacity, worm)
        except BaseException:
            self.library.forget(barcode)
            raise

    async def delete_cartridge(self, barcode: str) -> None:
        """Remove a shelf cartridge and its file (the operator's ``delete``)."""
        self.library.forget(barcode)
        path = self.cartridge_path(barcode)
        await trio.to_thread.run_sync(lambda: shutil.rmtree(path, ignore_errors=True))

    def adopt(self, barcode: str) -> None:
        """A cartridge directory the operator copied into the library directory
        (from another library, a backup of one) goes on the shelf. Blocking.
        OperatorRefused unless it is a readable cartridge of that barcode."""
        path = self.cartridge_path(barcode)
        try:
            with dir_beneath(path, self._roots) as walked:
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=walked)
            try:
                meta = read_meta(path, fd)
            finally:
                os.close(fd)
        except FileNotFoundError:
            raise OperatorRefused(f"no cartridge {barcode}; create it first") from None
        except (OSError, CartridgeError) as exc:
            raise OperatorRefused(f"cartridge {barcode} cannot be used: {exc}") from None
        if meta.get("barcode") != barcode:
            raise OperatorRefused(
                f"{path} holds cartridge {meta.get('barcode')!r}, not {barcode}"
            )
        self.library.add_to_shelf(barcode)

    def _write(self) -> None:
        data = json.dumps(self.library.to_json(), indent=1).encode()
        write_beneath(self.state_file, self._roots, data)

    async def save(self) -> None:
        """Write the inventory crash-safely. Raises OSError."""
        await trio.to_thread.run_sync(self._write)
