"""The HTTP retry policy shared by model downloads and the Genius client (rapgen.http)."""

import pytest

from rapgen.http import RetryPolicy, retryable


@pytest.mark.parametrize(
    "status, expected",
    [(500, True), (503, True), (408, True), (429, True), (404, False), (403, False), (401, False), (416, False)],
)
def test_what_is_retryable(status, expected):
    assert retryable(status) is expected


def test_backoff_doubles_up_to_its_cap_and_jitter_stays_in_its_band():
    plain = RetryPolicy(retries=5, first_wait=1.0, max_wait=30.0)
    assert [plain.wait_s(a) for a in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    jittery = RetryPolicy(retries=5, first_wait=2.0, max_wait=60.0, jitter=0.5)
    waits = [jittery.wait_s(1) for _ in range(200)]
    assert all(2.0 <= w <= 6.0 for w in waits) and len(set(waits)) > 1


def test_retry_after_replaces_the_backoff_and_a_long_one_is_refused():
    policy = RetryPolicy(retries=2, first_wait=1.0, max_retry_after=300.0)
    assert policy.server_wait_s("7", attempt=0) == 7.0
    assert policy.server_wait_s(None, attempt=1) == 2.0 and policy.server_wait_s("soon", attempt=0) == 1.0
    assert policy.too_long(301.0) and not policy.too_long(300.0)


def test_the_retrying_line_counts_every_try():
    line = RetryPolicy(retries=2).retry_line("vocab.bpe", "HTTP 503 Service Unavailable", 0.5, attempt=1)
    assert line == "vocab.bpe: HTTP 503 Service Unavailable; retrying in 0.5 s (attempt 3 of 3)"
