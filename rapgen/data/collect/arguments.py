"""The arguments every lyrics source shares: artist lists, counts, `--where` conditions, the default output.

Each check raises `RapgenError` with one line naming the flag, so the command line and the Python
API phrase a mistake the same way.

>>> parse_names("Lil Tofu, MC Fjord"), parse_count("3", "--max_songs")
(['Lil Tofu', 'MC Fjord'], 3)
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Optional

from rapgen.checks import non_negative_int, non_negative_number, positive_int, positive_number
from rapgen.data.collect.clean import clean_name, safe_filename
from rapgen.errors import RapgenError

DATA_DIR = "data"


def parse_names(value, flag: str = "--artists") -> List[str]:
    """`"A,B"`, `"A;B"` (for names holding commas), `["A", "B"]` or `("A", "B")` -> `["A", "B"]`."""
    if value is None:
        return []
    if isinstance(value, bool):
        raise RapgenError(f'{flag} needs names, e.g. {flag} "Lil Tofu,MC Fjord"')
    if isinstance(value, (list, tuple, set)):
        items = [str(v) for v in value]
    else:
        text = str(value)
        items = text.split(";") if ";" in text else text.split(",")
    names, seen = [], set()
    for item in items:
        name = clean_name(item)
        if name and name.casefold() not in seen:
            seen.add(name.casefold())
            names.append(name)
    return names


def parse_count(value, flag: str, minimum: int = 1, allow_none: bool = True) -> Optional[int]:
    """A whole number given as `flag`: at least 1, or at least 0 with `minimum=0` (None stays
    None when `allow_none`). Digits as text ("3") count, as a notebook may pass them."""
    if value is None and allow_none:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    rule = non_negative_int if minimum == 0 else positive_int
    return rule(flag, value)


def parse_number(value, flag: str, positive: bool = False) -> float:
    """A number >= 0 given as `flag` (> 0 when `positive`); numbers as text ("2.5") count."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass  # the rule below names the text as given
    rule = positive_number if positive else non_negative_number
    return float(rule(flag, value))


_CONDITION_SPLIT = re.compile(r",\s*(?=[^,=|]+=)")


def parse_where(where) -> Dict[str, set]:
    """`["tag=rap|trap", "language=en"]` or `"tag=rap,language=en"` -> `{column: accepted values}`.

    >>> sorted(parse_where("tag=rap|Trap, language=en")["tag"])
    ['rap', 'trap']
    """
    if where is None:
        return {}
    # Each item may join several conditions by commas (`--where a=1,b=2 --where c=3`).
    items = [
        part
        for w in (where if isinstance(where, (list, tuple)) else [where])
        for part in _CONDITION_SPLIT.split(str(w))
    ]
    conditions: Dict[str, set] = {}
    for item in items:
        column, equals, value = item.partition("=")
        if not equals or not column.strip():
            raise RapgenError(f"--where expects COLUMN=VALUE (e.g. --where tag=rap), not {item!r}")
        conditions.setdefault(column.strip(), set()).update(v.strip().casefold() for v in value.split("|"))
    return conditions


def default_out(name: str) -> str:
    """`data/<name as a safe file name>.txt`, where a source writes when `--out` is not given."""
    return os.path.join(DATA_DIR, safe_filename(name) + ".txt")
