"""`[database] sql_alchemy_connect_args(_async)` for the embedded stack's SQLite metadata DB.

SQLite lets one writer in at a time and pysqlite gives up on a lock after 5 s by default. On a
busy 2-core machine the scheduler, the dag-processor, the triggerer, four task processes and
the api-server all write to that one file, and a REST trigger that waited 5 s for the lock
came back as HTTP 500 "Database error". A longer wait is what SQLite offers; PostgreSQL (the
Celery stack's database) does not need it.
"""

from __future__ import annotations

CONNECT_ARGS: dict[str, object] = {"timeout": 60}
