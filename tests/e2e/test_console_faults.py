"""The console's ``/faults`` directory against the real daemon.

Fault rules are a directory like devices and targets: ``ls``/``cd``/``tree``,
Tab completion of rule ids, ``[[faults]]`` keys and their values, ``create``
and ``delete`` through the fault ops, ``set enabled=`` to arm and disarm, and
``stats``. An initiator sees the rule created in the console fire.
"""

from __future__ import annotations

from pathlib import Path

import trio
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from pyscst.admin.config.files import load_config
from pyscst.admin.client.console.backend import ClientBackend
from pyscst.admin.client.console.complete import ConsoleCompleter
from pyscst.admin.client.console.shell import Outcome, Shell
from pyscst.transports.iscsi.initiator import Initiator
from tests.cdbs import read10, sense_triplet
from tests.daemon import running_daemon_async


def text_of(outcome: Outcome) -> str:
    return "".join(text for _style, text in outcome.output)


def complete(shell: Shell, text: str) -> list[str]:
    """What Tab offers after ``text``, each as the whole word it would produce."""
    word = "" if not text or text[-1] == " " else text.split()[-1]
    completions = ConsoleCompleter(shell).get_completions(
        Document(text, len(text)), CompleteEvent(True)
    )
    return [word[: len(word) + c.start_position] + c.text for c in completions]


async def test_fault_rules_are_a_directory(tmp_path: Path) -> None:
    async with running_daemon_async(tmp_path) as d:
        backend = ClientBackend(load_config(d.config_path).control_socket)
        shell = Shell(backend)

        async def run(line: str, ok: bool = True) -> str:
            outcome = await trio.to_thread.run_sync(shell.run_line, line)
            assert outcome.ok is ok, (line, text_of(outcome))
            return text_of(outcome)

        def tab(text: str) -> list[str]:
            shell.tree()  # the completer reads the cached tree, as after a command
            return complete(shell, text)

        try:
            assert "faults/" in await run("ls /")
            assert "/faults is empty (add one with create)" in await run("ls /faults")
            assert tab("cd /fa") == ["/faults/"]
            await run("cd /faults")
            assert tab("create flaky act") == ["action="]
            assert tab("create flaky action=check_c") == ["action=check_condition"]
            assert "op_class=" in tab("create flaky op")
            assert tab("create flaky device=di") == ["device=disk0"]
            out = await run("create flaky action=check_condition op_class=read lba=100-199 seed=7")
            assert "created fault rule /faults/flaky" in out
            # an unnamed rule gets its name from the daemon
            out = await run("create action=delay delay=0.001 op_class=write")
            unnamed = out.strip().rsplit("/", 1)[-1]
            assert unnamed and unnamed != "None"
            listing = await run("ls")
            assert "flaky" in listing and "check_condition" in listing and unnamed in listing
            assert tab("set fl") == ["flaky"]
            assert tab("set flaky en") == ["enabled="]
            info = await run("info flaky")
            assert "op_class" in info and "read" in info and "100" in info
            assert "flaky  check_condition on, 0 injections" in await run("tree /faults")

            async with await Initiator.connect(d.host, d.port, target_name=d.target) as ini:
                await ini.execute(0, bytes(6))  # the power-on UA
                r = await ini.execute(0, read10(150, 1), read_length=512)
                assert sense_triplet(r.sense) == (0x3, 0x11, 0x00)
                assert "injections 1" in await run("stats flaky")
                await run("set flaky enabled=false")
                assert "flaky  check_condition off" in await run("tree /faults")
                assert (await ini.execute(0, read10(150, 1), read_length=512)).status == 0
                await run("set flaky enabled=true")
                r = await ini.execute(0, read10(150, 1), read_length=512)
                assert sense_triplet(r.sense) == (0x3, 0x11, 0x00)
                await run("delete /faults/flaky")
                assert (await ini.execute(0, read10(150, 1), read_length=512)).status == 0
            assert "flaky" not in await run("ls /faults")
            await run(f"rm {unnamed}")
            assert "/faults is empty" in await run("ls")

            # hostile: each refusal names what is wrong, and nothing is created
            assert "needs action=" in await run("create bad op_class=read", ok=False)
            assert 'unknown attribute "colour"' in await run(
                "create bad action=hang colour=red", ok=False
            )
            assert "op_class" in await run("create bad action=hang op_class=sideways", ok=False)
            assert "delay" in await run("create bad action=check_condition delay=1", ok=False)
            await run("create dup action=hang")
            assert "dup" in await run("create dup action=hang", ok=False)
            assert 'no fault rule "nope" in /faults' in await run("delete nope", ok=False)
            assert "enabled" in await run("set dup enabled=maybe", ok=False)
            assert "settable" in await run("set /faults enabled=true", ok=False)
            listing = await run("ls /faults")
            assert "bad" not in listing and "dup" in listing
        finally:
            backend.close()
