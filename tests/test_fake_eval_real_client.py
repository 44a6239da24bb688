"""The stand-in prints what the real openai client prints, checked against the real client.

A real script using the `openai` package calls a local HTTP endpoint that
answers every request with OpenAI's 429 (and, for a dead proxy, a port where
nothing listens). Its output and the stand-in's, in both logging modes, must
agree line for line once what differs by nature is masked: timestamps, the
jittered backoff, host and port, and the stack frames (the real ones run
through openai's own files, the stand-in's through fake_eval.py).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from expwatch.demo.fake_client import rate_limit_body

pytest.importorskip("openai", reason="the openai client is in the test extras (pip install -e '.[test]')")

MODEL = "gpt-4o"

# The script an ML researcher writes: logging.basicConfig at INFO; a quiet one silences the clients.
REAL_SCRIPT = """
import logging, sys
import openai
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
if sys.argv[2] == "quiet":
    for name in ("httpx2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-test-not-a-key")
client.chat.completions.create(model=sys.argv[3], messages=[{"role": "user", "content": "Which answer?"}])
"""


class RateLimited(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # what OpenAI and the proxies answer with

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps(rate_limit_body(MODEL)).encode()
        self.send_response(429)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), RateLimited)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("OPENAI_")}


def masked(output: str) -> list[str]:
    """The lines that must agree: no stack frames, no eval progress lines, volatile parts masked."""
    lines = []
    for line in output.splitlines():
        if line.startswith("  ") or " INFO eval: " in line:
            continue
        line = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", "TS ", line)
        line = re.sub(r"http://[^/\s]+/v1", "http://HOST/v1", line)
        lines.append(re.sub(r"in \d+\.\d{6} seconds", "in N seconds", line))
    return lines


def real_client(tmp_path: Path, url: str, mode: str) -> subprocess.CompletedProcess:
    script = tmp_path / "eval_real.py"
    script.write_text(REAL_SCRIPT)
    return subprocess.run([sys.executable, str(script), url, mode, MODEL], capture_output=True, text=True,
                          timeout=60, env=clean_env())


def stand_in(tmp_path: Path, fault: str, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "expwatch.demo.fake_eval", "--items", "2", "--delay", "0", "--model", MODEL,
         "--output", str(tmp_path / f"{fault}-{mode}.json"), "--fault", f"{fault}@0", "--http-log", mode],
        capture_output=True, text=True, timeout=60, env=clean_env())


@pytest.mark.parametrize("mode", ["verbose", "quiet"])
@pytest.mark.parametrize("fault", ["rate_limit", "proxy"])
def test_the_stand_in_prints_what_a_real_openai_script_prints(tmp_path, endpoint, fault, mode):
    real = real_client(tmp_path, endpoint if fault == "rate_limit" else closed_port_url(), mode)
    fake = stand_in(tmp_path, fault, mode)
    assert real.returncode == fake.returncode == 1
    assert real.stdout == fake.stdout == ""
    assert masked(fake.stderr) == masked(real.stderr)
    last = real.stderr.splitlines()[-1]
    assert last.startswith("openai.RateLimitError: Error code: 429 - Rate limit reached" if fault == "rate_limit"
                           else "openai.APIConnectionError: Connection error.")
    if mode == "quiet":
        assert real.stderr.startswith("Traceback (most recent call last):\n")
    else:
        assert any(" INFO openai._base_client: Retrying request in " in line for line in real.stderr.splitlines())
