"""`fuxictr-workflow` console command (store administration, like `airflow db migrate`)."""

from __future__ import annotations

import argparse
import sys

from fuxictr_workflow.config import ConfigError, get_config
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
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
