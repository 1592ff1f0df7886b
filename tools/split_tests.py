"""One-off: sort tests/test_*.py into tests/unit/<layer>/, tests/e2e/ and tests/conformance/.

unit: one layer's code in-process, no daemon, no external tool (the layer is the
package the test exercises). e2e: a real daemon (tests/daemon.py), the pyscst
command in a subprocess, or a built wheel. conformance: against an independent
implementation (libiscsi's test suite, qemu-img, tgtd). Rewrites ``tests.test_x``
module names and ``tests/test_x.py`` paths in every tracked text file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

UNIT = {
    "scsi": ["cdb"],
    "devices": ["disk_info", "disk_io", "disk_mode", "disk_write_ext", "stores"],
    "actors": [
        "crash_containment", "faults_engine", "faults_lu", "lu_stats", "pr_engine", "pr_lu",
        "pr_store", "reservations_conflicts", "supervisor", "task_set", "unit_attention",
    ],
    "transports": ["busy_poll", "chap", "cmdsn", "digest", "login", "login_chap", "pdu"],
    "admin": [
        "config", "config_auth", "console_auth", "console_commands", "console_completion",
        "console_session", "faults_docs",
    ],
    "supervision": ["malloc_tuning"],
}
E2E = [
    "admin_auth", "admin_cli", "admin_control", "backing_file_e2e", "chap_e2e", "cli",
    "confine", "console_daemon", "console_faults", "console_tmux", "containment_e2e",
    "control_peercred", "crash_e2e", "datapath", "disk_write_ext_e2e", "faults_cli",
    "faults_e2e", "faults_match_e2e", "fuzz_campaign", "grafana_dashboard", "host_systemd",
    "hostile_input", "hostile_regressions", "immediate_e2e", "malloc_tuning_unused",
    "masking", "metrics", "nop_ping", "prelogin_limits", "reservations_e2e",
    "task_attributes_e2e", "tmf", "wheel",
]
CONFORMANCE = {"conformance_libiscsi": "libiscsi", "qemu_img": "qemu_img",
               "initiator_tgt": "initiator_tgt"}


def moves() -> dict[str, str]:
    """old module name (tests.test_x) -> new one."""
    out = {}
    for layer, names in UNIT.items():
        for n in names:
            out[f"test_{n}"] = f"unit.{layer}.test_{n}"
    for n in E2E:
        if n.endswith("_unused"):
            continue
        # the directory says end-to-end: the suffix goes
        out[f"test_{n}"] = f"e2e.test_{n.removesuffix('_e2e')}"
    for n, new in CONFORMANCE.items():
        out[f"test_{n}"] = f"conformance.test_{new}"
    return out


def git(*args: str) -> str:
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout


def main() -> int:
    table = moves()
    missing = [o for o in table if not Path(f"tests/{o}.py").exists()]
    left = sorted(p.stem for p in Path("tests").glob("test_*.py") if p.stem not in table)
    if missing or left:
        print(f"missing: {missing}; unsorted: {left}", file=sys.stderr)
        return 1
    for new in table.values():
        d = Path("tests", *new.split(".")[:-1])
        d.mkdir(parents=True, exist_ok=True)
        for parent in [d, *d.parents]:
            if parent == Path("tests") or parent == Path("."):
                break
            init = parent / "__init__.py"
            if not init.exists():
                init.write_text("")
                git("add", str(init))
    for old, new in table.items():
        git("mv", f"tests/{old}.py", "tests/" + new.replace(".", "/") + ".py")
    alt = "|".join(sorted(table, key=len, reverse=True))
    dotted = re.compile(rf"\btests\.({alt})\b")
    path = re.compile(rf"\btests/({alt})\.py\b")
    changed = 0
    for name in git("ls-files").splitlines():
        p = Path(name)
        if p.suffix not in {".py", ".md", ".toml", ".txt", ".cfg"} and p.name != "Makefile":
            continue
        if not p.is_file() or p.parent.name == "tools":
            continue
        text = p.read_text()
        new = dotted.sub(lambda m: "tests." + table[m.group(1)], text)
        new = path.sub(lambda m: "tests/" + table[m.group(1)].replace(".", "/") + ".py", new)
        if new != text:
            p.write_text(new)
            changed += 1
    print(f"moved {len(table)} test modules, rewrote {changed} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
