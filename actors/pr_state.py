"""Persistent reservation state of one logical unit, as plain immutable values.

SPC-4 5.14 keys everything on I_T nexuses; a :class:`Registrant` names the
nexuses one registration covers (one nexus, every target port for ALL_TG_PT,
every initiator port of a name for a name-only TransportID). The state is a
frozen value so the service-action logic in ``persistent_reservations`` can
compute a new state and the LU commits it only once it is durable.
"""

from __future__ import annotations

import enum

import attrs

from pyscst.scsi.command import Nexus


class PrType(enum.IntEnum):
    """Persistent reservation types (SPC-4 table 173)."""

    WRITE_EXCLUSIVE = 0x1
    EXCLUSIVE_ACCESS = 0x3
    WRITE_EXCLUSIVE_REGISTRANTS_ONLY = 0x5
    EXCLUSIVE_ACCESS_REGISTRANTS_ONLY = 0x6
    WRITE_EXCLUSIVE_ALL_REGISTRANTS = 0x7
    EXCLUSIVE_ACCESS_ALL_REGISTRANTS = 0x8

    @property
    def all_registrants(self) -> bool:
        """Every registrant is a reservation holder."""
        return self in (
            PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS,
            PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
        )

    @property
    def registrants_only(self) -> bool:
        return self in (
            PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
            PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
        )

    @property
    def registrants_have_access(self) -> bool:
        """Registrants only and all registrants types: registered nexuses may access."""
        return self.all_registrants or self.registrants_only

    @property
    def exclusive_access(self) -> bool:
        """Reads conflict too (otherwise only writes do)."""
        return self in (
            PrType.EXCLUSIVE_ACCESS,
            PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
            PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
        )


#: the only scope SPC-4 still defines
LU_SCOPE = 0


@attrs.frozen
class Registrant:
    """The I_T nexuses one registration stands for.

    ``isid`` None: every initiator port of ``initiator_name`` (a TransportID
    without ISID); ``target_port`` None: every target port (ALL_TG_PT).
    """

    initiator_name: str
    isid: int | None
    target_port: str | None
    relative_port: int = 0

    @classmethod
    def of(cls, nexus: Nexus, all_tg_pt: bool = False) -> Registrant:
        return cls(
            nexus.initiator_name.lower(),
            nexus.isid,
            None if all_tg_pt else nexus.target_port,
            nexus.relative_port,
        )

    def matches(self, nexus: Nexus) -> bool:
        return (
            self.initiator_name == nexus.initiator_name.lower()
            and (self.isid is None or self.isid == nexus.isid)
            and (self.target_port is None or self.target_port == nexus.target_port)
        )

    def overlaps(self, other: Registrant) -> bool:
        """Some I_T nexus would be covered by both."""
        return (
            self.initiator_name == other.initiator_name
            and (self.isid is None or other.isid is None or self.isid == other.isid)
            and (
                self.target_port is None
                or other.target_port is None
                or self.target_port == other.target_port
            )
        )


@attrs.frozen
class Registration:
    who: Registrant
    key: int


@attrs.frozen
class Reservation:
    """The persistent reservation; ``holder`` is None for all-registrants types."""

    type: PrType
    holder: Registrant | None
    scope: int = LU_SCOPE


@attrs.frozen
class PrState:
    """Registrations, the reservation, PRGENERATION and the APTPL setting."""

    generation: int = 0
    registrations: tuple[Registration, ...] = ()
    reservation: Reservation | None = None
    aptpl: bool = False

    @property
    def empty(self) -> bool:
        return not self.registrations and self.reservation is None

    def registration_of(self, nexus: Nexus) -> Registration | None:
        for reg in self.registrations:
            if reg.who.matches(nexus):
                return reg
        return None

    def is_holder(self, nexus: Nexus) -> bool:
        res = self.reservation
        if res is None:
            return False
        if res.holder is None:
            return self.registration_of(nexus) is not None
        return res.holder.matches(nexus)

    def holder_key(self) -> int:
        """READ RESERVATION's key: the holder's (zero for all-registrants types)."""
        res = self.reservation
        if res is None or res.holder is None:
            return 0
        for reg in self.registrations:
            if reg.who == res.holder:
                return reg.key
        return 0

    def bumped(self) -> int:
        return (self.generation + 1) & 0xFFFFFFFF
