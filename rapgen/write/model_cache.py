"""The model `sample` and `interactive` write with, kept in memory while its files stay the same.

The cache is keyed by the model folder, the checkpoint prefix, the precision and the identity of
the checkpoint's files on disk (inode, size and mtime of its .index and data files and of
hparams.json): a checkpoint rewritten in place (a notebook that trains on and samples again) is
loaded afresh by the next call. It holds one model at most.
"""

from __future__ import annotations

import os
import sys

from rapgen.model.encoder import load_encoder
from rapgen.model.folders import choice_note, choose_checkpoint, resolve_model_dir
from rapgen.model.loading import load_model

_LOADED = {}  # key (see _files_key) -> (GPT2, Encoder); one entry at most


def _files_key(model_dir: str, prefix: str):
    """What changes when a checkpoint is rewritten on disk: each file's inode, size and mtime."""
    key = []
    for path in (prefix + ".index", prefix + ".data-00000-of-00001", os.path.join(model_dir, "hparams.json")):
        try:
            st = os.stat(path)
            key.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            key.append(None)  # load_model names what is missing
    return tuple(key)


def cached_model(options, quiet: bool = False):
    """The model and encoder `options` (a `rapgen.write.songs.SamplingOptions`) name, loaded once while its checkpoint files stay the same.

    A run's model-best is taken unless `--checkpoint` says otherwise (said on stderr unless quiet)."""
    model_dir = resolve_model_dir(options.model, options.models_dir)
    prefix = choose_checkpoint(model_dir, options.checkpoint)
    # models_dir: where a LoRA run's base is looked for, so another one may give other weights.
    key = (
        os.path.abspath(model_dir),
        os.path.abspath(prefix),
        os.path.abspath(options.models_dir),
        options.precision,
        _files_key(model_dir, prefix),
    )
    if key not in _LOADED:
        note = choice_note(model_dir, options.checkpoint, prefix)
        if note and not quiet:
            print(note, file=sys.stderr)  # once per load: stdout holds the songs
        _LOADED.clear()  # keep one model in memory
        # Reduced precision stores the weights in that type too: generation is bound by
        # reading every weight once per token, so half the bytes is the point.
        precision = options.precision
        gpt = load_model(
            model_dir, options.models_dir, checkpoint=prefix, compute_dtype=precision, variable_dtype=precision
        )  # models_dir: where a LoRA run's base is looked for
        _LOADED[key] = (gpt, load_encoder(model_dir))
    return _LOADED[key]
