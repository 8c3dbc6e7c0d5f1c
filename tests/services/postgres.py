"""A real PostgreSQL server on 127.0.0.1 for the store tests (Debian's postgresql package).

Started once per test session in a private data dir and stopped at the end. Where it
cannot start (no binaries, no unprivileged user to run it as root), the fixture skips
with the reason; it never passes silently.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    bindir = _bin_dir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (install Debian's postgresql package: make deps)")
    run_as: list[str] = []
    data_root = tempfile.mkdtemp(prefix="fuxictr_pg_")
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the package's user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(data_root)
            pytest.skip("running as root and no 'postgres' user exists to run the server")
        os.chown(data_root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(data_root, "data")
    port = _free_port()
    init = subprocess.run(
        [*run_as, f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        shutil.rmtree(data_root, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-500:]}")
    log = os.path.join(data_root, "server.log")
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={data_root} -c fsync=off"
    start = subprocess.run(
        [*run_as, f"{bindir}/pg_ctl", "-D", data, "-l", log, "-o", opts, "-w", "-t", "60", "start"],
        capture_output=True,
        text=True,
    )
    if start.returncode != 0:
        tail = Path(log).read_text()[-800:] if os.path.exists(log) else start.stderr
        shutil.rmtree(data_root, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {tail.strip()}")
    try:
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres").close()
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(data_root, ignore_errors=True)


def reset_database(url: str) -> None:
    """Drop every table of ours so each test starts from an empty schema."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    engine.dispose()
