"""Local files only this user may read: staging, the workflow log files and the SQLite store.

They hold the users' data, their queries and their predictions. Created under the default
umask (022 on most hosts) they were readable by every local account, so directories this
package creates are made 0700 and files 0600, whatever the umask. A directory that already
exists is left as its owner set it.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: str | os.PathLike[str]) -> Path:
    """`path` and every missing parent created 0700 (os.makedirs gives the parents 0777 & ~umask)."""
    target = Path(os.path.abspath(path))
    missing = []
    current = target
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process: its mode is its creator's
        os.chmod(directory, DIR_MODE)  # a umask like 0o077 is fine; one clearing u+rwx is not
    return target


def open_private(path: str | os.PathLike[str], flags: int) -> int:
    """os.open with O_CREAT and mode 0600 (an existing file keeps its mode)."""
    return os.open(path, flags | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), FILE_MODE)


def touch_private(path: str | os.PathLike[str]) -> None:
    """Create an empty 0600 file unless it exists (e.g. before SQLite creates it 0644)."""
    os.close(open_private(path, os.O_WRONLY))
