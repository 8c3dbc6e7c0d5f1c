"""`[database] sql_alchemy_connect_args(_async)` for the embedded stack's SQLite metadata DB.

SQLite lets one writer in at a time and pysqlite gives up on a lock after 5 s by default. On a
busy 2-core machine the scheduler, the dag-processor, the triggerer, four task processes and
the api-server all write to that one file, and a REST trigger that waited 5 s for the lock
came back as HTTP 500 "Database error". A longer wait is what SQLite offers; PostgreSQL (the
Celery stack's database) does not need it.

The api-server waits less (API_SERVER_CONNECT_ARGS). Airflow 3.3's audit-log dependency of its
REST API commits on the server's event loop: when another request of the same server (a task's
heartbeat on the execution API) holds SQLite's lock and needs the loop to commit, the two wait
on each other until the busy timeout ends it with a 500 for the audit-logged request, and for
that long the loop serves nothing at all. A short timeout bounds that stall; the plugin's calls
to Airflow are retried after it (api/airflow_api.py), the task processes' calls to the
execution API by Airflow's own client.
"""

from __future__ import annotations

CONNECT_ARGS: dict[str, object] = {"timeout": 60}
API_SERVER_CONNECT_ARGS: dict[str, object] = {"timeout": 10}
