"""Colab glue that degrades gracefully elsewhere: where we run, and secrets.

`get_secret(name)` reads the environment variable `name` first; only inside a Colab notebook does it
then ask Colab's secrets panel (`google.colab.userdata`). Off Colab, or when the secret is missing
or the notebook was not given access to it, it returns None instead of raising, so callers can
say in one line what to set. Secrets are returned, never printed or stored.

(A `!rapgen …` shell cell runs outside the notebook's kernel and cannot reach the secrets panel:
call `rapgen.collect(...)` in a Python cell, or export the variable for the shell.)

>>> on_colab()                                 # doctest: +SKIP
False
>>> token = get_secret("GENIUS_ACCESS_TOKEN")  # None if it is set nowhere
"""

from __future__ import annotations

import os
import sys
from typing import Optional

# What google.colab.userdata raises (the set differs between Colab releases).
_USERDATA_ERRORS = ("SecretNotFoundError", "NotebookAccessError", "TimeoutException")


def on_colab() -> bool:
    """True inside a Google Colab runtime (its notebook kernel or a shell it started)."""
    return "google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG"))


def get_secret(name: str) -> Optional[str]:
    """The value of `$name`, else (inside a Colab notebook) the Colab secret `name`, else None.

    >>> get_secret("GENIUS_ACCESS_TOKEN")        # doctest: +SKIP
    '…'
    """
    value = os.environ.get(name)
    if value:
        return value
    if "google.colab" not in sys.modules:  # not in a Colab notebook kernel: no secrets panel to ask
        return None
    try:
        from google.colab import userdata
    except ImportError:
        return None
    errors = tuple(e for e in (getattr(userdata, n, None) for n in _USERDATA_ERRORS)
                   if isinstance(e, type) and issubclass(e, Exception))
    try:
        value = userdata.get(name)
    except errors:
        return None
    return value or None
