"""A private Redis server on 127.0.0.1 (Debian's redis-server): the Celery stack's broker.

    python scripts/redis_server.py start --dir DIR [--port N]
    python scripts/redis_server.py stop --dir DIR

Nothing is persisted: a broker restart loses queued messages, which Airflow's scheduler
re-queues (docs/operations.md).
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

if not __package__:  # run as a script: make `scripts` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts import service_cli  # noqa: E402
from scripts.daemon import Daemon  # noqa: E402


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found is None:
        raise RuntimeError("redis-server not found: install Debian's redis-server package (make deps)")
    return found


class RedisServer(Daemon):
    name = "Redis"

    def command(self, port: int) -> list[str]:
        return [
            redis_binary(), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(self.dir),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
        ]  # fmt: skip

    def answers(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def url(self) -> str:
        info = self.running() or self.read_info()
        assert info is not None, "start Redis first"
        return f"redis://127.0.0.1:{info.port}/0"


def main(argv: list[str] | None = None) -> int:
    return service_cli.run(argv, __doc__, RedisServer)


if __name__ == "__main__":
    sys.exit(main())
