"""The `start | stop | status` command line shared by the local stand-in servers.

`start` prints the server's facts as JSON (what tests, benchmarks and the demo read);
`status` prints them, or "stopped" with exit code 3.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol


class Service(Protocol):
    def start(self) -> Any: ...
    def stop(self) -> None: ...
    def running(self) -> Any | None: ...


def run(
    argv: list[str] | None,
    doc: str | None,
    service: Callable[[str, int | None], Service],
    *,
    dir_default: str | None = None,
    dir_help: str = "data directory",
    port_help: str = "port on 127.0.0.1",
) -> int:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", default=dir_default, required=dir_default is None, help=dir_help)
    parser.add_argument("--port", type=int, help=port_help)
    args = parser.parse_args(argv)
    server = service(args.dir, args.port)
    if args.action == "start":
        print(json.dumps(asdict(server.start())))
    elif args.action == "stop":
        server.stop()
    else:
        info = server.running()
        print(json.dumps(asdict(info)) if info else "stopped")
        return 0 if info else 3
    return 0
