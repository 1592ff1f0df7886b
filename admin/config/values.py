"""Parsers for the scalar values a config file spells as text.

Sizes ("1GiB"), iSCSI names (RFC 3720 3.2.6), portals ("[::1]:3260") and
initiator patterns are strings in TOML but structured values to the daemon.
Each parser is a pure function that returns the value or raises ``ValueError``
with a message fit to show after the key path, so the config loader can
collect every problem at once.
"""

from __future__ import annotations

import ipaddress
import re

import attrs

DEFAULT_ISCSI_PORT = 3260
MAX_ISCSI_NAME_BYTES = 223  # RFC 3720 3.2.6.1

_BINARY = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_IQN_RE = re.compile(
    rf"^iqn\.(\d{{4}})-(\d{{2}})\.{_LABEL}(?:\.{_LABEL})*(?::[a-z0-9.:\-]+)?$"
)
_EUI_RE = re.compile(r"^eui\.[0-9a-f]{16}$", re.IGNORECASE)
_NAA_RE = re.compile(r"^naa\.(?:[0-9a-f]{16}|[0-9a-f]{32})$", re.IGNORECASE)
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$", re.IGNORECASE)
_GLOB_CHARS = frozenset("*?[")


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string with a unit.

    ``K/M/G/T/P`` alone or with ``iB`` are powers of 1024; with a bare ``B``
    (``KB``, ``MB``...) they are powers of 1000, as disk vendors count.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"size must be positive, got {value}")
        return value
    match = _SIZE_RE.match(value)
    if match is None:
        raise ValueError(
            f'expected bytes or a number with a K/M/G/T/P(i)B suffix, got "{value}"'
        )
    digits, prefix, suffix = match.groups()
    prefix = prefix.lower()
    suffix = suffix.lower()
    if suffix == "b" and prefix:
        factor = _DECIMAL[prefix]
    elif suffix == "i":
        raise ValueError(f'incomplete unit in "{value}" (write "{digits}{prefix.upper()}iB")')
    elif suffix == "ib" and not prefix:
        raise ValueError(f'no unit prefix before "iB" in "{value}"')
    else:
        factor = _BINARY[prefix]
    size = int(digits) * factor
    if size <= 0:
        raise ValueError(f"size must be positive, got {value!r}")
    return size


def format_size(size: int) -> str | int:
    """The most readable exact spelling of ``size`` that parse_size reads back."""
    for unit, factor in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20),
                         ("KiB", 2**10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return size


def check_iscsi_name(name: str) -> str:
    """Validate an iSCSI name (iqn./eui./naa. forms) and return it unchanged."""
    if len(name.encode()) > MAX_ISCSI_NAME_BYTES:
        raise ValueError(f"iSCSI name longer than {MAX_ISCSI_NAME_BYTES} bytes")
    lowered = name[:4].lower()
    if lowered == "iqn.":
        match = _IQN_RE.match(name)
        if match is None:
            raise ValueError(
                f'"{name}" is not a valid iqn name (iqn.YYYY-MM.reversed.domain[:unique],'
                " lower case letters, digits, '.', '-', ':')"
            )
        month = int(match.group(2))
        if not 1 <= month <= 12:
            raise ValueError(f'"{name}": month {month:02d} in the iqn date is not 01..12')
        return name
    if lowered == "eui.":
        if _EUI_RE.match(name) is None:
            raise ValueError(f'"{name}" is not a valid eui name (eui. + 16 hex digits)')
        return name
    if lowered == "naa.":
        if _NAA_RE.match(name) is None:
            raise ValueError(f'"{name}" is not a valid naa name (naa. + 16 or 32 hex digits)')
        return name
    raise ValueError(f'"{name}" is not an iSCSI name (must start with iqn., eui. or naa.)')


def is_glob(pattern: str) -> bool:
    """Whether an initiator pattern uses fnmatch wildcards."""
    return any(c in _GLOB_CHARS for c in pattern)


def check_initiator_pattern(pattern: str) -> str:
    """An exact iSCSI name, or an fnmatch glob such as ``iqn.1994-05.com.redhat:*``."""
    if not pattern.strip():
        raise ValueError("empty initiator pattern")
    if any(c.isspace() for c in pattern):
        raise ValueError(f'initiator pattern "{pattern}" contains white space')
    if is_glob(pattern):
        return pattern
    return check_iscsi_name(pattern)


@attrs.frozen
class Portal:
    """A listening address; ``host`` is an IP literal (v6 without brackets) or a name."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host


def parse_portal(text: str) -> Portal:
    """Parse ``host[:port]`` / ``[v6][:port]``; the port defaults to 3260."""
    text = text.strip()
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f'"{text}": missing "]" after IPv6 address')
        host, rest = text[1:close], text[close + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f'"{text}": "{host}" is not an IPv6 address') from None
        if rest and not rest.startswith(":"):
            raise ValueError(f'"{text}": expected ":port" after "]"')
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            raise ValueError(f'"{text}": write IPv6 portals as "[address]:port"')
        host, sep, port_text_raw = text.partition(":")
        port_text = port_text_raw if sep else None
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if _HOSTNAME_RE.match(host) is None or host.replace(".", "").isdigit():
                raise ValueError(f'"{text}": "{host}" is neither an IP address nor a host name'
                                 ) from None
    if port_text is None:
        port = DEFAULT_ISCSI_PORT
    else:
        if not port_text.isdigit():
            raise ValueError(f'"{text}": port "{port_text}" is not a number')
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ValueError(f'"{text}": port {port} outside 1..65535')
    return Portal(host=host, port=port)
