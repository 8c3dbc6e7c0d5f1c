"""How to reach a training server over SSH: the SSH provider's SSHHook, resolved from an
Airflow connection, and the same settings as options for OpenSSH's ssh.

A server in config.yaml either names a connection (``ssh_conn_id``) or gives host, port,
username, key_path and known_hosts. The second form becomes an Airflow Connection built here
(:func:`connection_from_config`), so both forms go through SSHHook and one set of rules: the
extras key_file, private_key, host_key (with or without its key type), no_host_key_check,
allow_host_key_change, conn_timeout, ciphers, disabled_algorithms, compress and look_for_keys
mean what the provider documents. The transfer engine's OpenSSH transport gets its options
from the same resolved hook (:meth:`SSHAccess.openssh_options`).

Airflow is imported inside the functions only: the engines that receive an SSHAccess stay
free of Airflow imports.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paramiko

    from fuxictr_workflow.domain.config import ServerConfig

# OpenSSH option for each of paramiko's disabled_algorithms keys
_DISABLED_OPTION = {
    "ciphers": "Ciphers",
    "macs": "MACs",
    "kex": "KexAlgorithms",
    "keys": "HostKeyAlgorithms",
    "pubkeys": "PubkeyAcceptedAlgorithms",
}
# which host key to pin when a known_hosts file holds several for the server
_KEY_PREFERENCE = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
DEFAULT_CONN_TIMEOUT_S = 10


class SSHAccessError(ValueError):
    """A server's SSH settings cannot be used; the message names the server and the reason."""


# What ssh and paramiko say when the server was reached but not trusted, or did not accept us
_REFUSALS = (
    "host key verification failed",
    "remote host identification has changed",
    "not found in known_hosts",
    "host key for server",
    "permission denied (",
    "authentication failed",
)


def is_refusal(message: str) -> bool:
    """The server was reached but the host key is not trusted or authentication failed:
    unlike a refused or dropped connection, trying again cannot help."""
    text = message.lower()
    return any(marker in text for marker in _REFUSALS)


def config_conn_id(server_name: str) -> str:
    return f"fuxictr_workflow_server_{server_name}"


def connection_from_config(server_name: str, server: ServerConfig) -> Any:
    """The Airflow Connection that config's host/port/username/key_path/known_hosts describe."""
    from airflow.sdk import Connection

    assert server.host and server.username
    extra: dict[str, Any] = {"conn_timeout": DEFAULT_CONN_TIMEOUT_S, "compress": False}
    if server.key_path:
        extra["key_file"] = server.key_path
        extra["look_for_keys"] = False
    if not server.strict_host_key_checking:
        extra["no_host_key_check"] = True
    else:
        host_key = pinned_host_key(server.host, server.port, server.known_hosts)
        if host_key is None and server.known_hosts:
            raise SSHAccessError(
                f"servers.{server_name}.known_hosts: {server.known_hosts} has no host key for "
                f"{_known_hosts_name(server.host, server.port)}; add it (ssh-keyscan) or fix host/port"
            )
        if host_key is not None:
            extra["host_key"] = host_key
    return Connection(
        conn_id=config_conn_id(server_name),
        conn_type="ssh",
        host=server.host,
        port=server.port,
        login=server.username,
        extra=json.dumps(extra),
    )


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def pinned_host_key(host: str, port: int, known_hosts: str | None) -> str | None:
    """``"<type> <base64>"`` of the server's key in a known_hosts file (hashed entries too),
    or None when the file has none. Without a file: None (SSHHook then reads
    ~/.ssh/known_hosts itself, as OpenSSH does)."""
    import paramiko

    if not known_hosts:
        return None
    keys = paramiko.HostKeys(os.path.expanduser(known_hosts)).lookup(_known_hosts_name(host, port))
    if not keys:
        return None
    kind = min(keys.keys(), key=lambda k: _KEY_PREFERENCE.index(k) if k in _KEY_PREFERENCE else 99)
    return f"{kind} {keys[kind].get_base64()}"


def _hook_class() -> type:
    from airflow.providers.ssh.hooks.ssh import SSHHook

    class ConnectionSSHHook(SSHHook):
        """SSHHook over a Connection object handed to it rather than looked up by id."""

        def __init__(self, connection: Any, **kwargs: Any) -> None:
            self.given_connection = connection
            super().__init__(ssh_conn_id=connection.conn_id, **kwargs)
            if self.ciphers:
                # SSHHook sets `ciphers` on the transport after the handshake, where it only
                # governs a later re-key; disabling every other cipher makes the handshake
                # itself keep to the list (in paramiko's order of preference)
                import paramiko

                others = [c for c in paramiko.Transport._preferred_ciphers if c not in self.ciphers]
                disabled = dict(self.disabled_algorithms or {})
                disabled["ciphers"] = sorted({*disabled.get("ciphers", []), *others})
                self.disabled_algorithms = disabled

        def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]
            return self.given_connection

    return ConnectionSSHHook


class _MemoryFiles:
    """What OpenSSH must read as a file (a key given inline, a pinned host key), kept in
    anonymous memory files (memfd) rather than on disk.

    ssh runs as a child of this process and opens ``/proc/<this pid>/fd/<n>`` (same user, so
    the kernel lets it). The memory goes when the last descriptor closes, which is also when
    this process is killed: a task process SIGKILLed mid-transfer leaves no key behind in /tmp,
    as the files this replaces did (their clean-up ran at a normal exit only). Files are
    per content, made once per process; a forked child inherits the descriptors and names
    them with its own pid."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        return hasattr(os, "memfd_create") and os.path.isdir(f"/proc/{os.getpid()}/fd")

    def path_for(self, kind: str, content: str) -> str:
        key = f"{kind}-{hashlib.sha256(content.encode()).hexdigest()[:20]}"
        with self._lock:
            fd = self._fds.get(key)
            if fd is not None and not _is_memfd(fd, kind):
                fd = None  # closed by someone (a daemonizing fork), its number maybe reused
            if fd is None:
                fd = os.memfd_create(f"fxw-{kind}", os.MFD_CLOEXEC)
                os.fchmod(fd, 0o600)  # ssh refuses a key file others could read
                os.write(fd, content.encode())
                self._fds[key] = fd
        return f"/proc/{os.getpid()}/fd/{fd}"


def _is_memfd(fd: int, kind: str) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith(f"/memfd:fxw-{kind}")
    except OSError:
        return False


_FILES = _MemoryFiles()


class SSHAccess:
    """One server's resolved SSH settings: paramiko clients made by SSHHook, and OpenSSH options.

    The hook is built (and the connection's extras checked) when this object is made, so a
    bad host_key, or host_key together with no_host_key_check, fails before anything runs."""

    def __init__(self, server_name: str, connection: Any, *, no_host_key_check: bool | None = None) -> None:
        self.server_name = server_name
        self.connection = connection
        self._no_host_key_check = no_host_key_check
        try:
            self.hook = self.new_hook()
        except Exception as err:
            raise SSHAccessError(
                f"server {server_name} (connection {connection.conn_id}): {type(err).__name__}: {err}"
            ) from None

    def new_hook(self) -> Any:
        # One attempt: the engines and Airflow retry a failed connection themselves.
        return _hook_class()(
            self.connection, no_host_key_check=self._no_host_key_check, conn_retry_attempts=1
        )

    @property
    def host(self) -> str:
        return str(self.hook.remote_host)

    @property
    def port(self) -> int:
        return int(self.hook.port)

    @property
    def username(self) -> str:
        return str(self.hook.username)

    @property
    def strict_host_key_checking(self) -> bool:
        return not (self.hook.no_host_key_check or self.hook.allow_host_key_change)

    def connect(self) -> paramiko.SSHClient:
        """A connected client of its own (SSHHook caches one client per hook, and the transfer
        engine wants independent connections)."""
        return self.new_hook().get_conn()

    def openssh_unusable(self) -> str | None:
        """Why OpenSSH's ssh (batch mode, no prompts) cannot use this connection, or None."""
        extra = self.connection.extra_dejson
        if self.hook.password and not (self.hook.key_file or self.hook.pkey):
            return "the connection authenticates with a password"
        if extra.get("private_key_passphrase"):
            return "the connection's private_key has a passphrase"
        if not _FILES.available() and (self.hook.pkey is not None and not self.hook.key_file):
            return "an inline private_key is never written to disk, and this system has no memfd"
        if not _FILES.available() and self.strict_host_key_checking and self.hook.host_key is not None:
            return "a pinned host_key needs memfd, which this system lacks"
        return None

    def openssh_options(self) -> list[str]:
        """ssh options for this connection: identity, host key check, timeout, algorithms."""
        hook = self.hook
        timeout = hook.conn_timeout or DEFAULT_CONN_TIMEOUT_S
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(timeout)}", "-o", "ServerAliveInterval=10"]
        if hook.key_file:
            opts += ["-i", os.path.expanduser(hook.key_file), "-o", "IdentitiesOnly=yes"]
        elif hook.pkey is not None:
            key = _FILES.path_for("key", self.connection.extra_dejson["private_key"].strip() + "\n")
            opts += ["-i", key, "-o", "IdentitiesOnly=yes"]
        if not self.strict_host_key_checking:
            opts += [
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
            ]
        else:
            opts += ["-o", "StrictHostKeyChecking=yes"]
            if hook.host_key is not None:
                line = f"{_known_hosts_name(self.host, self.port)} {hook.host_key.get_name()} {hook.host_key.get_base64()}\n"
                opts += ["-o", f"UserKnownHostsFile={_FILES.path_for('known_hosts', line)}"]
        disabled = hook.disabled_algorithms or {}
        if hook.ciphers:
            removed = set(disabled.get("ciphers", []))
            opts += ["-o", "Ciphers=" + ",".join(c for c in hook.ciphers if c not in removed)]
        for key, option in _DISABLED_OPTION.items():
            if disabled.get(key) and not (key == "ciphers" and hook.ciphers):
                opts += ["-o", f"{option}=-" + ",".join(disabled[key])]
        return opts
