"""Training-server endpoints: where and how to reach a configured server over SSH.

A server in config.yaml names an Airflow SSH connection (``ssh_conn_id``) or gives
host/port/username/key_path. Both resolve to one :class:`Endpoint` that the transfer engine
and the stage operators use. Host keys are verified against ``known_hosts`` unless the
config explicitly turns that off (logged as a warning by the caller).

Airflow is imported only to resolve an ``ssh_conn_id``, so the engines stay Airflow-free.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import tempfile
from dataclasses import dataclass, replace
from typing import Any

from fuxictr_workflow.config import ServerConfig, WorkflowConfig

HOST_KEY_WARNING = (
    "host key checking is OFF for {host}:{port} (strict_host_key_checking: false in config); "
    "the connection is open to man-in-the-middle attacks"
)


@dataclass(frozen=True)
class Endpoint:
    name: str
    host: str
    port: int
    username: str
    key_path: str | None
    known_hosts: str | None
    strict_host_key_checking: bool
    remote_root: str
    python: str

    @property
    def address(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    def known_hosts_file(self) -> str:
        return self.known_hosts or os.path.expanduser("~/.ssh/known_hosts")

    def openssh_options(self) -> list[str]:
        """Options for OpenSSH's ssh/scp binaries matching this endpoint (batch mode, no prompts)."""
        opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=10"]
        if self.key_path:
            opts += ["-i", self.key_path, "-o", "IdentitiesOnly=yes"]
        if self.strict_host_key_checking:
            opts += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts_file()}"]
        else:
            opts += [
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ]
        return opts

    def paramiko_client(self, timeout: float = 10.0) -> Any:
        """A connected paramiko SSHClient with host key verification per config."""
        import paramiko

        client = paramiko.SSHClient()
        if self.strict_host_key_checking:
            known = self.known_hosts_file()
            if os.path.exists(known):
                client.load_host_keys(known)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(
            self.host,
            port=self.port,
            username=self.username,
            key_filename=self.key_path,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=self.key_path is None,
        )
        return client


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
        _stdin, stdout, _stderr = client.exec_command("id -u")
        uid = int(stdout.read().decode().strip())
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


def _from_airflow_connection(conn_id: str) -> dict[str, Any]:
    from airflow.sdk import BaseHook  # only here: resolving a connection needs Airflow

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    known_hosts = extra.get("known_hosts_file")
    if extra.get("host_key") and not known_hosts:
        # The SSH provider's `host_key` extra: pin that key for this host.
        fd, known_hosts = tempfile.mkstemp(prefix="fuxictr_known_hosts_")
        host = conn.host if not conn.port or conn.port == 22 else f"[{conn.host}]:{conn.port}"
        with os.fdopen(fd, "w") as f:
            f.write(f"{host} {extra['host_key']}\n")
    no_check = str(extra.get("no_host_key_check", "false")).lower() == "true"
    return {
        "host": conn.host,
        "port": conn.port or 22,
        "username": conn.login,
        "key_path": extra.get("key_file"),
        "known_hosts": known_hosts,
        "strict": not no_check,
    }


def endpoint(cfg: WorkflowConfig, name: str | None = None) -> Endpoint:
    """Resolve a configured server (default: config's default_server) to an Endpoint."""
    server_name = name or cfg.default_server
    assert server_name is not None
    server: ServerConfig = cfg.server(server_name)
    if server.ssh_conn_id:
        found = _from_airflow_connection(server.ssh_conn_id)
        host, port, username = found["host"], found["port"], found["username"]
        key_path, known_hosts = found["key_path"], found["known_hosts"]
        strict = found["strict"] and server.strict_host_key_checking
    else:
        assert server.host and server.username
        host, port, username = server.host, server.port, server.username
        key_path, known_hosts, strict = server.key_path, server.known_hosts, server.strict_host_key_checking
    return Endpoint(
        name=server_name,
        host=host,
        port=int(port),
        username=username,
        key_path=key_path,
        known_hosts=known_hosts,
        strict_host_key_checking=strict,
        remote_root=server.remote_root,
        python=server.python,
    )
