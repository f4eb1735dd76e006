"""Download a pretrained GPT-2 model: `rapgen download 355M` -> `models/355M/`.

The seven files of OpenAI's release are fetched from `<base>/<name>/<file>`, where `<base>` is
`--base_url`, else the `RAPGEN_MODEL_URL` environment variable, else OpenAI's public host.

How a download stays safe (docs/commands.md, "download", says more): only a 200 or 206 answer is
written; each file streams into `<file>.part`, resumes with a `Range` request, and is renamed
into place only once its size (the weights: 4 bytes a parameter of the fetched `hparams.json`)
and content are verified; `checkpoint` comes last and goes first, so a folder holding it is
complete; a finished model needs no network; each retry is one line, and a folder left without
any file is removed. `model.ckpt.meta` is optional (a 404 on it is no error).

What a complete model folder holds and each file's check live in `rapgen.model.release`; which
answers are retried, the backoff and the "retrying …" line in `rapgen.http`.

>>> download("124M", models_dir="models")                       # doctest: +SKIP
'models/124M'
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.parse

from rapgen.checks import non_negative_int, positive_number
from rapgen.errors import RapgenError
from rapgen.http import RetryPolicy, no_answer, retryable, short
from rapgen.model.hparams import DEFAULT_MODEL, HParams, canonical_model_name
from rapgen.model.release import CHECKS, FILES, MARKER, OPTIONAL, WEIGHTS, can_keep, file_size, is_complete

DEFAULT_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models"
ENV_BASE_URL = "RAPGEN_MODEL_URL"

CHUNK_BYTES = 1 << 18  # a dropped connection loses at most one chunk
RETRY_WAIT_S = 1.0  # first pause after an attempt that made no progress; doubles each time
MAX_RETRY_WAIT_S = 30.0

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


class _Retry(Exception):
    """An attempt failed in a way worth retrying (dropped connection, short body, 5xx).

    `host` is set when no answer came at all (refused, unknown host, timed out): the message then
    reads "could not connect to HOST (problem)"."""

    def __init__(self, problem: str, host: str | None = None, retry_after: str | None = None):
        super().__init__(f"could not connect to {host} ({problem})" if host else problem)
        self.problem = problem
        self.host = host
        self.retry_after = retry_after  # the server's Retry-After header, if it sent one


def download(
    model_name: str = DEFAULT_MODEL,
    models_dir: str = "models",
    base_url: str | None = None,
    quiet: bool = False,
    timeout: float = 60,
    retries: int = 5,
) -> str:
    """Fetch a released GPT-2 model into `models_dir/<name>` and return that directory.

    `model_name` is `124M`, `355M`, `774M` or `1558M` (`117M` and `345M`, the old names, work
    too and are stored under the new ones). `base_url` replaces OpenAI's host, as does the
    `RAPGEN_MODEL_URL` environment variable; the files are read from `<base>/<name>/<file>`.
    `timeout` is the seconds to wait for a connection or for the next bytes; `retries` is how
    many attempts in a row may fail without progress before giving up. Progress bars go to
    stderr unless `quiet`. Running it again finishes an interrupted download and does nothing
    for a complete one.

    >>> download("345M", models_dir="models", base_url="http://127.0.0.1:8000")  # doctest: +SKIP
    'models/355M'
    """
    import requests  # requests: off the CLI's fast path (a mistake is found without it)

    name = canonical_model_name(model_name)
    base = _base_url(base_url)
    non_negative_int("--retries", retries)
    positive_number("--timeout", timeout, unit="seconds")
    models_dir = os.fspath(models_dir) if isinstance(models_dir, os.PathLike) else str(models_dir)
    model_dir = os.path.join(models_dir, name)
    created = _new_folders(model_dir)  # removed again if the download leaves them empty
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as e:
        raise RapgenError(f"cannot create {model_dir} ({e.strerror}): choose another --models_dir") from None

    if is_complete(model_dir):
        _say(quiet, f"{name} is already complete in {model_dir}")
        return model_dir
    # Whatever is re-fetched below, the directory must not look complete meanwhile.
    _remove(os.path.join(model_dir, MARKER))

    fetcher = _Fetcher(requests.Session(), timeout=timeout, retries=retries, quiet=quiet)
    try:
        for filename in FILES:
            dest = os.path.join(model_dir, filename)
            url = f"{base}/{name}/{filename}"
            expected = None
            if filename == WEIGHTS:
                expected = 4 * HParams.load(model_dir).n_params()
            if can_keep(dest, filename, expected):
                _remove(dest + ".part")  # a leftover from an older, interrupted run
                _say(quiet, f"{filename}: already complete")
                continue
            fetcher.fetch(url, dest, expected_size=expected, optional=filename in OPTIONAL, check=CHECKS.get(filename))
    except BaseException:  # Ctrl-C included: an empty folder left behind would pass for a model
        _tidy(model_dir, created)
        raise
    finally:
        fetcher.session.close()
    return model_dir


def _new_folders(path: str) -> list:
    """The folders `os.makedirs(path)` would create, deepest first."""
    made = []
    path = os.path.abspath(path)
    while not os.path.exists(path):
        made.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return made


def _tidy(model_dir: str, created: list) -> None:
    """After a failed download: drop empty `.part` files, then the folders this download created
    if nothing is left in them (a folder holding received bytes stays, for the resume)."""
    try:
        names = os.listdir(model_dir)
    except OSError:
        return
    for name in names:
        path = os.path.join(model_dir, name)
        if name.endswith(".part") and file_size(path) == 0:
            _remove(path)
    for folder in created:
        try:
            os.rmdir(folder)
        except OSError:  # not empty (or not ours to remove): keep it and its parents
            break


def _base_url(base_url) -> str:
    base = base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    base = str(base).strip().rstrip("/")
    if not re.match(r"https?://[^/]", base):
        source = "--base_url" if base_url else ENV_BASE_URL
        raise RapgenError(f"{source} must be an http:// or https:// URL, got {base!r}")
    return base


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _parse_content_range(value):
    """`'bytes 5-9/10'` -> (5, 10); `'bytes */10'` -> (None, 10); unknown total -> None."""
    found = _CONTENT_RANGE.match(value or "")
    if not found:
        return None, None
    start = int(found.group(1)) if found.group(1) is not None else None
    total = int(found.group(3)) if found.group(3) != "*" else None
    return start, total


def _content_length(response):
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _Fetcher:
    """Streams one URL at a time into `<dest>.part`, with resume, retries and verification."""

    def __init__(self, session, *, timeout: float, retries: int, quiet: bool):
        self.session = session
        self.timeout = timeout
        self.retries = retries
        self.quiet = quiet
        self._progress = None  # (bytes received, Content-Length) of the body being streamed

    def fetch(self, url: str, dest: str, *, expected_size=None, optional=False, check=None) -> bool:
        """Download `url` to `dest`; False when an optional file is absent (404)."""
        part = dest + ".part"
        failures = 0
        while True:
            before = file_size(part) or 0
            if expected_size is not None and before > expected_size:
                _remove(part)  # larger than the file can be: not a prefix of it
                before = 0
            if expected_size is not None and before == expected_size:
                break  # a previous run received everything but was stopped before the rename
            try:
                outcome = self._attempt(url, part, before, expected_size)
            except _Retry as e:
                after = file_size(part) or 0
                failures = 0 if after > before else failures + 1
                if failures > self.retries:
                    raise RapgenError(self._give_up(url, dest, e, failures)) from None
                name = os.path.basename(dest)
                if failures:
                    # Read at each retry, not at import: tests shorten RETRY_WAIT_S.
                    policy = RetryPolicy(retries=self.retries, first_wait=RETRY_WAIT_S, max_wait=MAX_RETRY_WAIT_S)
                    wait = policy.server_wait_s(e.retry_after, failures - 1)
                    if policy.too_long(wait):
                        raise RapgenError(
                            f"{url}: the server asks to wait {wait:.0f} s ({e}): try again later, or "
                            f"use a mirror with --base_url or {ENV_BASE_URL}"
                        ) from None
                    _say(self.quiet, policy.retry_line(name, str(e), wait, failures - 1))
                    time.sleep(wait)
                else:
                    _say(self.quiet, f"{name}: {e}; resuming at byte {after:,}")
                continue
            if outcome == "missing":
                if optional:
                    _say(self.quiet, f"{os.path.basename(dest)}: not on the server (optional, skipped)")
                    return False
                raise RapgenError(
                    f"{url} was not found (HTTP 404): check the model name, or use a mirror that "
                    f"has it with --base_url or {ENV_BASE_URL}"
                )
            if outcome == "done":
                break
            # "restart": the server cannot continue the part, which is gone; start at zero.
            failures += 1
            if failures > self.retries:
                raise RapgenError(
                    f"{url} keeps answering ranges that do not continue the download: "
                    f"use a mirror with --base_url or {ENV_BASE_URL}"
                )
        self._finish(url, part, dest, expected_size, check)
        return True

    def _give_up(self, url: str, dest: str, error: _Retry, failures: int) -> str:
        """The one-line error after `failures` attempts in a row without progress."""
        folder = os.path.dirname(dest)
        received = any(file_size(os.path.join(folder, n)) for n in os.listdir(folder))
        mirror = f"use a mirror with --base_url or {ENV_BASE_URL}"
        resume = "; what was received is kept: run the same command again to resume" if received else ""
        if error.host:
            return (
                f"could not connect to {error.host} ({error.problem}; {failures} attempts): check your internet "
                f"connection, or {mirror}{resume}"
            )
        then = "run the same command again to resume, or " if received else "try again later, or "
        return f"giving up on {url} after {failures} attempts without progress ({error}); {then}{mirror}"

    def _attempt(self, url: str, part: str, start: int, expected_size) -> str:
        import requests  # requests: off the CLI's fast path

        headers = {"Accept-Encoding": "identity"}
        self._progress = None  # set once a body starts: a failure after that is not "no answer"
        if start:
            headers["Range"] = f"bytes={start}-"
        try:
            with self.session.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
                if r.status_code == 404:
                    return "missing"
                if r.status_code == 416 and start:
                    _, total = _parse_content_range(r.headers.get("Content-Range"))
                    if total == start:
                        return "done"
                    _remove(part)
                    return "restart"
                if retryable(r.status_code):
                    raise _Retry(f"HTTP {r.status_code} {r.reason}", retry_after=r.headers.get("Retry-After"))
                if r.status_code not in (200, 206):
                    raise RapgenError(
                        f"{url} answered HTTP {r.status_code} {r.reason}: use a mirror with "
                        f"--base_url or {ENV_BASE_URL}"
                    )
                length = _content_length(r)
                if r.status_code == 206:
                    offset, total = _parse_content_range(r.headers.get("Content-Range"))
                    if offset != start:
                        _remove(part)  # not the range asked for: start over
                        return "restart"
                    if total is None and length is not None:
                        total = start + length
                else:
                    offset, total = 0, length
                if expected_size is not None and total is not None and total != expected_size:
                    _remove(part)
                    raise RapgenError(
                        f"{url} is {total} bytes but hparams.json needs exactly {expected_size} "
                        "(4 bytes per parameter): the mirror serves a different model"
                    )
                self._progress = None
                received = self._stream(r, part, offset, total, length, os.path.basename(part[:-5]))
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            if self._progress is not None:  # the body had started: say how far it got
                got, expected = self._progress
                raise _Retry(
                    f"the body stopped after {got} of {expected or 'unknown'} bytes ({type(e).__name__})"
                ) from None
            raise _Retry(no_answer(e, self.timeout), host=urllib.parse.urlsplit(url).netloc) from None
        except requests.RequestException as e:
            raise RapgenError(f"cannot download {url}: {short(e)}") from None
        if expected_size is not None and offset + received > expected_size:
            _remove(part)
            raise RapgenError(
                f"{url} sent more than the {expected_size} bytes hparams.json needs: "
                "the mirror serves a different model"
            )
        if length is not None and received != length:
            raise _Retry(f"the body stopped after {received} of {length} bytes")  # urllib3 usually says first
        if expected_size is not None and offset + received != expected_size:
            raise _Retry(f"received {offset + received} of {expected_size} bytes")
        return "done"

    def _stream(self, response, part: str, offset: int, total, length, label: str) -> int:
        """Append the body to `part` (cut to `offset` first); returns the bytes received."""
        import requests  # requests and tqdm: off the CLI's fast path
        from tqdm import tqdm  # text bars: they work in a terminal, Colab and Jupyter alike

        received = 0
        self._progress = (0, length)
        try:
            with (
                open(part, "ab" if offset else "wb") as f,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=label,
                    disable=self.quiet,
                    leave=True,
                    file=sys.stderr,
                ) as bar,
            ):
                f.truncate(offset)
                for chunk in response.iter_content(CHUNK_BYTES):
                    if chunk:
                        f.write(chunk)
                        received += len(chunk)
                        self._progress = (received, length)
                        bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        except requests.RequestException:
            raise  # a network problem (requests' errors are OSErrors too): the caller retries
        except OSError as e:
            raise RapgenError(
                f"cannot write {part} ({e.strerror or e}): free some disk space or choose another --models_dir"
            ) from None
        return received

    def _finish(self, url: str, part: str, dest: str, expected_size, check) -> None:
        size = file_size(part) or 0
        if expected_size is not None and size != expected_size:
            _remove(part)
            raise RapgenError(f"{url} gave {size} bytes, but {expected_size} were expected")
        if check is not None:
            try:
                check(part)
            except (RapgenError, OSError) as e:
                _remove(part)
                raise RapgenError(
                    f"{url} is not a valid {os.path.basename(dest)} ({e}): use a mirror that "
                    f"serves OpenAI's files with --base_url or {ENV_BASE_URL}"
                ) from None
        os.replace(part, dest)
