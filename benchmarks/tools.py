"""The external programs the benchmark drives, and the facts of the machine.

Results mean nothing without knowing what produced them, so the tool versions
and host facts travel with every JSON result; missing Debian tools are
installed when we are root, otherwise we stop with the apt-get line to run.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
import sys

# program -> Debian package that provides it
REQUIRED_PROGRAMS = {
    "tgtd": "tgt",
    "tgtadm": "tgt",
    "iscsi-perf": "libiscsi-bin",
    "iscsi-readcapacity16": "libiscsi-bin",
    "qemu-img": "qemu-utils",
    "taskset": "util-linux",
}
# qemu-img reaches iscsi:// URLs through a loadable block module.
QEMU_ISCSI_MODULE_GLOBS = ("/usr/lib/*/qemu/block-iscsi.so", "/usr/lib/qemu/block-iscsi.so")
QEMU_ISCSI_PACKAGE = "qemu-block-extra"


class ToolError(RuntimeError):
    """A required tool is missing and cannot be installed here."""


def missing_packages() -> list[str]:
    """Debian packages whose programs (or qemu's iscsi module) are absent."""
    wanted = {pkg for prog, pkg in REQUIRED_PROGRAMS.items() if shutil.which(prog) is None}
    if not any(glob.glob(g) for g in QEMU_ISCSI_MODULE_GLOBS):
        wanted.add(QEMU_ISCSI_PACKAGE)
    return sorted(wanted)


def ensure_tools(install: bool = True) -> None:
    """Make sure every tool exists, apt-installing them when root and allowed."""
    packages = missing_packages()
    if not packages:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ToolError(
            "missing benchmark tools; install them with: sudo " + " ".join(command)
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("installing:", " ".join(packages), flush=True)
    subprocess.run(["apt-get", "update"], check=False, env=env, timeout=300)
    subprocess.run(command, check=True, env=env, timeout=600)
    still = missing_packages()
    if still:
        raise ToolError(f"still missing after apt-get install: {', '.join(still)}")


def _first_line(command: list[str]) -> str:
    try:
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _package_version(package: str) -> str:
    return _first_line(["dpkg-query", "-W", "-f=${Version}", package])


def machine_facts() -> dict[str, object]:
    """What the numbers were measured on."""
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "tgt": _first_line(["tgtd", "-V"]),
        "libiscsi": _package_version("libiscsi-bin"),
        "qemu_img": _first_line(["qemu-img", "--version"]),
    }
