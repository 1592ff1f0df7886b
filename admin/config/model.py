"""The validated, resolved configuration the daemon runs from.

Everything here is already checked and absolute: paths resolved, sizes in
bytes, names validated, LUN maps free of duplicates and dangling references.
The daemon and the admin plane read these frozen records and never see TOML.
"""

from __future__ import annotations

import enum
import fnmatch
from pathlib import Path

import attrs

from pyscst.actors.faults import FaultRule
from pyscst.admin.config.values import Portal, is_glob
from pyscst.devices.device_config import DeviceConfig
from pyscst.scsi.alua import AccessState

__all__ = [
    "AuthConfig",
    "ChapUser",
    "ClusterSettings",
    "Config",
    "DeviceConfig",
    "Digest",
    "InitiatorGroup",
    "IscsiSettings",
    "LogLevel",
    "LunMapping",
    "MetricsSettings",
    "PortGroupConfig",
    "Portal",
    "TargetConfig",
]


class Digest(enum.StrEnum):
    """iSCSI HeaderDigest / DataDigest values."""

    NONE = "None"
    CRC32C = "CRC32C"


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @property
    def as_logging_level(self) -> int:
        import logging

        return int(logging.getLevelName(self.value.upper()))


@attrs.frozen
class IscsiSettings:
    """What the target offers in login negotiation (RFC 7143 section 13)."""

    max_recv_data_segment_length: int = 262144
    max_burst_length: int = 1048576
    first_burst_length: int = 65536
    initial_r2t: bool = False
    immediate_data: bool = True
    max_outstanding_r2t: int = 1
    max_connections: int = 1
    default_time2wait: int = 2
    default_time2retain: int = 20
    header_digest: tuple[Digest, ...] = (Digest.NONE, Digest.CRC32C)
    data_digest: tuple[Digest, ...] = (Digest.NONE, Digest.CRC32C)
    queue_depth: int = 128
    nop_interval: float = 0.0
    nop_timeout: float = 30.0
    poll_us: int = 50
    #: seconds from accept to the final Login Response
    login_timeout: float = 10.0
    #: seconds one part of a PDU (header, data segment) may take to arrive once begun
    pdu_timeout: float = 30.0
    #: connections not yet logged in, in total (per portal) and per source address
    max_prelogin_connections: int = 256
    max_prelogin_per_address: int = 32


@attrs.frozen
class MetricsSettings:
    """The Prometheus endpoint ([metrics]); ``listen`` None means off (the default)."""

    listen: Portal | None = None


@attrs.frozen
class ClusterSettings:
    """``[cluster]`` (docs/cluster.md): the etcd endpoints, this node's name, its
    lease TTL in seconds and the key prefix; absent: a single node, no etcd."""

    etcd: tuple[str, ...]
    node: str
    lease_ttl: int = 10
    prefix: str = "/pyscst"


@attrs.frozen
class LunMapping:
    """One LUN in a LUN map: number -> device, optionally forced read-only."""

    lun: int
    device: str
    read_only: bool = False


@attrs.frozen
class InitiatorGroup:
    """Initiators (exact names or fnmatch globs) that see their own LUN map."""

    name: str
    initiators: tuple[str, ...]
    luns: tuple[LunMapping, ...] = ()

    def matches(self, initiator_name: str) -> bool:
        return any(self._match(p, initiator_name) for p in self.initiators)

    def matches_exactly(self, initiator_name: str) -> bool:
        return any(
            not is_glob(p) and p.lower() == initiator_name.lower() for p in self.initiators
        )

    @staticmethod
    def _match(pattern: str, name: str) -> bool:
        # iSCSI names compare case-insensitively (RFC 3722 normalises to lower case).
        if is_glob(pattern):
            return fnmatch.fnmatchcase(name.lower(), pattern.lower())
        return pattern.lower() == name.lower()


@attrs.frozen
class ChapUser:
    """A CHAP name and secret ([targets."IQN".auth] chap / mutual).

    ``secret_file`` is the reference as the file wrote it (None for an inline
    ``secret``): what ``save`` writes back. The secret itself is never shown.
    """

    user: str
    secret: bytes = attrs.field(repr=False)
    secret_file: str | None = None

    def public(self) -> dict[str, str]:
        """What the console, ``--json`` and logs may show."""
        if self.secret_file is not None:
            return {"user": self.user, "secret_file": self.secret_file}
        return {"user": self.user, "secret": "(inline, hidden)"}


@attrs.frozen
class AuthConfig:
    """Who may log in to a target (or discover), and how they authenticate."""

    initiators: tuple[str, ...] | None = None  # None: anyone
    chap: tuple[ChapUser, ...] = ()
    mutual: ChapUser | None = None

    def allows(self, initiator_name: str) -> bool:
        if self.initiators is None:
            return True
        return any(InitiatorGroup._match(p, initiator_name) for p in self.initiators)

    def public(self) -> dict[str, object]:
        return {
            "initiators": None if self.initiators is None else list(self.initiators),
            "chap": [c.public() for c in self.chap],
            "mutual": None if self.mutual is None else self.mutual.public(),
        }


@attrs.frozen
class PortGroupConfig:
    """An ALUA target port group ([targets."iqn...".port_groups.NAME]): some of
    the target's portals, one target port, one asymmetric access state."""

    name: str
    group_id: int
    portals: tuple[Portal, ...] = ()
    #: the state it starts in (the live state is the operator's, actors/alua.py)
    state: AccessState = AccessState.ACTIVE_OPTIMIZED
    #: RELATIVE TARGET PORT IDENTIFIER, also the iSCSI target portal group tag
    relative_port: int = 1
    preferred: bool = False


@attrs.frozen
class TargetConfig:
    """One iSCSI target ([targets."iqn..."])."""

    name: str
    portals: tuple[Portal, ...]
    luns: tuple[LunMapping, ...] = ()  # the default group
    groups: tuple[InitiatorGroup, ...] = ()
    alias: str | None = None
    auth: AuthConfig = AuthConfig()
    #: ALUA ([targets."iqn...".port_groups]); none: no ALUA, one target port
    port_groups: tuple[PortGroupConfig, ...] = ()
    #: SET TARGET PORT GROUPS accepted (INQUIRY TPGS 11b, else 01b)
    alua_explicit: bool = True
    #: seconds, REPORT TPGS' IMPLICIT TRANSITION TIME
    alua_transition_time: int = 0

    def group_for(self, initiator_name: str) -> InitiatorGroup | None:
        """The group whose LUN map an initiator sees; None means the default map.

        A group naming the initiator exactly wins; otherwise the first group
        (in file order) with a matching glob.
        """
        for group in self.groups:
            if group.matches_exactly(initiator_name):
                return group
        for group in self.groups:
            if group.matches(initiator_name):
                return group
        return None

    def luns_for(self, initiator_name: str) -> tuple[LunMapping, ...]:
        """The LUN map an initiator sees (LUN masking)."""
        group = self.group_for(initiator_name)
        return self.luns if group is None else group.luns


@attrs.frozen
class Config:
    """A whole configuration file, validated, with absolute paths."""

    state_dir: Path
    control_socket: Path
    log_level: LogLevel = LogLevel.INFO
    iscsi: IscsiSettings = IscsiSettings()
    devices: tuple[DeviceConfig, ...] = ()
    targets: tuple[TargetConfig, ...] = ()
    #: fault injection rules ([[faults]], admin/config/faults.py), in file order
    faults: tuple[FaultRule, ...] = ()
    #: [discovery_auth]: CHAP for discovery sessions (initiators is always None)
    discovery_auth: AuthConfig = AuthConfig()
    #: directories besides state_dir where backing files and saved configs may be
    allowed_dirs: tuple[Path, ...] = ()
    #: a group whose members may use the control socket (besides root and our user)
    control_group: str | None = None

    @property
    def confined_roots(self) -> tuple[Path, ...]:
        """Where backing files (and PR state) may live: state_dir and allowed_dirs."""
        return (self.state_dir, *self.allowed_dirs)
    #: the Prometheus endpoint ([metrics], supervision/metrics.py); off by default
    metrics: MetricsSettings = MetricsSettings()
    #: cluster mode ([cluster], supervision/cluster/); None: one node
    cluster: ClusterSettings | None = None

    def device(self, name: str) -> DeviceConfig:
        """The device called ``name`` (KeyError if none)."""
        for device in self.devices:
            if device.name == name:
                return device
        raise KeyError(name)

    def target(self, name: str) -> TargetConfig:
        """The target called ``name`` (KeyError if none)."""
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)
