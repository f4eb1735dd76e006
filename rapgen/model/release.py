"""What a downloaded GPT-2 model folder holds: OpenAI's file names, what each file must contain,
and whether a folder is complete, half downloaded, or something else.

`rapgen.model.download` fetches the files in the order of `FILES`; `needs_download` tells callers
(training, sampling) whether a folder still wants a download. The `checkpoint` file, fetched last,
marks a complete download. The small files are checked for what they must hold (`hparams.json`
and `encoder.json` parse, `vocab.bpe` starts with `#version`, `checkpoint` names `model.ckpt`),
which also catches an HTML page served with status 200; the weights must be 4 bytes per
parameter of `hparams.json`.

>>> needs_download("models/124M"), is_complete("models/124M")   # doctest: +SKIP
(False, True)
"""

from __future__ import annotations

import json
import os
import re

from rapgen.errors import RapgenError
from rapgen.model.hparams import HParams

WEIGHTS = "model.ckpt.data-00000-of-00001"
META = "model.ckpt.meta"
MARKER = "checkpoint"
# Download order: hparams.json first (the weights' size comes from it), the small files next
# so a broken mirror fails before the big download, and the `checkpoint` marker last.
FILES = ("hparams.json", "encoder.json", "vocab.bpe", "model.ckpt.index", META, WEIGHTS, MARKER)
OPTIONAL = frozenset({META})


def needs_download(model_dir: str) -> bool:
    """True when `model_dir` is absent or holds an unfinished download of OpenAI's files (some of
    the required files missing, or weights of the wrong size); False for a complete download and
    for a folder holding anything else (a model made or copied there: the caller's checks apply).
    Cheap: it reads only `hparams.json` and file sizes.

    >>> needs_download("models/124M")                               # doctest: +SKIP
    False
    """
    if not os.path.isdir(model_dir):
        return True
    known = set(FILES) | {f + ".part" for f in FILES}
    names = set(os.listdir(model_dir))
    if names - known:
        return False
    if any(f not in names for f in FILES if f not in OPTIONAL):
        return True
    try:
        weights = 4 * HParams.load(model_dir).n_params()
    except RapgenError:
        return True
    return file_size(os.path.join(model_dir, WEIGHTS)) != weights


def file_size(path: str):
    """The size of `path` in bytes; None if it cannot be read."""
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def can_keep(dest: str, filename: str, expected_size) -> bool:
    """Whether `dest` (a file under its final name, so once verified) can be kept: its size is
    `expected_size` when given, else its content passes its check in `CHECKS` (or it is not empty)."""
    size = file_size(dest)
    if size is None:
        return False
    if expected_size is not None:
        return size == expected_size
    check = CHECKS.get(filename)
    if check is None:
        return size > 0
    try:
        check(dest)
    except (RapgenError, OSError):
        return False
    return True


def is_complete(model_dir: str) -> bool:
    """The marker is present and every required file is valid: nothing to fetch."""
    if not os.path.isfile(os.path.join(model_dir, MARKER)):
        return False
    try:
        weights = 4 * HParams.load(model_dir).n_params()
    except RapgenError:
        return False
    for filename in FILES:
        if filename in OPTIONAL:
            continue
        expected = weights if filename == WEIGHTS else None
        if not can_keep(os.path.join(model_dir, filename), filename, expected):
            return False
    return True


# --- content checks: what each small file must look like (an HTML page fails them) ---


def _check_hparams(path: str) -> None:
    HParams.load(path)


def _check_encoder(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        try:
            table = json.load(f)
        except ValueError as e:
            raise RapgenError(f"not valid JSON ({e})") from None
    if not isinstance(table, dict) or not table:
        raise RapgenError("not a JSON object mapping tokens to ids")


def _check_vocab(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith(b"#version"):
        raise RapgenError("does not start with the '#version' line of a BPE merges file")


def _check_marker(path: str) -> None:
    with open(path, "rb") as f:
        text = f.read(1 << 16).decode("utf-8", "replace")
    found = re.search(r'^model_checkpoint_path:\s*"([^"]*)"', text, re.M)
    if not found:
        raise RapgenError("not a TensorFlow checkpoint index (no model_checkpoint_path line)")
    target = found.group(1).replace("\\", "/").rsplit("/", 1)[-1]
    if target != "model.ckpt":
        raise RapgenError(f"it points to {found.group(1)!r}, not model.ckpt")


CHECKS = {
    "hparams.json": _check_hparams,
    "encoder.json": _check_encoder,
    "vocab.bpe": _check_vocab,
    MARKER: _check_marker,
}
