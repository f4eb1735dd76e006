"""Mirroring a run folder to another folder (Google Drive on Colab) and back.

Only new or changed files are copied, each atomically, and
files gone from the source are removed from the mirror, so old checkpoints are pruned
there too. The mirror's `checkpoint` index is copied last: a mirror interrupted mid-copy
still names a checkpoint whose files are complete. A mirror holding a checkpoint newer
than the source's newest (another machine trained further) is left untouched: pruning it
would delete the newer work.

>>> mirror("checkpoints/run1", "/content/drive/MyDrive/rapgen/run1")   # doctest: +SKIP
3
"""

from __future__ import annotations

import os

from rapgen.errors import RapgenError
from rapgen.fileio import atomic_copy
from rapgen.model.checkpoint import list_checkpoints, step_of

INDEX = "checkpoint"
SMALL = 1 << 20


def _files(folder: str):
    out = {}
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith("."):  # temp files of atomic writes
                continue
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = os.stat(path)
    return out


def _stale_temps(folder: str):
    """Temp files (`.name.XXXX.tmp`) that a copy killed midway (a Colab VM vanishing) left behind."""
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                yield os.path.join(root, name)


def _same(src_path, dst_path, s, d) -> bool:
    """Small files (index, counter, logs) are compared by content, since they are rewritten
    within a second at the same size; big ones (checkpoints, written once) by size and time.
    Drive's mount may keep times only to the second."""
    if d.st_size != s.st_size:
        return False
    if s.st_size <= SMALL:
        with open(src_path, "rb") as a, open(dst_path, "rb") as b:
            return a.read() == b.read()
    return abs(d.st_mtime - s.st_mtime) < 1.0


class MirrorIsNewer(RapgenError):
    """The mirror holds a newer checkpoint than the folder that would replace it."""


def newest_checkpoint(folder: str):
    """The complete checkpoint with the highest step in a folder (whatever its index names), or None.

    >>> newest_checkpoint("/content/drive/MyDrive/rapgen/run1")               # doctest: +SKIP
    '/content/drive/MyDrive/rapgen/run1/model-1200'
    """
    found = list_checkpoints(folder) if os.path.isdir(folder) else []
    return max(found, key=step_of) if found else None


def mirror(src: str, dst: str, prune: bool = True) -> int:
    """Make dst a copy of src; returns how many files were copied.

    With prune, a dst whose newest checkpoint is newer than src's newest raises MirrorIsNewer
    and is left as it was.
    """
    if not os.path.isdir(src):
        # Mirroring nothing would prune (delete) everything in dst.
        raise RapgenError(f"cannot mirror {src}: it is not a folder (nothing in {dst} was changed)")
    theirs, ours = newest_checkpoint(dst), newest_checkpoint(src)
    if prune and theirs is not None and (ours is None or step_of(theirs) > step_of(ours)):
        have = f"{os.path.basename(ours)} in {src}" if ours else f"no checkpoint in {src}"
        raise MirrorIsNewer(
            f"the mirror {dst} holds {os.path.basename(theirs)}, newer than {have}: nothing there was changed "
            f"(continue from it with --restore_from {theirs}, or mirror this run under another --run_name)"
        )
    os.makedirs(dst, exist_ok=True)
    have, want = _files(dst), _files(src)
    # A checkpoint rewritten in place (model-best) may keep its data file's size and, within a
    # second, its time; its small .index, which holds every tensor's checksum, differs then, so
    # the data of a changed index is copied too.
    rewritten = {
        rel[: -len(".index")]
        for rel in want
        if rel.endswith(".index")
        and (rel not in have or not _same(os.path.join(src, rel), os.path.join(dst, rel), want[rel], have[rel]))
    }
    # A rewritten checkpoint's old index goes first and every data file is copied before any
    # .index (the folder's `checkpoint` index last): a copy cut short (a Colab disconnect) then
    # leaves that checkpoint without an index, which nothing lists, never a new index beside old
    # data of the same size, which would pass for whole and fail its checksums when read.
    for prefix in rewritten:
        if os.path.exists(os.path.join(dst, prefix + ".index")):
            os.unlink(os.path.join(dst, prefix + ".index"))
            have.pop(prefix + ".index", None)
    copied = 0
    for rel in sorted(want, key=lambda r: (r == INDEX, r.endswith(".index"), r)):
        s = want[rel]
        d = have.get(rel)
        target = os.path.join(dst, rel)
        if d is not None and rel.split(".data-")[0] not in rewritten and _same(os.path.join(src, rel), target, s, d):
            continue
        atomic_copy(os.path.join(src, rel), target)
        os.utime(target, (s.st_atime, s.st_mtime))
        copied += 1
    if prune:
        # Index first, so the mirror never names a checkpoint being deleted.
        for rel in sorted(set(have) - set(want), key=lambda r: r != INDEX):
            os.unlink(os.path.join(dst, rel))
        for path in list(_stale_temps(dst)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    return copied
