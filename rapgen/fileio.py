"""Atomic file writes, and the temp files they leave when their writer is killed.

A write goes to a temp file in the same folder, flushed, then renamed over the target: a
crash at any moment leaves either the old file or the new one, never half of one. Temp
files carry their writer's tag (`pid<pid>-t<start time>`), so a later run can tell the
leftovers of a dead writer (a `kill -9`, a vanished Colab VM) from a write still going on
in another process, even when the pid has since been reused.

>>> atomic_write_text("checkpoints/run1/counter", "12\\n")            # doctest: +SKIP
>>> remove_dead_temps("checkpoints/run1")                              # doctest: +SKIP
['checkpoints/run1/.tmp-model-400-pid4242-t88190.data-00000-of-00001.tempstate1']
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from typing import IO, Iterator, List, Optional

# Temp names: `.tmp-<name>-pid<pid>-t<start>…` (checkpoints), `.<name>.pid<pid>-t<start>.<random>.tmp` (here).
_TAGGED = re.compile(r"^\..*[-.]pid(\d+)-t(\d+)\.")
# Written by rapgen before temp names were tagged: a checkpoint's `.tmp-<name>-<pid>.`, and `.<name>.<random>.tmp`.
_OLD_CHECKPOINT = re.compile(r"^\.tmp-.+-(\d+)\.(index|data-)")
_OLD_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
UNTAGGED_STALE_SECONDS = 3600  # an untagged temp file this long unchanged has no writer left


def _start_time(pid: int) -> Optional[int]:
    """The process's start time (clock ticks after boot) on Linux; 0 where unknown; None if no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else 0
    except OSError:
        return 0
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # a zombie has finished writing
        return None
    return int(fields[19])


def writer_tag() -> str:
    """`pid<pid>-t<start time>` of this process, for temp file names."""
    pid = os.getpid()
    return f"pid{pid}-t{_start_time(pid) or 0}"


def writer_alive(pid: int, start: int) -> bool:
    """Is the process that tagged a temp file `pid<pid>-t<start>` still running?

    A different start time means the pid was reused by another process after the writer died.
    """
    now = _start_time(pid)
    if now is None:
        return False
    if now and start:
        return now == start
    try:  # no /proc (macOS): the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _dead_temp(folder: str, name: str) -> bool:
    match = _TAGGED.match(name)
    if match:
        return not writer_alive(int(match.group(1)), int(match.group(2)))
    match = _OLD_CHECKPOINT.match(name)
    if match:
        return not writer_alive(int(match.group(1)), 0)
    if _OLD_TEMP.match(name):
        # No writer named: only a file nobody has written to for an hour (a live copy of a
        # big checkpoint to Drive keeps touching it).
        try:
            return time.time() - os.stat(os.path.join(folder, name)).st_mtime > UNTAGGED_STALE_SECONDS
        except FileNotFoundError:
            return False
    return False


def remove_dead_temps(folder: str) -> List[str]:
    """Delete the temp files of writers no longer running under folder (sub-folders too); returns their paths.

    Temp files of live writers (this process, or a run going on in another one) are kept.
    """
    removed = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith(".") and _dead_temp(root, name):
                path = os.path.join(root, name)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue  # another cleaner got there first
                removed.append(path)
    return sorted(removed)


def _mkstemp_beside(path: str) -> str:
    """A temp file next to `path`, with the permissions a plain open() would give it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    prefix = f".{os.path.basename(path)}.{writer_tag()}."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
    return tmp


@contextlib.contextmanager
def replacing(path: str) -> Iterator[str]:
    """The path of a temp file beside `path`: renamed over `path` if the block ends without an
    error, else removed (every atomic write here goes through this one place)."""
    tmp = _mkstemp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str, data: bytes) -> None:
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_open(path: str, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """A text file to stream `path` through: it replaces `path` only if the block ends without an
    error, else it is removed and `path` stays as it was. For writes too big to hold in memory.

    >>> with atomic_open("data/rap.txt") as f:                          # doctest: +SKIP
    ...     f.write("<<Lil Tofu - Soy Drip>>\\n")
    """
    with replacing(path) as tmp, open(tmp, "w", encoding=encoding, newline="\n") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_copy(src: str, dst: str) -> None:
    """Copy a file so that `dst` is either absent/old or complete."""
    with replacing(dst) as tmp:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
