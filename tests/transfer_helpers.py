"""Helpers for the transfer tests: endpoints on the test sshd, files, hashes, a log sink."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fuxictr_workflow.domain.config import TransferConfig
from fuxictr_workflow.ssh.servers import Endpoint
from fuxictr_workflow.ssh.ssh_access import SSHAccess
from scripts.sshd import SshdInfo, free_port

KIB = 1024
CHUNK = 64 * KIB


def make_endpoint(
    sshd: SshdInfo,
    remote_root: Path,
    *,
    port: int | None = None,
    strict: bool = True,
    host: str | None = None,
) -> Endpoint:
    """An endpoint over an Airflow SSH connection to the test sshd, configured as the SSH
    provider documents it (key_file, host_key; or no_host_key_check)."""
    from airflow.sdk import Connection

    extra: dict[str, object] = sshd.connection_extra() if strict else {"key_file": sshd.key_path}
    if not strict:
        extra["no_host_key_check"] = True
    conn = Connection(
        conn_id="test_sshd",
        conn_type="ssh",
        host=host or sshd.host,
        port=port or sshd.port,
        login=sshd.username,
        extra=json.dumps(extra),
    )
    return Endpoint(
        name="local", ssh=SSHAccess("local", conn), remote_root=str(remote_root), python=sys.executable
    )


def unreachable_endpoint(sshd: SshdInfo, remote_root: Path) -> Endpoint:
    """Nothing listens on this port: any connection attempt fails fast with 'refused'."""
    return make_endpoint(sshd, remote_root, port=free_port())


def transfer_config(**overrides: object) -> TransferConfig:
    values: dict[str, object] = {
        "chunk_size": CHUNK,
        "parallel_workers": 3,
        "max_retries": 3,
        "retry_backoff_s": 0.01,
        "progress_interval_s": 0.05,
    }
    values.update(overrides)
    return TransferConfig(**values)  # type: ignore[arg-type]


def write_random(path: Path, size: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = __import__("random").Random(seed + size)
    path.write_bytes(rng.randbytes(size))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def flip_byte(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]) if b else b"\xff")
        f.flush()
        os.fsync(f.fileno())


@dataclass
class ListLog:
    """Collects engine log lines (the operator passes a StageRun instead)."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def info(self, message: str) -> None:
        self.lines.append(("INFO", message))

    def warning(self, message: str) -> None:
        self.lines.append(("WARNING", message))

    def warnings(self) -> list[str]:
        return [m for level, m in self.lines if level == "WARNING"]
