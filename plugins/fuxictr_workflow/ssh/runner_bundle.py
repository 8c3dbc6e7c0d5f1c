"""What the training server runs, shipped to it: the runner bundle (remote/runner.py and what it
imports) to ``<remote_root>/.runner/<sha256>/`` and, only for a server without a FuXiCTR config
dir of its own, the demo bundle (the demo's FuXiCTR config and models, demo/) to
``<remote_root>/.demo/<sha256>/``. A production server never receives demo code.

Each is content-addressed, so a stale copy is never used and concurrent tasks share one copy
safely. Before each run every file there is read back and compared with the shipped bytes; a
copy that differs is replaced, never run.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shlex
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fuxictr_workflow.ssh.commands import run_command
from fuxictr_workflow.tracking import StageError

PACKAGE = Path(__file__).resolve().parents[1]
REMOTE_DIR = PACKAGE / "remote"
RUNNER = ("runner.py", "job.py", "streaming.py", "model_lookup.py", "errors.py")
# the demo bundle's layout: the runner is given its config dir and its models file
DEMO_CONFIG_DIR, DEMO_MODELS = "fuxictr_config", "models.py"
DEMO = (DEMO_MODELS, f"{DEMO_CONFIG_DIR}/model_config.yaml", f"{DEMO_CONFIG_DIR}/dataset_config.yaml")


def bundle_files() -> dict[str, bytes]:
    return {name: (REMOTE_DIR / name).read_bytes() for name in RUNNER}


def demo_files() -> dict[str, bytes]:
    return {name: (PACKAGE / "demo" / name).read_bytes() for name in DEMO}


def digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name, data in files.items():
        h.update(name.encode() + b"\0" + data)
    return h.hexdigest()[:16]


def bundle_digest() -> str:
    return digest(bundle_files())


def bundle_problem(sftp: Any, target: str, files: dict[str, bytes]) -> str | None:
    """Why the bundle at `target` is not exactly `files` (None: it is).

    Each file is read back and hashed: a marker file would only say a copy was once
    finished, not that nobody changed it since. Symlinks are refused, not followed."""
    for rel in sorted({posixpath.dirname(n) for n in files} | {""}):
        where = posixpath.join(target, rel) if rel else target
        try:
            mode = sftp.lstat(where).st_mode
        except FileNotFoundError:
            return "missing"
        if not stat.S_ISDIR(mode):
            return f"{where} is not a directory"
    for name, data in files.items():
        path = posixpath.join(target, name)
        try:
            mode = sftp.lstat(path).st_mode
        except FileNotFoundError:
            return f"{name} is missing"
        if not stat.S_ISREG(mode):
            return f"{name} is not a regular file"
        with sftp.open(path, "rb") as f:
            there = f.read()
        if hashlib.sha256(there).digest() != hashlib.sha256(data).digest():
            return f"{name} differs from the shipped version"
    return None


def ship_runner(client: Any, remote_root: str, warn: Callable[[str], None] = lambda _: None) -> str:
    """The runner bundle's dir on the server, shipped unless that exact version is there."""
    files = bundle_files()
    return _ship(client, posixpath.join(remote_root, ".runner", digest(files)), files, "runner", warn)


def ship_demo(client: Any, remote_root: str, warn: Callable[[str], None] = lambda _: None) -> str:
    """The demo bundle's dir on the server (its FuXiCTR config in DEMO_CONFIG_DIR, its models in
    DEMO_MODELS), shipped unless that exact version is there."""
    files = demo_files()
    return _ship(client, posixpath.join(remote_root, ".demo", digest(files)), files, "demo", warn)


def _ship(client: Any, target: str, files: dict[str, bytes], kind: str, warn: Callable[[str], None]) -> str:
    """Copy `files` to `target` unless exactly they are there. What is there is verified file
    by file before every run; a changed copy is replaced."""
    sftp = client.open_sftp()
    try:
        problem = bundle_problem(sftp, target, files)
        if problem is None:
            return target
        if problem != "missing":
            warn(f"{kind} bundle {target} on the server is not the shipped one ({problem}); replacing it")
            run_command(client)(f"rm -rf -- {shlex.quote(target)}")
        staging = f"{target}.tmp.{os.getpid()}.{id(client)}"
        for name, data in files.items():
            _mkdirs(sftp, posixpath.dirname(posixpath.join(staging, name)))
            with sftp.open(posixpath.join(staging, name), "wb") as f:
                f.write(data)
        try:
            sftp.posix_rename(staging, target)
        except OSError:  # another task shipped the same version first
            run_command(client)(f"rm -rf -- {shlex.quote(staging)}")
        problem = bundle_problem(sftp, target, files)
        if problem is not None:
            raise StageError(
                f"{kind} bundle {target} on the server cannot be verified after shipping: {problem}"
            )
        return target
    finally:
        sftp.close()


def _mkdirs(sftp: Any, path: str) -> None:
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        sub = "/" + "/".join(parts[:i])
        try:
            sftp.stat(sub)
        except FileNotFoundError:
            sftp.mkdir(sub)


def job_py(remote_root: str) -> str:
    """remote/job.py of this version's bundle under `remote_root`."""
    return posixpath.join(remote_root, ".runner", bundle_digest(), "job.py")
