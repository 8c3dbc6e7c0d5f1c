"""Training-server endpoints: where and how to reach a configured server over SSH.

A server in config.yaml names an Airflow SSH connection (``ssh_conn_id``) or gives
host/port/username/key_path; both resolve through the SSH provider's SSHHook
(ssh_access.py) to one :class:`Endpoint` that the transfer engine and the stage operators use.
Host keys are verified unless the connection or config explicitly turns that off (logged as
a warning by the caller).
"""

from __future__ import annotations

import contextlib
import posixpath
import stat
from dataclasses import dataclass, field, replace
from typing import Any

from fuxictr_workflow.domain.config import ServerConfig, WorkflowConfig
from fuxictr_workflow.ssh.commands import run_command
from fuxictr_workflow.ssh.ssh_access import SSHAccess, SSHAccessError, connection_from_config

HOST_KEY_WARNING = (
    "host key checking is OFF for {host}:{port} (no_host_key_check in its connection, or "
    "strict_host_key_checking: false in config); the connection is open to man-in-the-middle attacks"
)

__all__ = ["HOST_KEY_WARNING", "Endpoint", "RemoteRootError", "SSHAccessError", "endpoint"]


@dataclass(frozen=True)
class Endpoint:
    name: str
    ssh: SSHAccess = field(compare=False, repr=False)
    remote_root: str
    python: str

    @property
    def host(self) -> str:
        return self.ssh.host

    @property
    def port(self) -> int:
        return self.ssh.port

    @property
    def username(self) -> str:
        return self.ssh.username

    @property
    def strict_host_key_checking(self) -> bool:
        return self.ssh.strict_host_key_checking

    @property
    def address(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    def openssh_options(self) -> list[str]:
        """Options for OpenSSH's ssh matching this endpoint's connection (batch mode, no prompts)."""
        return self.ssh.openssh_options()

    def paramiko_client(self) -> Any:
        """A connected paramiko SSHClient of its own, made by SSHHook."""
        return self.ssh.connect()


class RemoteRootError(RuntimeError):
    """The server's remote_root cannot be used safely; the message says why and what to do."""


def prepare_remote_root(ep: Endpoint, client: Any) -> Endpoint:
    """The endpoint with its remote_root made absolute (relative = under the SSH user's home),
    created 0700 when missing, and refused when it is a symlink, not owned by the SSH user or
    writable by group/others: a directory someone else controls (say a pre-created
    /tmp/fuxictr_workflow) could hand the stages planted runners, data or symlinks.

    `client` is a connected paramiko SSHClient for `ep`."""
    sftp = client.open_sftp()
    try:
        home = sftp.normalize(".")
        root = posixpath.normpath(posixpath.join(home, ep.remote_root))
        uid = int(run_command(client)("id -u").strip())
        try:
            st = sftp.lstat(root)
        except FileNotFoundError:
            parent = posixpath.dirname(root)
            for i, _ in enumerate(parts := parent.strip("/").split("/")):
                sub = "/" + "/".join(parts[: i + 1])
                try:
                    sftp.stat(sub)
                except FileNotFoundError:
                    sftp.mkdir(sub)
            with contextlib.suppress(OSError):  # created meanwhile (a concurrent task): checked below
                sftp.mkdir(root, 0o700)
            st = sftp.lstat(root)
            if st.st_uid == uid and stat.S_ISDIR(st.st_mode or 0):
                sftp.chmod(root, 0o700)  # mkdir's mode passes through the server's umask
                st = sftp.lstat(root)
    finally:
        sftp.close()
    mode = st.st_mode or 0
    where = f"remote_root {root} on {ep.address}"
    if stat.S_ISLNK(mode):
        raise RemoteRootError(f"{where} is a symlink; point remote_root at the real directory")
    if not stat.S_ISDIR(mode):
        raise RemoteRootError(f"{where} is not a directory")
    if st.st_uid != uid:
        raise RemoteRootError(f"{where} belongs to uid {st.st_uid}, not to {ep.username} (uid {uid})")
    if mode & 0o022:
        raise RemoteRootError(
            f"{where} is writable by group or others (mode {stat.S_IMODE(mode):o}); chmod 700 it"
        )
    return replace(ep, remote_root=root)


def with_prepared_root(ep: Endpoint) -> Endpoint:
    """:func:`prepare_remote_root` over a connection of its own."""
    client = ep.paramiko_client()
    try:
        return prepare_remote_root(ep, client)
    finally:
        client.close()


def endpoint(cfg: WorkflowConfig, name: str | None = None) -> Endpoint:
    """Resolve a configured server (default: config's default_server) to an Endpoint.

    Raises SSHAccessError naming the server when its connection cannot be used."""
    server_name = name or cfg.default_server
    assert server_name is not None
    server: ServerConfig = cfg.server(server_name)
    if server.ssh_conn_id:
        from airflow.sdk import BaseHook  # only here: resolving a connection needs Airflow

        try:
            connection = BaseHook.get_connection(server.ssh_conn_id)
        except Exception as err:
            raise SSHAccessError(f"server {server_name}: connection {server.ssh_conn_id!r}: {err}") from None
        # config can only turn checking off, never back on over what the connection says
        access = SSHAccess(
            server_name, connection, no_host_key_check=True if not server.strict_host_key_checking else None
        )
    else:
        access = SSHAccess(server_name, connection_from_config(server_name, server))
    return Endpoint(name=server_name, ssh=access, remote_root=server.remote_root, python=server.python)
