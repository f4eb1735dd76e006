"""User-facing errors.

A `RapgenError` is a mistake the user can fix (a wrong name, a missing file, a bad flag).
The command line prints its message as one line and exits non-zero, without a traceback;
anything else that escapes is a bug and keeps its traceback.
"""


class RapgenError(Exception):
    """A problem with the user's input, explained in one line with the fix."""
