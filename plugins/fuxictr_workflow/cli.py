"""`fuxictr-workflow` console command (store administration, like `airflow db migrate`)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from fuxictr_workflow.domain.config import ConfigError, get_config
from fuxictr_workflow.store import SCHEMA_VERSION, WorkflowStore


def _db_init(args: argparse.Namespace) -> int:
    url = args.url or get_config().store.url
    store = WorkflowStore(url)
    before = store.schema_version()
    after = store.init()
    action = "created" if before == 0 else ("migrated" if before < after else "already at")
    print(f"workflow store {action} schema version {after} ({url})")
    return 0


def _config_check(args: argparse.Namespace) -> int:
    cfg = get_config()
    print(f"config OK: {len(cfg.servers)} server(s), default {cfg.default_server}, store {cfg.store.url}")
    return 0


def _pools_sync(args: argparse.Namespace) -> int:
    """Create/update one Airflow pool per training server (slots = max_concurrent_trainings)."""
    from fuxictr_workflow.orchestration.dag_params import pool_for

    cfg = get_config()
    airflow = shutil.which("airflow") or os.path.join(os.path.dirname(sys.executable), "airflow")
    for name, server in cfg.servers.items():
        pool = pool_for(name)
        slots = str(server.max_concurrent_trainings)
        subprocess.run(
            # deferred tasks count: a training followed from the triggerer still uses the GPU
            [airflow, "pools", "set", "--include-deferred", pool, slots, f"FuXiCTR trainings on {name}"],
            check=True,
            capture_output=True,
        )
        print(f"pool {pool}: {slots} slot(s)")
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    """Delete what finished tasks older than the retention period left behind (retention.py)."""
    from fuxictr_workflow.retention import cleanup

    cfg = get_config()
    store = WorkflowStore(cfg.store.url)
    try:
        report = cleanup(cfg, store, days=args.days, dry_run=args.dry_run)
    except ValueError as err:
        print(f"cleanup: {err}", file=sys.stderr)
        return 2
    finally:
        store.dispose()
    for line in report.lines():
        print(line)
    return 1 if report.errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fuxictr-workflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="workflow store administration").add_subparsers(
        dest="db_command", required=True
    )
    init = db.add_parser("init", help=f"create or migrate the store to schema version {SCHEMA_VERSION}")
    init.add_argument("--url", help="SQLAlchemy URL (default: store.url from the config)")
    init.set_defaults(func=_db_init)
    config = sub.add_parser("config", help="configuration").add_subparsers(
        dest="config_command", required=True
    )
    config.add_parser("check", help="load and validate the config file").set_defaults(func=_config_check)
    pools = sub.add_parser("pools", help="Airflow pools").add_subparsers(dest="pools_command", required=True)
    pools.add_parser("sync", help="one pool per configured training server").set_defaults(func=_pools_sync)
    clean = sub.add_parser(
        "cleanup",
        help="delete staging, server, HDFS and log files and task_logs rows of tasks that "
        "finished more than retention.days ago",
    )
    clean.add_argument("--days", type=int, help="override retention.days")
    clean.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    clean.set_defaults(func=_cleanup)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
