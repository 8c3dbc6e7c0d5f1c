"""Run a short command over a connected paramiko client (what the trigger needs of SSH)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COMMAND_TIMEOUT_S = 60.0


def run_command(client: Any) -> Callable[[str], str]:
    def run(command: str) -> str:
        _stdin, stdout, stderr = client.exec_command(command, timeout=COMMAND_TIMEOUT_S)
        out = stdout.read().decode("utf-8", "replace")
        status = stdout.channel.recv_exit_status()
        if status != 0:
            raise RuntimeError(f"exit {status}: {stderr.read().decode('utf-8', 'replace').strip()[-500:]}")
        return out

    return run
