"""Atomic file writes: a temp file in the same folder, flushed, then renamed over the target.

A crash at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import shutil
import tempfile


def _mkstemp_beside(path: str) -> str:
    """A temp file next to `path`, with the permissions a plain open() would give it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
    return tmp


def atomic_write_bytes(path: str, data: bytes) -> None:
    tmp = _mkstemp_beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: str, dst: str) -> None:
    """Copy a file so that `dst` is either absent/old or complete."""
    tmp = _mkstemp_beside(dst)
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
