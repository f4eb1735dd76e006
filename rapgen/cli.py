"""The `rapgen` command line: python-fire over the same functions the notebooks call.

Only the module behind the command being run is imported, so `rapgen collect …` never
loads TensorFlow. A `RapgenError` (a user mistake) becomes one line on stderr and exit
status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys

# command name -> (module, function). Fire also accepts `dataset-info` for `dataset_info`.
COMMANDS = {
    "download": ("rapgen.downloads", "download"),
    "init": ("rapgen.checkpoints", "init"),
    "encode": ("rapgen.dataset", "encode"),
    "dataset_info": ("rapgen.dataset", "dataset_info"),
    "train": ("rapgen.training", "train"),
    "plan": ("rapgen.plan", "plan"),
    "sample": ("rapgen.sampling", "sample"),
    "interactive": ("rapgen.sampling", "interactive"),
    "score": ("rapgen.scoring", "score"),
    "analyze": ("rapgen.analysis", "analyze"),
    "perform": ("rapgen.performance", "perform"),
    "collect": ("rapgen.collection", "COMMANDS"),
}


USAGE = """usage: rapgen COMMAND [ARGS] [--FLAGS]   (rapgen COMMAND --help for its flags)

  download NAME        fetch a pretrained GPT-2 (124M, 355M, 774M, 1558M) into models/
  init DIR             write a randomly initialised model (tests, experiments)
  collect SOURCE       build a lyrics dataset: genius, csv or folder
  dataset-info PATH    songs, tokens and artists of a lyrics dataset
  encode IN OUT.npz    pre-encode lyrics into tokens
  train --dataset P    fine-tune (resumable; --drive_dir mirrors checkpoints)
  plan --model 774M    estimated peak memory of fine-tuning; --memory_gb 15: what fits
  sample               write songs: --artist "Yung Lean" or --prefix TEXT
  interactive          prompt loop: type <<Artist
  score FILE           loss and perplexity of a text under a model, as JSON
  analyze FILE         rhyme density, syllables, scheme; --dataset P: what was copied from it
  perform FILE         rap the lyrics on a beat: --bpm 90 --out verse.wav (and a PNG)"""


def _quiet_tensorflow_import() -> None:
    """Import TensorFlow with its C++ start-up chatter muted (set RAPGEN_DEBUG=1 to see it).

    A CPU-only machine with the GPU build prints CUDA notices straight to file descriptor 2,
    where the log-level variable does not reach; they would bury rapgen's own one-line errors.
    """
    if "tensorflow" in sys.modules or os.environ.get("RAPGEN_DEBUG"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if importlib.util.find_spec("tf_keras") is None:
        # TensorFlow imports Keras 3's optimizers eagerly (about a second) unless told to use
        # the legacy tf_keras, which then is not there to load. rapgen uses no Keras, and
        # this process runs only rapgen, so the cold start of a command skips it.
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # device probing prints too
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _load(name: str):
    module, attr = COMMANDS[name]
    return getattr(importlib.import_module(module), attr)


def _join_repeated(argv, flag):
    """`--where a --where b` -> `--where a,b`: fire would keep only the last one."""
    values, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag and i + 1 < len(argv):
            values.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1:])
        else:
            rest.append(arg)
        i += 1
    return rest + ([flag, ",".join(values)] if values else [])


def _serialize(result):
    """What fire prints for a command's return value: commands print their own output."""
    if isinstance(result, dict):
        return json.dumps(result)
    if isinstance(result, str):
        return result
    return None


def main(argv=None) -> int:
    import fire

    from .errors import RapgenError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    asks_help = "--help" in argv or "-h" in argv
    if asks_help:
        # Fire would hand --help to a command that takes **options (train) as an option.
        argv = [a for a in argv if a not in ("--help", "-h")] + ["--", "--help"]
    wanted = argv[0].replace("-", "_")
    if wanted == "collect":
        if len(argv) == 1:
            print("rapgen: error: collect needs a source: genius, csv or folder (e.g. rapgen collect csv --help)", file=sys.stderr)
            return 2
        argv = _join_repeated(argv, "--where")
    try:
        if wanted not in ("collect", "download") and not asks_help:  # help needs no TensorFlow
            _quiet_tensorflow_import()
        if wanted in COMMANDS:
            component = {wanted: _load(wanted)}
        else:
            component = {name: _load(name) for name in COMMANDS}
        fire.Fire(component, command=argv, name="rapgen", serialize=_serialize)
    except RapgenError as e:
        print(f"rapgen: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rapgen: interrupted", file=sys.stderr)
        return 130
    except fire.core.FireExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
