"""Secrets never reach anything expwatch writes or prints (issue 15, item 8).

A run is launched with secret environment variables and secret argv flags,
and its script prints every kind of secret the redaction covers before it
crashes twice (so it is restarted, then halted with a diagnosis bundle and a
notification). Then every file expwatch wrote under the experiments folder
and every command's terminal output is searched for the planted values.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from conftest import fast_rules, wait_for
from expwatch.cli import main as cli
from expwatch.redact import redact_argv, redact_record, redact_text

# One planted value per kind; each is unique, so a hit names the leak.
ENV_SK = "sk-proj-ENVplanted0123456789abcdef"
ENV_PASSWORD = "envpasswordPLANTED42"
ARGV_SK = "sk-ARGVplanted0123456789abcdef"
ARGV_TOKEN = "argvtokenPLANTED42"
PRINTED = {
    "bearer": "BEARERplanted0123456789",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.c2lnbmF0dXJlUExBTlRFRA",
    "hf": "hf_PLANTEDplanted0123456789",
    "api_key": "APIKEYquotedPLANTED42",
    "x_api_key": "XAPIKEYheaderPLANTED42",
    "authorization": "AUTHbasicPLANTED42",
    "token": "TOKENassignPLANTED42",
    "sk": "sk-PRINTEDplanted0123456789abcdef",
}
SECRETS = [ENV_SK, ENV_PASSWORD, ARGV_SK, ARGV_TOKEN, *PRINTED.values()]

LEAKY_SCRIPT = f"""\
import os, sys, time
print("starting with", sys.argv, flush=True)
print("OPENAI_API_KEY=" + os.environ["OPENAI_API_KEY"], flush=True)
print("Authorization: Bearer {PRINTED['bearer']}", flush=True)
print("jwt {PRINTED['jwt']}", flush=True)
print("hub token {PRINTED['hf']}", flush=True)
print('config: api_key: "{PRINTED['api_key']}"', flush=True)
print("x-api-key: {PRINTED['x_api_key']}", flush=True)
print("Authorization: Basic {PRINTED['authorization']}", flush=True)
print("GET /v1?token={PRINTED['token']}", flush=True)
print("MY_PASSWORD=" + os.environ["MY_PASSWORD"], flush=True)
time.sleep(0.3)
raise RuntimeError("request failed with key {PRINTED['sk']}")
"""


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def test_planted_secrets_of_every_kind_reach_no_file_and_no_terminal(experiments, tmp_path):
    root = experiments.root
    (root / "expwatch.rules.yaml").write_text(fast_rules())
    recorder = tmp_path / "notify.py"
    notified = tmp_path / "notified.json"
    recorder.write_text(f"import json, os\nopen({str(notified)!r}, 'a').write(json.dumps(dict(os.environ)) + '\\n')\n")
    with (root / "expwatch.yaml").open("a") as fh:
        fh.write("notify: " + json.dumps({"argv": [sys.executable, str(recorder)], "on_halt": True}) + "\n")
    script = tmp_path / "leaky.py"
    script.write_text(LEAKY_SCRIPT)
    watcher = experiments.start_watcher()
    assert cli([
        "launch", "--name", "leaky", "--log", str(root / "leaky.log"), "--dir", str(root),
        "--env", f"OPENAI_API_KEY={ENV_SK}", "--env", f"MY_PASSWORD={ENV_PASSWORD}", "--",
        sys.executable, str(script), "--api-key", ARGV_SK, f"--token={ARGV_TOKEN}",
    ]) == 0
    wait_for(lambda: experiments.manifest("leaky").halted, timeout=40, what="leaky halted")
    wait_for(lambda: notified.exists(), timeout=15, what="notification")
    time.sleep(0.5)
    watcher_out = experiments.stop_watcher(watcher)

    # The log really carried them all, so the greps below are not vacuous.
    log_text = (root / "leaky.log").read_text()
    assert [s for s in SECRETS if s not in log_text] == []

    terminal = {"watcher": watcher_out}
    for args in (["status"], ["status", "--json"], ["audit"], ["audit", "--json"], ["report"], ["validate", str(root / "leaky.log")]):
        proc = subprocess.run([sys.executable, "-m", "expwatch", *args[:1], *(args[1:] if args[0] == "validate" else [str(root), *args[1:]])],
                              capture_output=True, text=True, timeout=60)
        terminal[" ".join(args)] = proc.stdout + proc.stderr
    assert {k: leaks(v) for k, v in terminal.items() if leaks(v)} == {}

    manifests = {p for p in experiments.layout.runs_dir.glob("*.json")}
    written = [p for p in root.rglob("*") if p.is_file() and p not in manifests and p.name != "leaky.log"]
    names = {p.name for p in written}
    assert {"audit.jsonl", "state.sqlite3", "report.html"} <= names
    assert any(n.startswith("diagnosis-") for n in names)
    found = {str(p.relative_to(root)): leaks(p.read_bytes().decode("utf-8", "replace")) for p in written}
    assert {k: v for k, v in found.items() if v} == {}
    # The notify command got the redacted incident, never a planted value from the log.
    sent = [json.loads(line) for line in notified.read_text().splitlines()]
    assert sent and all(not leaks(json.dumps({k: v for k, v in e.items() if k.startswith("EXPWATCH_")})) for e in sent)


def test_redaction_of_each_form_keeps_the_text_readable():
    assert redact_text("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert redact_text('api_key: "abcdef"') == 'api_key: "***"'
    assert redact_text("x-api-key: abcdef rest") == "x-api-key: *** rest"
    assert redact_text("KeyError: 'argv'") == "KeyError: 'argv'"
    assert redact_text("max_tokens: 512 tokens=9") == "max_tokens: 512 tokens=***"
    assert redact_text("run --api-key abc --workers 8") == "run --api-key *** --workers 8"
    assert redact_argv(["python", "eval.py", "--api-key", "abc", "--hf-token=xyz", "--workers", "8"]) == [
        "python", "eval.py", "--api-key", "***", "--hf-token=***", "--workers", "8"]
    record = redact_record({"event": "action planned", "argv": ["x", "--token", "t"], "env": {"HF_TOKEN": "v", "PATH": "/bin"},
                            "note": "uses sk-abcdefghijkl"})
    assert record == {"event": "action planned", "argv": ["x", "--token", "***"], "env": {"HF_TOKEN": "***", "PATH": "/bin"},
                      "note": "uses ***"}


# Pieces of what audit records hold (log lines, argv, errors, headers), secret and not, for random strings.
PIECES = [
    "2026-12-01 23:00:00,000 INFO eval: [41/500] item-0040 correct=True", "monkey=3", "AUTHOR=me", "max_tokens: 512",
    "KeyError: 'argv'", "api_key: 'x'", '"x-api-key": "abc"', "Authorization: Bearer abc.def", "bearer", "Basic",
    "--api-key", "--hf-token=abc", "--token", "-key", "zz", "sk-", "sk-abcdefgh12", "hf_0123456789abcdefXY", "hf_short",
    "eyJabcdefgh.ijklmnop.q", "token=", "TOKEN=1", "a-token=1", "x9APIKEY=v", "password :", "secret", " ", "\t", "=",
    ":", "'", '"', ";", "é", "\U0001F600", "HTTP/1.1 429 Too Many Requests", "Error code: 429 - {'error': {}}",
]


def test_the_no_secret_shortcut_never_skips_a_string_a_pass_would_change():
    """``any_secret`` is searched first and skips the five passes when it finds nothing: a superset or a leak."""
    import random

    from expwatch.redact import redactor

    r, rng = redactor(), random.Random(7)
    for _ in range(20000):
        text = "".join(rng.choice(PIECES) + rng.choice(["", " ", "=", ":", "\n"]) for _ in range(rng.randrange(1, 6)))
        assert r.text(text) == r.passes(text), text
    assert r.text("plain INFO line item-0001 correct=True") == "plain INFO line item-0001 correct=True"
