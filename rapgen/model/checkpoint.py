"""A TF1 checkpoint's files: list them, read them, write them atomically, index them, find damage.

A checkpoint `<prefix>` is two files, `<prefix>.index` and `<prefix>.data-00000-of-00001`
(the V2 bundle `tf.compat.v1.train.Saver` writes), and a folder's `checkpoint` file names
the newest with a path relative to the folder. Writes go to a temp prefix named for the
writer (rapgen.fileio) and are renamed into place data first, so a kill never leaves an
index without its data; `checkpoint_problem` finds a cut-short or unreadable checkpoint
without reading a tensor. Which checkpoint a command uses is `rapgen.model.folders`'s concern.

>>> write_checkpoint("checkpoints/run1/model-5", {"rapgen/step": tf.constant(5, tf.int64)})   # doctest: +SKIP
>>> list_checkpoints("checkpoints/run1")                                                     # doctest: +SKIP
['checkpoints/run1/model-5']
"""

from __future__ import annotations

import glob
import os
import re
from typing import Dict, List, Optional

import numpy as np

from rapgen.errors import RapgenError
from rapgen.fileio import atomic_write_text, writer_tag

DATA_SUFFIX = ".data-00000-of-00001"


def list_checkpoints(model_dir: str) -> List[str]:
    """Checkpoint prefixes in a folder with both .index and data files, oldest step first."""
    prefixes = []
    for index in glob.glob(os.path.join(glob.escape(model_dir), "*.index")):
        prefix = index[: -len(".index")]
        if os.path.exists(prefix + DATA_SUFFIX) and not os.path.basename(prefix).startswith("."):
            prefixes.append(prefix)
    return sorted(prefixes, key=lambda p: (step_of(p), p))


def step_of(prefix: str) -> int:
    """`.../model-1200` -> 1200; prefixes without a step (OpenAI's `model.ckpt`) -> 0."""
    match = re.search(r"-(\d+)$", prefix)
    return int(match.group(1)) if match else 0


def read_checkpoint(prefix: str) -> Dict[str, np.ndarray]:
    """Every tensor of a checkpoint, by name (small checkpoints and tests)."""
    import tensorflow as tf  # TensorFlow: off the CLI's fast path

    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def write_checkpoint(prefix: str, tensors: Dict[str, "object"]) -> None:
    """Write tensors as a TF1 name-based checkpoint (V2 bundle), as `tf.compat.v1.train.Saver` does.

    Written under a hidden temporary prefix and renamed into place data-then-index, so a
    kill leaves no `prefix.index` without its data. The prefix names this process (`pid…-t…`),
    so `fileio.remove_dead_temps` can clear what a killed writer left.
    """
    import tensorflow as tf  # TensorFlow: off the CLI's fast path

    folder, base = os.path.split(prefix)
    tmp = os.path.join(folder, f".tmp-{base}-{writer_tag()}")
    names = sorted(tensors)
    try:
        tf.raw_ops.SaveV2(
            prefix=tmp,
            tensor_names=names,
            shape_and_slices=[""] * len(names),
            tensors=[tf.convert_to_tensor(tensors[n]) for n in names],
        )
    except (tf.errors.OpError, OSError) as e:
        for leftover in glob.glob(glob.escape(tmp) + "*"):
            os.unlink(leftover)
        raise RapgenError(f"could not write checkpoint {prefix}: {getattr(e, 'message', e)}") from None
    if os.path.exists(prefix + ".index"):
        os.unlink(prefix + ".index")  # an old index never describes a newer data file
    os.replace(tmp + DATA_SUFFIX, prefix + DATA_SUFFIX)
    os.replace(tmp + ".index", prefix + ".index")


def write_checkpoint_index(model_dir: str, prefixes: List[str]) -> None:
    """The `checkpoint` file, with paths relative to the folder; the last prefix is the newest."""
    names = [os.path.basename(p) for p in prefixes]
    lines = [f'model_checkpoint_path: "{names[-1]}"'] + [f'all_model_checkpoint_paths: "{n}"' for n in names]
    atomic_write_text(os.path.join(model_dir, "checkpoint"), "\n".join(lines) + "\n")


def checkpoint_problem(prefix: str) -> Optional[str]:
    """What is wrong with a checkpoint's files, found without reading a tensor; None if nothing.

    The index is parsed (a truncated or garbage `.index` fails there) and the data file's size
    is checked against the bytes the index records for its tensors (a cut-short `.data-*`).

    >>> checkpoint_problem("checkpoints/run1/model-400")                    # doctest: +SKIP
    'checkpoints/run1/model-400.data-00000-of-00001 is cut short: 1048576 of the 1498767360 bytes …'
    """
    import tensorflow as tf  # TensorFlow: off the CLI's fast path

    index, data = prefix + ".index", prefix + DATA_SUFFIX
    for path in (index, data):
        if not os.path.isfile(path):
            return f"{path} is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    except (tf.errors.OpError, ValueError) as e:
        reason = str(getattr(e, "message", e)).splitlines()[0][:80]
        return f"{index} is not a readable checkpoint index ({reason})"
    if any(dtype == tf.string for dtype in dtypes.values()):
        return None  # strings have no fixed size; GPT-2 checkpoints hold none
    # A single-shard bundle stores the tensors back to back, nothing else: its size is their sum.
    expected = sum(int(np.prod(shape, dtype=np.int64)) * dtypes[name].size for name, shape in shapes.items())
    actual = os.path.getsize(data)
    if actual < expected:
        return f"{data} is cut short: {actual} of the {expected} bytes its index records (an interrupted copy or a full disk)"
    return None


def damaged_checkpoint_error(
    prefix: str, problem: str, flag: str = "--checkpoint", also_in: List[str] = ()
) -> RapgenError:
    """The one-line error for a damaged checkpoint, naming an older complete one to use instead."""
    folders = [os.path.dirname(prefix) or "."] + [f for f in also_in if f and os.path.isdir(f)]
    for folder in folders:
        for other in reversed(list_checkpoints(folder)):
            if os.path.abspath(other) != os.path.abspath(prefix) and checkpoint_problem(other) is None:
                return RapgenError(
                    f"checkpoint {os.path.basename(prefix)} is damaged: {problem}; {other} is complete: "
                    f"continue from it with {flag} {other} (the damaged files were left as they are)"
                )
    return RapgenError(
        f"checkpoint {os.path.basename(prefix)} is damaged: {problem}; no complete checkpoint beside it: "
        f"copy the files again from where they came from (the Drive mirror, or `rapgen download`)"
    )


def verify_checkpoint(prefix: str, flag: str = "--checkpoint", also_in: List[str] = ()) -> str:
    """Raise the one-line error of `damaged_checkpoint_error` unless the checkpoint is whole; return prefix.

    flag is the option that picks another checkpoint in the command at hand (`--restore_from` for train).

    >>> verify_checkpoint("checkpoints/run1/model-400", flag="--restore_from")   # doctest: +SKIP
    'checkpoints/run1/model-400'
    """
    problem = checkpoint_problem(prefix)
    if problem is not None:
        raise damaged_checkpoint_error(prefix, problem, flag, also_in)
    return prefix
