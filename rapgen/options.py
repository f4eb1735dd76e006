"""Command-line arguments bound to a command's Python signature before the command runs.

fire reads what it knows, runs the command, and only then complains about the rest; rapgen
binds the whole command line to the function's signature first, with fire's own value
syntax (`8` -> 8, `1e-4` -> 0.0001, `[a,b]` -> a list) and fire's flag forms (`--top_k 40`,
`--top-k=40`, `-l 8` where the first letter is unique, `--noquiet`), so that a misspelled
flag, a flag without its value, a missing or extra argument is one `RapgenError` line, and
nothing has been imported, read or written yet. Each rule has one phrasing, here.

It also holds the value rules (`positive_int`, `zero_or_positive_int`, `between`, `one_of`,
`true_false_auto`…) that the commands and the Python API call before any work, so
`rapgen sample --top_k -1` and `rapgen.sample(top_k=-1)` say the same line.

>>> def sample(model=None, length=None, quiet=False): ...
>>> bind("rapgen sample", sample, ["--length", "8", "--quiet"])
([], {'length': 8, 'quiet': True})
>>> bind("rapgen sample", sample, ["--lenght", "8"])
Traceback (most recent call last):
...
rapgen.errors.RapgenError: unknown flag --lenght for `rapgen sample`: did you mean --length? (`rapgen sample --help` lists its flags)
"""

from __future__ import annotations

import difflib
import inspect
import numbers
import os
import re
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import RapgenError

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def closest(word: str, choices: Iterable[str]) -> Optional[str]:
    """The choice most like `word` (difflib), or None when none is close."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_name(what: str, word: str, choices: Sequence[str]) -> RapgenError:
    """`unknown command 'smaple': did you mean sample? (choose download, init, …)`."""
    near = closest(word, choices)
    hint = f": did you mean {near}?" if near else ""
    return RapgenError(f"unknown {what} {word!r}{hint} (choose {', '.join(choices)})")


def is_flag(token: str) -> bool:
    """fire's rule: `--x`, `-x`, `-xyz`; a negative number (`-1`, `-0.5`) is a value."""
    return token.startswith("--") or re.match(r"^-[a-zA-Z]", token) is not None


def _takes_bool(param: inspect.Parameter) -> bool:
    """True/False fits this parameter, so a bare `--flag` (True) makes sense."""
    return isinstance(param.default, bool) or "bool" in str(param.annotation)


def check_output_file(path, flag: str) -> str:
    """Refuse, before any work, an output path that cannot become a file: a folder, or one under a file.

    >>> check_output_file("data/rap.txt", "--out")
    'data/rap.txt'
    """
    path = str(path)
    if not path.strip():
        raise RapgenError(f"{flag} is empty: give a file path")
    if os.path.isdir(path):
        raise RapgenError(f"{flag} {path} is a folder: give a file path inside it, e.g. {os.path.join(path, 'out' + (os.path.splitext(path)[1] or '.txt'))}")
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
    """`--checkpoint PREFIX` must name an existing checkpoint (its .index file); None means the newest."""
    if checkpoint is not None and not os.path.exists(str(checkpoint) + ".index"):
        raise RapgenError(f"--checkpoint {checkpoint}: no such checkpoint ({checkpoint}.index does not exist); "
                          f"give a prefix such as checkpoints/run1/model-500")


# Value rules. Each rule has one phrasing, "<flag> must be <what it takes>, got <value>", so a
# value refused by `rapgen train` reads like one refused by `rapgen.sample(...)` or by the plan.
# `name` is what the user typed: `--top_k` from the command line and the Python API alike
# (the Python API takes the same names), or a bare name where no flag exists (gpu_check).
# Each rule returns the value it accepted, so a call reads `x = positive_int("--x", x)`.

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


def between(name: str, value, lo, hi, *, integer: bool = False, hi_included: bool = True, note: str = "",
            hi_label: str = ""):
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
    fits = (_is_int(value) if integer else _is_number(value)) and lo <= value and (
        value <= hi if hi_included else value < hi)
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
    word = value if isinstance(value, bool) else _bool_word(value) if words else None
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


def _only_bool(param: inspect.Parameter) -> bool:
    """A plain True/False option (its default is a bool)."""
    return isinstance(param.default, bool)


def _bool_word(text: str) -> Optional[bool]:
    word = str(text).strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def parse_value(text: str):
    """A command-line value as fire reads it: Python literals, else the text itself."""
    from fire.parser import DefaultParseValue

    return DefaultParseValue(text)


def _flag_name(key: str, typed: str, params: Dict[str, inspect.Parameter], bare: bool, label: str) -> Tuple[str, bool]:
    """(parameter name, negated) for the flag `--key` (typed as `typed`); raises for a flag the command lacks."""
    if key in params:
        return key, False
    if bare and key.startswith("no") and key[2:] in params and _takes_bool(params[key[2:]]):
        return key[2:], True  # fire's --noquiet
    if len(key) == 1:
        matches = [name for name in params if name[0] == key]
        if len(matches) == 1:
            return matches[0], False
        if matches:
            raise RapgenError(f"-{key} is ambiguous for `{label}`: write {' or '.join('--' + m for m in matches)}")
    near = closest(key, params)
    hint = f": did you mean --{near}?" if near else ""
    raise RapgenError(f"unknown flag {typed} for `{label}`{hint} (`{label} --help` lists its flags)")


def bind(label: str, fn: Callable, argv: Sequence[str], repeatable: Sequence[str] = ()) -> Tuple[List[object], Dict[str, object]]:
    """argv -> (positional values, keyword values) for `fn`, or a RapgenError naming the mistake.

    Every value is returned by name (the positional list is empty), so `fn(*args, **kwargs)`
    binds exactly what was checked.

    `label` is the command as typed (`rapgen collect csv`); flags in `repeatable` may be given
    several times and arrive as a list (`--where a --where b`).
    """
    params = {name: p for name, p in inspect.signature(fn).parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    positional_names = [n for n, p in params.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    given: Dict[str, object] = {}
    loose: List[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":  # everything after it is positional, even `-x`
            loose.extend(argv[i:])
            break
        if not is_flag(token):
            loose.append(token)
            continue
        key, equals, text = token.lstrip("-").partition("=")
        key = key.replace("-", "_")
        following = argv[i] if i < len(argv) else None
        bare = not equals and (following is None or is_flag(following))
        name, negated = _flag_name(key, token.partition("=")[0], params, bare, label)
        param = params[name]
        if equals:
            value = text
        elif following is not None and not is_flag(following):
            value = following  # as fire reads it: `--quiet in.txt` gives --quiet the value in.txt
            i += 1
        elif _takes_bool(param):
            value = not negated  # a bare --flag is True, --noflag False
        else:
            raise RapgenError(f"--{name} needs a value (--{name} VALUE or --{name}=VALUE)")
        value = _convert(name, param, value)
        if name in repeatable:
            given.setdefault(name, []).append(value)  # type: ignore[union-attr]
        elif name in given:
            raise RapgenError(f"--{name} is given twice ({given[name]!r} and {value!r}): give it once")
        else:
            given[name] = value
    # Positional values fill the positional parameters in order (as fire does); one given
    # both ways is a mistake, not a silent shift of every later value.
    for name in positional_names:
        if not loose:
            break
        value = _convert(name, params[name], loose.pop(0))
        if name in given:
            raise RapgenError(f"--{name} is given twice ({given[name]!r} and {value!r}): give it once")
        given[name] = value
    required = [n for n in positional_names if params[n].default is inspect.Parameter.empty]
    for name in required:
        if name not in given:
            usage = " ".join(n.upper() for n in required)
            raise RapgenError(f"`{label}` needs {name.upper()}: {label} {usage} [flags] (`{label} --help` says more)")
    if loose:
        takes = ", ".join(n.upper() for n in positional_names) or "no arguments, only --flags"
        raise RapgenError(f"unexpected argument {loose[0]!r} for `{label}` (it takes {takes})")
    return [], {n: given[n] for n in params if n in given}  # in the signature's order


def _convert(name: str, param: inspect.Parameter, value):
    """Text from the command line -> the value passed on; True/False options are checked here."""
    if isinstance(value, bool):
        return value
    if _only_bool(param):
        return true_false(f"--{name}", value)
    parsed = parse_value(value)
    if _takes_bool(param) and isinstance(parsed, str) and _bool_word(parsed) is not None and parsed.lower() in ("true", "false"):
        return parsed.lower() == "true"
    return parsed
