"""The `rapgen` command line: the functions the notebooks call, with fire's syntax and help.

The whole command line is bound to the command's signature first (`rapgen.cli.binder`): an
unknown command, source or flag, a flag without its value, a missing or extra argument is
one line before anything is imported, read or written. Only the module behind the command
being run is imported, so `rapgen collect …` never loads TensorFlow. `--help` is fire's
page for the function. A `RapgenError` (a user mistake) becomes one line on stderr and exit
status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys

from rapgen.checks import unknown_name
from rapgen.cli.binder import bind
from rapgen.devices import quiet_tensorflow_import
from rapgen.errors import RapgenError

# command name -> (module, function). Fire also accepts `dataset-info` for `dataset_info`.
COMMANDS = {
    "download": ("rapgen.model.download", "download"),
    "init": ("rapgen.model.folders", "init"),
    "encode": ("rapgen.data.dataset", "encode"),
    "dataset_info": ("rapgen.data.dataset", "dataset_info"),
    "train": ("rapgen.finetune.loop", "train"),
    "plan": ("rapgen.finetune.fitting", "plan"),
    "merge": ("rapgen.model.lora_run", "merge"),
    "sample": ("rapgen.write.songs", "sample"),
    "interactive": ("rapgen.write.songs", "interactive"),
    "score": ("rapgen.judge.perplexity", "score"),
    "analyze": ("rapgen.judge.analysis", "analyze"),
    "perform": ("rapgen.stage.perform", "perform"),
    "collect": ("rapgen.data.collect", "COMMANDS"),
}


USAGE = """usage: rapgen COMMAND [ARGS] [--FLAGS]   (rapgen COMMAND --help for its flags)

  download NAME        fetch a pretrained GPT-2 (124M, 355M, 774M, 1558M) into models/
  init DIR             write a randomly initialised model (tests, experiments)
  collect SOURCE       build a lyrics dataset: genius, csv or folder
  dataset-info PATH    songs, tokens and artists of a lyrics dataset
  encode IN OUT.npz    pre-encode lyrics into tokens
  train --dataset P    fine-tune (resumable; --drive_dir mirrors checkpoints)
  plan --model 774M    estimated peak memory of fine-tuning; --memory_gb 15: what fits
  merge RUN OUT        fold a LoRA run into a full model folder (OpenAI's format)
  sample               write songs: --artist "Yung Lean" or --prefix TEXT
  interactive          prompt loop: type <<Artist
  score FILE           loss and perplexity of a text under a model, as JSON
  analyze FILE         rhyme density, syllables, scheme; --dataset P: what was copied from it
  perform FILE         rap the lyrics on a beat: --bpm 90 --out verse.wav (and a PNG)"""


def _load(name: str):
    module, attr = COMMANDS[name]
    return getattr(importlib.import_module(module), attr)


# Commands that never touch TensorFlow: no muted pre-import for them.
WITHOUT_TENSORFLOW = ("collect", "download", "analyze", "perform")


def _resolve(argv):
    """argv -> (function or group, path of names typed, the rest); unknown names raise RapgenError."""
    names = [n.replace("_", "-") for n in COMMANDS]
    wanted = argv[0].replace("-", "_")
    if wanted not in COMMANDS:
        raise unknown_name("command", argv[0], names)
    target, path, rest = _load(wanted), [argv[0]], argv[1:]
    if isinstance(target, dict):  # a group: `rapgen collect csv …`
        if not rest or rest[0].startswith("-"):
            if rest and rest[0] in ("--help", "-h"):
                return target, path, rest
            raise RapgenError(
                f"{argv[0]} needs a source: {', '.join(target)} (e.g. rapgen {argv[0]} {next(iter(target))} --help)"
            )
        if rest[0] not in target:
            raise unknown_name(f"{argv[0]} source", rest[0], list(target))
        target, path, rest = target[rest[0]], path + [rest[0]], rest[1:]
    return target, path, rest


def _show_help(path) -> int:
    """fire's help page for a command (every flag with its type and default), on stdout."""
    import fire  # only for a help page: off the path of every command that runs

    wanted = path[0].replace("-", "_")
    try:
        # fire writes help to stderr; on stdout, `rapgen train --help | less` shows it.
        with contextlib.redirect_stderr(sys.stdout):
            fire.Fire({wanted: _load(wanted)}, command=[wanted, *path[1:], "--", "--help"], name="rapgen")
    except fire.core.FireExit as e:
        return int(e.code or 0)
    return 0


def _print_result(result) -> None:
    """Commands print their own output; a dict is printed as JSON, a string (a path) as itself."""
    if isinstance(result, dict):
        print(json.dumps(result))
    elif isinstance(result, str):
        print(result)


def main(argv=None) -> int:
    """Run `rapgen ARGV`: every argument is bound to the command's signature before it runs.

    >>> main(["sample", "--lenght", "8"])   # doctest: +SKIP
    rapgen: error: unknown flag --lenght for `rapgen sample`: did you mean --length? (…)
    2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    try:
        target, path, rest = _resolve(argv)
        if "--help" in rest or "-h" in rest:
            return _show_help(path)
        label = "rapgen " + " ".join(path)
        # Nothing is imported, read or written before the whole command line is bound.
        args, kwargs = bind(label, target, rest, repeatable=("where",))
        if path[0].replace("-", "_") not in WITHOUT_TENSORFLOW:
            quiet_tensorflow_import()
        _print_result(target(*args, **kwargs))
    except RapgenError as e:
        print(f"rapgen: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rapgen: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
