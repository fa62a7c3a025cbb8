"""Files only this process may read: the data directory and what it holds (SQLite files, object files,
signing keys) hold patient data and secrets, so they are created 0700 (directories) and 0600 (files)
whatever the umask, and an older, looser copy that this user owns is tightened at start."""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Create ``path`` and any missing parent as 0700; ``tighten`` also narrows an existing one we own."""
    if not path.is_dir():
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=DIR_MODE)
            except FileExistsError:
                continue
            os.chmod(directory, DIR_MODE)  # mkdir's mode is narrowed by the umask, never widened
    elif tighten:
        _narrow(path, DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Make sure ``path`` exists as a 0600 file (an empty one if new) before a library opens it."""
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        _narrow(path, FILE_MODE)


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """A descriptor for writing ``path`` created 0600."""
    return os.open(path, flags, FILE_MODE)


def _narrow(path: Path, mode: int) -> None:
    try:
        info = path.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o777 & ~mode:
            os.chmod(path, mode)
    except OSError:
        pass  # not ours (a mounted volume's root, say): the deployment's own permissions apply
