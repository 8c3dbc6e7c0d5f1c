"""A private OpenSSH sshd on 127.0.0.1 standing in for the training server.

Own host key, own user key, key-only auth, strict host keys on the client side (a
known_hosts file is written for it). Used by the tests (fixture), the benchmarks and
`make demo`:

    python scripts/sshd.py start --dir DIR [--port N]   # prints the env/JSON facts
    python scripts/sshd.py stop --dir DIR
    python scripts/sshd.py status --dir DIR
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if not __package__:  # run as a script: make `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts import processes, service_cli  # noqa: E402

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/bin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(5)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def find_sshd() -> str:
    for path in (*SSHD_CANDIDATES, shutil.which("sshd") or ""):
        if path and os.access(path, os.X_OK):
            return path
    raise RuntimeError("OpenSSH sshd not found: install the openssh-server package (make deps does)")


@dataclass
class SshdInfo:
    host: str
    port: int
    username: str
    key_path: str
    known_hosts: str
    pid: int
    dir: str
    # the pid's start time: with it a zombie or a reused pid is never taken for our sshd
    start_ticks: int = 0

    @property
    def process(self) -> processes.ProcessRef:
        return processes.ProcessRef(self.pid, self.start_ticks)

    def host_key(self, kind: str = "ed25519") -> str:
        """The server's host key of that kind ("ed25519" or "rsa") as ``<type> <base64>``,
        the form the SSH provider's ``host_key`` extra takes."""
        return " ".join((Path(self.dir) / f"host_{kind}.pub").read_text().split()[:2])

    def connection_extra(self) -> dict[str, str]:
        """The extras of an Airflow SSH connection to this server, as the provider documents them."""
        return {"key_file": self.key_path, "host_key": self.host_key()}

    def conn_uri(self) -> str:
        """An Airflow connection URI (AIRFLOW_CONN_*) for this server."""
        from urllib.parse import urlencode

        return f"ssh://{self.username}@{self.host}:{self.port}?{urlencode(self.connection_extra())}"


class LocalSshd:
    """Start/stop one sshd whose files all live under `directory`."""

    def __init__(self, directory: str | os.PathLike[str], port: int | None = None) -> None:
        self.dir = Path(directory).resolve()
        self.port = port
        self.info_file = self.dir / "sshd.json"

    def _keys(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        # an RSA host key beside the ed25519 one: clients that pin either kind can connect
        for name, kind in (("host_ed25519", "ed25519"), ("host_rsa", "rsa"), ("client_ed25519", "ed25519")):
            key = self.dir / name
            if not key.exists():
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(key), "-C", name], check=True
                )
        shutil.copy(self.dir / "client_ed25519.pub", self.dir / "authorized_keys")
        os.chmod(self.dir / "authorized_keys", 0o600)

    def _config(self, port: int) -> Path:
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress 127.0.0.1:{port}",
                    f"HostKey {self.dir / 'host_ed25519'}",
                    f"HostKey {self.dir / 'host_rsa'}",
                    f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "MaxStartups 100:30:200",
                    # a connection that never authenticates (a port probe, a cut client) is dropped
                    # after 20 s instead of 2 minutes
                    "LoginGraceTime 20",
                    # the stand-in server shares 2 CPUs with Airflow and Hive: torch's OpenMP
                    # threads would spin waiting for each other (a training cost 30-70% more CPU)
                    "SetEnv OMP_NUM_THREADS=1",
                    "MaxSessions 100",
                    "Subsystem sftp internal-sftp",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        return config

    def read_info(self) -> SshdInfo | None:
        if not self.info_file.exists():
            return None
        return SshdInfo(**json.loads(self.info_file.read_text()))

    def running(self) -> SshdInfo | None:
        info = self.read_info()
        return info if info is not None and info.process.running() else None

    def serving(self) -> bool:
        """Running and answering with an SSH banner."""
        info = self.running()
        return info is not None and _ssh_banner(info.port)

    def start(self, timeout: float = 15.0) -> SshdInfo:
        current = self.running()
        if current is not None:
            return current
        self.stop()  # a listener that exited may leave its group or a zombie behind
        self._keys()
        port = self.port or (self.read_info().port if self.read_info() else None) or free_port()
        config = self._config(port)
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 - handed to the daemon
        # -D: stay in the foreground so we own the process; -e: log to stderr (our log file).
        proc = subprocess.Popen(
            [find_sshd(), "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        process = processes.ProcessRef.of(proc.pid)
        deadline = time.monotonic() + timeout
        while not _ssh_banner(port):
            if proc.poll() is not None:
                tail = (self.dir / "sshd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"sshd exited with {proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                process.stop()
                raise RuntimeError(f"sshd did not accept connections on 127.0.0.1:{port} within {timeout}s")
            time.sleep(0.1)
        host_pub = (self.dir / "host_ed25519.pub").read_text().split()
        known_hosts = self.dir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        info = SshdInfo(
            host="127.0.0.1",
            port=port,
            username=getpass.getuser(),
            key_path=str(self.dir / "client_ed25519"),
            known_hosts=str(known_hosts),
            pid=proc.pid,
            dir=str(self.dir),
            start_ticks=process.start_ticks,
        )
        self.info_file.write_text(json.dumps(asdict(info)))
        return info

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the listener and every session it forked (its process group)."""
        info = self.read_info()
        if info is None:
            return
        self.kill_sessions()  # sessions run in their own sessions (setsid), not our group
        info.process.stop(timeout=timeout)

    def sessions(self) -> list[int]:
        """The per-connection sshd children of the listener: one per live SSH connection."""
        info = self.running()
        if info is None:
            return []
        out = subprocess.run(["pgrep", "-P", str(info.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def kill_sessions(self) -> int:
        """Kill every live SSH connection's sshd processes (cut the sessions), keep the listener.
        Each connection's sshd leads a session of its own: its whole group goes, privilege-
        separated children ("sshd: [net]") included, which would otherwise wait for their
        client until LoginGraceTime."""
        pids = self.sessions()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)


def main(argv: list[str] | None = None) -> int:
    return service_cli.run(
        argv,
        __doc__,
        LocalSshd,
        dir_help="directory for keys, config, pid and log",
        port_help="port on 127.0.0.1 (default: a free one, kept across restarts)",
    )


if __name__ == "__main__":
    sys.exit(main())
