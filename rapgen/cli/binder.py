"""Command-line arguments bound to a command's Python signature before the command runs.

fire reads what it knows, runs the command, and only then complains about the rest; rapgen
binds the whole command line to the function's signature first, with fire's own value
syntax (`8` -> 8, `1e-4` -> 0.0001, `[a,b]` -> a list) and fire's flag forms (`--top_k 40`,
`--top-k=40`, `-l 8` where the first letter is unique, `--noquiet`), so that a misspelled
flag, a flag without its value, a missing or extra argument is one `RapgenError` line, and
nothing has been imported, read or written yet. Each rule has one phrasing, here.

The value rules (`positive_int`, `between`, `one_of`, `true_false`…) are `rapgen.checks`:
the binding here checks True/False flags with them, and the commands check the rest.

>>> def sample(model=None, length=None, quiet=False): ...
>>> bind("rapgen sample", sample, ["--length", "8", "--quiet"])
([], {'length': 8, 'quiet': True})
>>> bind("rapgen sample", sample, ["--lenght", "8"])
Traceback (most recent call last):
...
rapgen.errors.RapgenError: unknown flag --lenght for `rapgen sample`: did you mean --length? (`rapgen sample --help` lists its flags)
"""

from __future__ import annotations

import inspect
import re
from typing import Callable, Dict, List, Sequence, Tuple

from rapgen.checks import bool_word, closest, true_false
from rapgen.errors import RapgenError


def is_flag(token: str) -> bool:
    """fire's rule: `--x`, `-x`, `-xyz`; a negative number (`-1`, `-0.5`) is a value."""
    return token.startswith("--") or re.match(r"^-[a-zA-Z]", token) is not None


def _takes_bool(param: inspect.Parameter) -> bool:
    """True/False fits this parameter, so a bare `--flag` (True) makes sense."""
    return isinstance(param.default, bool) or "bool" in str(param.annotation)


def _only_bool(param: inspect.Parameter) -> bool:
    """A plain True/False option (its default is a bool)."""
    return isinstance(param.default, bool)


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


def bind(
    label: str, fn: Callable, argv: Sequence[str], repeatable: Sequence[str] = ()
) -> Tuple[List[object], Dict[str, object]]:
    """argv -> (positional values, keyword values) for `fn`, or a RapgenError naming the mistake.

    Every value is returned by name (the positional list is empty), so `fn(*args, **kwargs)`
    binds exactly what was checked.

    `label` is the command as typed (`rapgen collect csv`); flags in `repeatable` may be given
    several times and arrive as a list (`--where a --where b`).
    """
    params = {
        name: p
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
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
    if (
        _takes_bool(param)
        and isinstance(parsed, str)
        and bool_word(parsed) is not None
        and parsed.lower() in ("true", "false")
    ):
        return parsed.lower() == "true"
    return parsed
