"""`[core] hostname_callable` for the Celery stack's workers: several workers share one machine
here, and each must show in Airflow (task instance hostnames) as the separate host it stands
for. The stack sets FXW_WORKER_HOSTNAME per worker process; elsewhere Airflow's own
getfqdn answers."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("FXW_WORKER_HOSTNAME") or socket.getfqdn()
