"""What the HTTP client libraries print when a request fails, for the stand-in evaluation.

The stand-in must fail the way a script using the real ``openai`` client
fails, line for line, or the rules are tested against themselves. This module
holds those texts and the small client that prints them; ``fake_eval`` drives
it. Stdlib only, like ``fake_eval``.

What the real clients print, as read in their own source (openai 3.57.0 and httpx2 2.16.2
from PyPI, the versions tests/test_fake_eval_real_client.py runs side by side with this file):
- httpx2/_client.py: logger "httpx2", logger.info('HTTP Request: %s %s "%s %d %s"', method, url,
  http_version, status_code, reason_phrase) after every response.
- openai/_base_client.py: logger "openai._base_client"; _sleep_for_retry logs
  "Retrying request in %f seconds (retry %i of %s)"; _calculate_retry_timeout waits
  min(INITIAL_RETRY_DELAY * 2**n, MAX_RETRY_DELAY) * (1 - 0.25 * random()) without a retry-after
  header (openai/_constants.py: DEFAULT_MAX_RETRIES = 2, INITIAL_RETRY_DELAY = 0.5,
  MAX_RETRY_DELAY = 8.0); _make_status_error_from_response builds "Error code: 429" + " - " +
  the body's error.message, raised "from None" (no chained section); a connect failure is
  APIConnectionError("Connection error.") raised from httpx2.ConnectError, itself raised by
  httpx2/_transports/default.py map_httpcore_exceptions from httpcore2.ConnectError.
Older clients (openai 1.x with httpx) printed the whole body dict after "Error code: 429 - "
and "Retrying request to /chat/completions in ..."; the crash rules must know both.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

ENDPOINT = "http://localhost:8000/v1/chat/completions"
httpx_log = logging.getLogger("httpx2")
openai_log = logging.getLogger("openai._base_client")
CLIENT_LOGGERS = ("httpx2", "openai")  # what a quiet script silences
INITIAL_RETRY_DELAY, MAX_RETRY_DELAY = 0.5, 8.0


def _foreign_exception(module: str, name: str) -> type[Exception]:
    """Make an exception whose traceback reads ``module.name: ...`` without importing ``module``.

    Python prints the exception's ``__module__`` and ``__qualname__``, so the
    last traceback line matches what openai/httpcore/torch would print.
    """
    return type(name, (Exception,), {"__module__": module, "__qualname__": name})


RateLimitError = _foreign_exception("openai", "RateLimitError")
APIConnectionError = _foreign_exception("openai", "APIConnectionError")
HttpxConnectError = _foreign_exception("httpx2", "ConnectError")
HttpcoreConnectError = _foreign_exception("httpcore2", "ConnectError")
OutOfMemoryError = _foreign_exception("torch", "OutOfMemoryError")


def rate_limit_body(model: str) -> dict[str, Any]:
    """The JSON body of OpenAI's 429, in the form quoted from the API in
    github.com/rotemweiss57/gpt-newspaper/issues/10 ("Please try again in 26.604s. Visit ...")."""
    return {
        "error": {
            "message": f"Rate limit reached for {model} in organization org-xxx on tokens per min (TPM): "
            "Limit 30000, Used 30000, Requested 1200. Please try again in 2.4s. "
            "Visit https://platform.openai.com/account/rate-limits to learn more.",
            "type": "tokens",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


# PyTorch 2.5+'s whole message (torch.OutOfMemoryError), as quoted in
# github.com/pytorch/pytorch/issues/16417 (2024-03-13) and antgroup/echomimic_v2#115.
OOM_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. "
    "GPU 0 has a total capacity of 79.15 GiB of which 1.02 GiB is free. "
    "Including non-PyTorch memory, this process has 78.12 GiB memory in use. "
    "Of the allocated memory 76.50 GiB is allocated by PyTorch, and 1.10 GiB is reserved by PyTorch but unallocated. "
    "If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
    "to avoid fragmentation.  See documentation for Memory Management  "
    "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)


class FakeProxyClient:
    """Answers like a chat-completions endpoint behind a local proxy, and fails like one."""

    def __init__(self, model: str, delay: float, max_retries: int, seed: int) -> None:
        self.model = model
        self.delay = delay
        self.max_retries = max_retries
        self.jitter = random.Random(f"{seed}:retry")

    def create(self, predicted: str, fault: str | None, filtered: bool) -> dict[str, Any]:
        if fault == "rate_limit":
            self._rate_limit_storm()
        if fault == "proxy":
            self._connect()
        time.sleep(self.delay)
        if fault == "traceback":
            # The proxy passes an upstream error through with HTTP 200; parse_answer trips on it.
            return {"error": {"message": "upstream timeout", "type": "server_error"}}
        if filtered:
            return {"choices": [{"finish_reason": "content_filter", "message": {"content": None}}]}
        return {"choices": [{"finish_reason": "stop", "message": {"content": f"The answer is {predicted}"}}]}

    def _retry(self, retries_taken: int) -> None:
        backoff = min(INITIAL_RETRY_DELAY * 2.0 ** retries_taken, MAX_RETRY_DELAY) * (1 - 0.25 * self.jitter.random())
        openai_log.info("Retrying request in %f seconds (retry %i of %s)", backoff, retries_taken + 1, self.max_retries)
        time.sleep(0.1)  # the real client sleeps the backoff it announces; shortened for tests

    def _rate_limit_storm(self) -> None:
        for attempt in range(self.max_retries + 1):
            httpx_log.info('HTTP Request: %s %s "%s %d %s"', "POST", ENDPOINT, "HTTP/1.1", 429, "Too Many Requests")
            if attempt < self.max_retries:
                self._retry(attempt)
        raise RateLimitError(f"Error code: 429 - {rate_limit_body(self.model)['error']['message']}")

    def _connect(self) -> None:
        for attempt in range(self.max_retries):
            self._retry(attempt)
        try:
            try:
                raise HttpcoreConnectError("[Errno 111] Connection refused")
            except HttpcoreConnectError as exc:
                raise HttpxConnectError("[Errno 111] Connection refused") from exc
        except HttpxConnectError as exc:
            raise APIConnectionError("Connection error.") from exc


def forbidden_storm() -> None:
    """A proxy refusing requests: the openai client never retries a 403, the script retries each itself."""
    for _ in range(10):
        httpx_log.info('HTTP Request: %s %s "%s %d %s"', "POST", ENDPOINT, "HTTP/1.1", 403, "Forbidden")
        time.sleep(0.05)
