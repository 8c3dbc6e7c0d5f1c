"""A real PostgreSQL server on 127.0.0.1 for the store tests (scripts/postgres_server.py).

Started once per test session and stopped at the end. Where it cannot start (no binaries,
no `postgres` user to run it as root), the fixture skips with the reason; it never passes
silently.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.postgres_server import PostgresServer


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    except KeyError:
        pytest.skip("running as root and no 'postgres' user exists to run PostgreSQL")
    try:
        server.start()
    except (RuntimeError, OSError) as err:
        server.stop()
        server.remove_data()
        pytest.skip(f"PostgreSQL did not start: {err}")
    try:
        yield server.url("postgres")
    finally:
        server.stop()
        server.remove_data()


def reset_database(url: str) -> None:
    """Drop every table of ours so each test starts from an empty schema."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    engine.dispose()
