"""One retry policy for HTTP, shared by model downloads (`rapgen.model.download`) and the Genius
client (`rapgen.data.collect.genius`): which answers are worth another try, how long to wait
(exponential backoff, optional jitter, a server's `Retry-After`), the "retrying …" line, and a
few words for a request that got no answer at all. Also the rate limiter the Genius threads share.

Nothing here sends a request: the callers own their loops, and ask the policy what to do.

>>> policy = RetryPolicy(retries=2, first_wait=1.0, max_wait=30.0)
>>> retryable(503), retryable(404), policy.wait_s(0), policy.wait_s(1)
(True, False, 1.0, 2.0)
>>> policy.retry_line("vocab.bpe", "HTTP 503 Service Unavailable", 1.0, 0)
'vocab.bpe: HTTP 503 Service Unavailable; retrying in 1 s (attempt 2 of 3)'
"""

from __future__ import annotations

import dataclasses
import email.utils
import random
import socket
import threading
import time
from typing import Optional

# Answers another try may fix: the server is busy or failing, or asked us to slow down.
# Everything else (404, 403, 401, other 4xx) is the same on every try.
_RETRYABLE_BELOW_500 = frozenset({408, 429})


def retryable(status: int) -> bool:
    """True for an HTTP status worth another try: 408 (timeout), 429 (slow down) and 5xx.

    >>> retryable(429), retryable(500), retryable(403)
    (True, True, False)
    """
    return status >= 500 or status in _RETRYABLE_BELOW_500


def retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """A `Retry-After` header (seconds or an HTTP date) in seconds; None if absent or unreadable.

    >>> retry_after_seconds("2")
    2.0
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How many tries a request gets and the pauses between them.

    `retries` tries come after the first; the pause after failed try `attempt` (0 for the first)
    is `first_wait * 2 ** attempt` seconds, at most `max_wait`, times a random factor in
    `[1 - jitter, 1 + jitter]` (jitter keeps many threads from retrying in step). A `Retry-After`
    header replaces the computed pause; one longer than `max_retry_after` is not waited for.

    >>> RetryPolicy(retries=5, first_wait=1.0, max_wait=60.0).wait_s(10)
    60.0
    """

    retries: int = 5
    first_wait: float = 1.0
    max_wait: float = 60.0
    jitter: float = 0.0
    max_retry_after: float = 300.0

    @property
    def tries(self) -> int:
        """All tries, the first included."""
        return self.retries + 1

    def wait_s(self, attempt: int) -> float:
        """Seconds to pause after failed try number `attempt` (0 for the first)."""
        wait = min(self.max_wait, self.first_wait * 2**attempt)
        return wait * random.uniform(1.0 - self.jitter, 1.0 + self.jitter) if self.jitter else wait

    def server_wait_s(self, retry_after: Optional[str], attempt: int) -> float:
        """The pause a 429 (or 503) asks for in its `Retry-After`, else the backoff's."""
        asked = retry_after_seconds(retry_after)
        return self.wait_s(attempt) if asked is None else asked

    def too_long(self, seconds: float) -> bool:
        """A wait the server asked for that is better told to the user than waited out."""
        return seconds > self.max_retry_after

    def retry_line(self, what: str, problem: str, wait: float, attempt: int) -> str:
        """The line that says a retry is coming, after failed try number `attempt` (0 for the first)."""
        return f"{what}: {problem}; retrying in {wait:g} s (attempt {attempt + 2} of {self.tries})"


class RateLimiter:
    """At most `rate` requests per second across all threads (0: no limit), plus global pauses.
    Waiting ends early when the `interrupt` event is set.

    >>> limiter = RateLimiter(5.0)
    >>> limiter.wait()          # returns at once the first time, then spaces calls 0.2 s apart
    """

    def __init__(self, rate: float, interrupt: Optional[threading.Event] = None):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._interrupt = interrupt or threading.Event()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._interrupt.wait(start - now)

    def pause(self, seconds: float) -> None:
        """Nobody starts a request for `seconds` (a 429's Retry-After)."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


def _causes(error: BaseException) -> list:
    """`error` and what it wraps: requests wraps urllib3, which wraps the socket's own error."""
    found, todo = [], [error]
    while todo and len(found) < 32:
        e = todo.pop()
        if not isinstance(e, BaseException) or any(e is f for f in found):
            continue
        found.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None)]
        todo += [a for a in e.args if isinstance(a, BaseException)]
    return found


def no_answer(error: BaseException, timeout: float) -> str:
    """A few words for a request that got no answer at all, instead of urllib3's nested reprs."""
    import requests

    causes = _causes(error)
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "connection refused"
    if any(isinstance(c, socket.gaierror) or type(c).__name__ == "NameResolutionError" for c in causes):
        return "host name not found"
    if isinstance(error, requests.Timeout) or any(isinstance(c, TimeoutError) for c in causes):
        return f"no answer within {timeout:g} s"
    if any(isinstance(c, ConnectionResetError) for c in causes):
        return "connection reset"
    if any(isinstance(c, OSError) and c.strerror for c in causes):
        return next(c.strerror for c in causes if isinstance(c, OSError) and c.strerror).lower()
    return f"connection failed ({type(causes[-1]).__name__})"


def short(error: Exception) -> str:
    """An exception as one short line (urllib3's messages nest several reprs)."""
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."
