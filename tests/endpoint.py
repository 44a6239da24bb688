"""A local model endpoint that fails the way the real services do (stdlib http.server, 127.0.0.1, random port).

The scenario is the first path segment, so one server serves every test:
``http://127.0.0.1:PORT/<scenario>/v1/chat/completions``. Bodies and headers
are the services' own error shapes (cited per scenario):

- ``ok``: an OpenAI chat completion.
- ``rate_limit:N:S``: the first N requests get OpenAI's 429 (``rate_limit_exceeded``,
  "Please try again in Ss", ``retry-after: S``), the rest succeed.
  Body: openai-python's documented 429 shape (issue https://github.com/Pythagora-io/gpt-pilot/pull/53).
- ``unauthorized``: OpenAI's 401 ``invalid_api_key`` (issue https://github.com/wandb/openui/issues/199).
- ``not_found``: OpenAI's 404 ``model_not_found`` (issue https://github.com/shobrook/wut/issues/14).
- ``content_filter``: Azure's 400 ``content_filter`` (issue https://github.com/openai/openai-python/issues/331).
- ``overloaded``: Anthropic's 529 ``overloaded_error`` (issue https://github.com/anthropics/anthropic-sdk-typescript/issues/616).
- ``gemini_quota``: the Gemini API's 429 ``RESOURCE_EXHAUSTED`` (issue https://github.com/googleapis/python-genai/issues/17).
- ``plain_429``: a bare 429 with ``retry-after: 1`` and a text body, as proxies and the Hub answer.
- ``slow:S``: answers after S seconds (read timeouts).
A GET (a profile's health probe, ``.../v1/models``) is answered whatever its
path: OpenAI's models list while ``healthy`` is true, else a bare 503 as a
proxy answers while its upstream is down; a test flips ``healthy`` to stage the outage.
A closed port is ``closed_port()``: bound, then released, so nothing listens.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ERRORS = {
    "unauthorized": (401, {"error": {"message": "Incorrect API key provided: sk-test*****1234. You can find your API key at https://platform.openai.com/account/api-keys.",
                                     "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}),
    "not_found": (404, {"error": {"message": "The model `gpt-4o` does not exist or you do not have access to it.",
                                  "type": "invalid_request_error", "param": None, "code": "model_not_found"}}),
    "content_filter": (400, {"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
                                                  "Please modify your prompt and retry.", "type": None, "param": "prompt", "code": "content_filter", "status": 400}}),
    "overloaded": (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    "gemini_quota": (429, {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}}),
    "plain_429": (429, {"detail": "Too Many Requests"}),
}


def completion(model: str, text: str) -> dict:
    return {"id": "chatcmpl-local", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}


class ModelEndpoint:
    def __init__(self):
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.healthy = True
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # the test's output stays readable
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                scenario = self.path.strip("/").split("/")[0]
                with endpoint._lock:
                    endpoint.requests[scenario] += 1
                    n = endpoint.requests[scenario]
                kind, *args = scenario.split(":")
                if kind == "rate_limit" and n <= int(args[0]):
                    seconds = args[1]
                    message = (f"Rate limit reached for gpt-4o in organization org-test on requests per min (RPM): Limit 3, Used 3, "
                               f"Requested 1. Please try again in {seconds}s. Visit https://platform.openai.com/account/rate-limits to learn more.")
                    self.answer(429, {"error": {"message": message, "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
                                {"retry-after": seconds, "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0"})
                    return
                if kind in ERRORS:
                    self.answer(*ERRORS[kind])
                    return
                if kind == "slow":
                    time.sleep(float(args[0]))
                prompt = body.get("messages", [{}])[-1].get("content", "")
                self.answer(200, completion(body.get("model", "gpt-4o"), "A" if "A" in prompt else "B"))

            def do_GET(self) -> None:
                if endpoint.healthy:
                    self.answer(200, {"object": "list", "data": [{"id": "gpt-4o", "object": "model", "owned_by": "system"}]})
                else:
                    self.answer(503, {"detail": "Service Unavailable"})

            def answer(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.port}/{scenario}/v1"

    def __enter__(self) -> "ModelEndpoint":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
