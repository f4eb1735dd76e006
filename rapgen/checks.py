"""Value checks: the rules every command and the Python API apply to a value before any work.

Each rule has one phrasing, "<flag> must be <what it takes>, got <value>", so a value refused
by `rapgen train` reads like one refused by `rapgen.sample(...)` or by the plan. `name` is
what the user typed: `--top_k` from the command line and the Python API alike (the Python
API takes the same names), or a bare name where no flag exists (gpu_check). Each rule
returns the value it accepted, so a call reads `x = positive_int("--x", x)`. Paths have
their rules here too: an output file or folder that cannot be written, a checkpoint that
does not exist.

>>> positive_int("--batch_size", 4)
4
>>> between("--top_p", 2, 0, 1)
Traceback (most recent call last):
...
rapgen.errors.RapgenError: --top_p must be between 0 and 1, got 2
"""

from __future__ import annotations

import difflib
import numbers
import os
from typing import Iterable, Optional, Sequence

from rapgen.errors import RapgenError

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def bool_word(text: str) -> Optional[bool]:
    """True for yes/true/on/1, False for no/false/off/0 (any case), None for anything else."""
    word = str(text).strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def check_output_file(path, flag: str) -> str:
    """Refuse, before any work, an output path that cannot become a file: a folder, or one under a file.

    >>> check_output_file("data/rap.txt", "--out")
    'data/rap.txt'
    """
    path = str(path)
    if not path.strip():
        raise RapgenError(f"{flag} is empty: give a file path")
    if os.path.isdir(path):
        raise RapgenError(
            f"{flag} {path} is a folder: give a file path inside it, e.g. {os.path.join(path, 'out' + (os.path.splitext(path)[1] or '.txt'))}"
        )
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise RapgenError(f"{flag} {path} cannot be written: {parent} is a file, not a folder")
    return path


def check_output_folder(path, flag: str) -> str:
    """Refuse, before any work, a folder path that is a file or lies under one (it may not exist yet).

    >>> check_output_folder("checkpoints", "--checkpoint_dir")
    'checkpoints'
    """
    path = str(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise RapgenError(f"{flag} {path} is a file, not a folder: give a folder")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise RapgenError(f"{flag} {path} cannot be a folder: {parent} is a file")
    return path


def check_checkpoint(checkpoint) -> None:
    """`--checkpoint` must be best, latest, or a prefix naming an existing checkpoint (its .index file);
    None means a run's model-best when it has one, else the newest (rapgen.model.folders.choose_checkpoint).

    >>> check_checkpoint("worst")
    Traceback (most recent call last):
    ...
    rapgen.errors.RapgenError: --checkpoint worst: no such checkpoint (worst.index does not exist); give best, latest or a prefix such as checkpoints/run1/model-500
    """
    if checkpoint is None or checkpoint in ("best", "latest"):
        return
    if not os.path.exists(str(checkpoint) + ".index"):
        raise RapgenError(
            f"--checkpoint {checkpoint}: no such checkpoint ({checkpoint}.index does not exist); "
            f"give best, latest or a prefix such as checkpoints/run1/model-500"
        )


def _is_int(value) -> bool:
    # True and False are ints to Python, but `--batch_size True` is a mistake, not a 1.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value  # NaN is no number


def positive_int(name: str, value) -> int:
    """A whole number >= 1.

    >>> positive_int("--batch_size", 0)
    Traceback (most recent call last):
    ...
    rapgen.errors.RapgenError: --batch_size must be a positive integer, got 0
    """
    if not _is_int(value) or value <= 0:
        raise RapgenError(f"{name} must be a positive integer, got {value!r}")
    return value


def non_negative_int(name: str, value) -> int:
    """A whole number >= 0 (a seed, a number of retries).

    >>> non_negative_int("--seed", 0)
    0
    """
    if not _is_int(value) or value < 0:
        raise RapgenError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def zero_or_positive_int(name: str, value) -> int:
    """A whole number >= 0 where 0 turns the feature off (`--save_every 0`, `--top_k 0`).

    >>> zero_or_positive_int("--top_k", 40)
    40
    """
    if not _is_int(value) or value < 0:
        raise RapgenError(f"{name} must be 0 (off) or a positive integer, got {value!r}")
    return value


def positive_number(name: str, value, unit: str = "") -> float:
    """A number > 0; `unit` says what it counts (`--timeout` takes seconds).

    >>> positive_number("--memory_gb", -3, unit="GiB")
    Traceback (most recent call last):
    ...
    rapgen.errors.RapgenError: --memory_gb must be a positive number of GiB, got -3
    """
    if not _is_number(value) or value <= 0:
        raise RapgenError(f"{name} must be a positive number{' of ' + unit if unit else ''}, got {value!r}")
    return value


def non_negative_number(name: str, value, unit: str = "") -> float:
    """A number >= 0 (`--temperature`, `--rate_limit`).

    >>> non_negative_number("--temperature", 0.7)
    0.7
    """
    if not _is_number(value) or value < 0:
        raise RapgenError(f"{name} must be a non-negative number{' of ' + unit if unit else ''}, got {value!r}")
    return value


def between(
    name: str, value, lo, hi, *, integer: bool = False, hi_included: bool = True, note: str = "", hi_label: str = ""
):
    """A number from `lo` to `hi` (`hi` itself only when `hi_included`); `hi_label` names `hi`
    where a bare number would puzzle ("n_ctx (1024)"), `note` says what the ends mean.

    >>> between("--top_p", 2, 0, 1, note="0 or 1 = off")
    Traceback (most recent call last):
    ...
    rapgen.errors.RapgenError: --top_p must be between 0 and 1 (0 or 1 = off), got 2
    >>> between("--sequence_length", 64, 2, 1024, integer=True)
    64
    """
    label = hi_label or hi
    fits = (
        (_is_int(value) if integer else _is_number(value))
        and lo <= value
        and (value <= hi if hi_included else value < hi)
    )
    if not fits:
        ends = [note] if note else []
        if not hi_included:
            ends.append(f"{label} excluded")
        detail = f" ({'; '.join(ends)})" if ends else ""
        raise RapgenError(f"{name} must be between {lo} and {label}{detail}, got {value!r}")
    return value


def one_of(name: str, value, choices: Sequence):
    """One of a fixed list of settings.

    >>> one_of("--distribute", "horovod", ("auto", "off", "mirrored", "tpu"))
    Traceback (most recent call last):
    ...
    rapgen.errors.RapgenError: --distribute must be one of auto, off, mirrored, tpu; got 'horovod'
    """
    if isinstance(value, bool) or value not in choices:
        raise RapgenError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def known_name(name: str, value, choices: Sequence[str]) -> str:
    """A name from a list, in any case (`--optimizer Adam`); returns it lower-cased.

    Why not `one_of`: the tests pin this wording for --optimizer and one_of's for settings such
    as --distribute, so the two phrasings stay, each for its own kind of value.

    >>> known_name("--optimizer", "lion", ("adam", "sgd"))
    Traceback (most recent call last):
    ...
    rapgen.errors.RapgenError: unknown --optimizer 'lion': choose adam, sgd
    """
    word = str(value).lower()
    if isinstance(value, bool) or word not in choices:
        raise RapgenError(f"unknown {name} {value!r}: choose {', '.join(choices)}")
    return word


def true_false(name: str, value, words: bool = True) -> bool:
    """True or False, also written as yes/no, on/off, 1/0 (as on the command line) when `words`.

    >>> true_false("--xla", "no")
    False
    """
    word = value if isinstance(value, bool) else bool_word(value) if words else None
    if word is None:
        raise RapgenError(f"{name} must be True or False; got {value!r}")
    return word


def true_false_auto(name: str, value):
    """True, False or "auto" (let rapgen decide from the machine and the model).

    >>> true_false_auto("--recompute", "auto")
    'auto'
    """
    if value == "auto" or isinstance(value, bool):
        return value
    raise RapgenError(f"{name} must be True, False or auto; got {value!r}")


# -- did you mean: the nearest known name to a mistyped one ---------------------------------


def closest(word: str, choices: Iterable[str]) -> Optional[str]:
    """The choice most like `word` (difflib), or None when none is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_name(what: str, word: str, choices: Sequence[str]) -> RapgenError:
    """`unknown command 'smaple': did you mean sample? (choose download, init, …)`."""
    near = closest(word, choices)
    hint = f": did you mean {near}?" if near else ""
    return RapgenError(f"unknown {what} {word!r}{hint} (choose {', '.join(choices)})")
