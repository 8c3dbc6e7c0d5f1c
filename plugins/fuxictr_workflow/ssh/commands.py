"""Short commands on a training server over a connected paramiko client: the one way the
package runs them outside the SSH provider's operators (job control, the runner bundle's
replacement, retention's deletes, the SSH user's uid). A nonzero exit raises with the
command's stderr; no command waits longer than COMMAND_TIMEOUT_S for output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COMMAND_TIMEOUT_S = 60.0


class RemoteCommandError(RuntimeError):
    """The command exited nonzero; the message has its exit status and stderr's tail."""


def run_command(client: Any) -> Callable[[str], str]:
    """`run(command)` → its stdout, on `client` (a connected paramiko SSHClient)."""

    def run(command: str) -> str:
        _stdin, stdout, stderr = client.exec_command(command, timeout=COMMAND_TIMEOUT_S)
        out = stdout.read().decode("utf-8", "replace")
        status = stdout.channel.recv_exit_status()
        if status != 0:
            tail = stderr.read().decode("utf-8", "replace").strip()[-500:]
            raise RemoteCommandError(f"exit {status}: {tail}")
        return out

    return run
