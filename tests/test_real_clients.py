"""Real client libraries crash against a local endpoint, under a real watcher, and are decided on first sight.

The script (tests/clients/openai_eval.py) uses the real ``openai`` client
and handles no API error, as many evaluation scripts do; the endpoint
(tests/endpoint.py) answers as the service does. The watcher sees only the
log: a traceback ending in ``openai.RateLimitError: Error code: 429 - {...}``
with httpx silenced, or with every request line at INFO.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import fast_rules, wait_for
from endpoint import ModelEndpoint, closed_port
from expwatch.cli import main as cli

CLIENT = Path(__file__).parent / "clients" / "openai_eval.py"
# Importing a client library can take seconds on a loaded machine: no STALE before the first line.
RULES = fast_rules(silent_s=60)


@pytest.fixture
def endpoint():
    with ModelEndpoint() as server:
        yield server


def launch(experiments, name: str, base_url: str, items: int, workers: int = 4, http_log: str = "quiet",
           *extra: str) -> Path:
    result = experiments.root / f"{name}.json"
    assert cli(["launch", "--name", name, "--log", str(experiments.root / f"{name}.log"), "--result", str(result),
                "--expected", str(items), "--dir", str(experiments.root), "--",
                sys.executable, str(CLIENT), "--items", str(items), "--output", str(result), "--workers", str(workers),
                "--base-url", base_url, "--max-retries", "0", "--http-log", http_log, *extra]) == 0
    return result


def first_classified(experiments, name: str) -> dict:
    return wait_for(lambda: experiments.audit(run=name, event="incident classified"), what=f"{name} classified")[0]


@pytest.mark.parametrize("http_log", ["quiet", "info"])
def test_a_429_crash_with_the_real_openai_client_waits_the_hint_and_recovers_with_half_the_workers(experiments, endpoint, http_log):
    (experiments.root / "expwatch.rules.yaml").write_text(RULES)
    watcher = experiments.start_watcher()
    launch(experiments, "gpt4o", endpoint.url("rate_limit:3:1.5"), items=8, workers=4, http_log=http_log)
    wait_for(lambda: experiments.manifest("gpt4o").completed_at, timeout=60, what="recovery")
    experiments.stop_watcher(watcher)

    first = experiments.audit(run="gpt4o", event="incident classified")[0]
    assert first["rule"] == "RATE_LIMIT" and first["decision"] == "act"
    # openai 3.x prints only the error message after the status, so the code is not in the log.
    assert first["cause"].startswith("openai.RateLimitError 429 at openai_eval.py:")
    waited = [r for r in experiments.audit(run="gpt4o", event="action finished") if r.get("action") == "wait"]
    assert waited and waited[0]["remaining_at_start"] >= 1.4  # the server's hint, not the quickened 0.3 s
    manifest = experiments.manifest("gpt4o")
    assert manifest.restarts == 1 and manifest.argv[manifest.argv.index("--workers") + 1] == "2"
    items = experiments.items("gpt4o")
    assert sorted(items) == [f"item-{i:04d}" for i in range(8)]  # every item exactly once


@pytest.mark.parametrize("retry_after_s", ["0.2", "6"])
def test_a_429_the_script_catches_logs_and_retries_is_no_crash_and_the_run_is_left_alone(experiments, endpoint, retry_after_s):
    """``log.exception`` prints the whole traceback of a caught RateLimitError: on first sight it is a 429 crash.
    The process goes on writing after it: at once, and exits 0; or after sleeping the server's 6 s hint, longer
    than crash.exit_wait_s, so the watcher waits the hint before it takes the silence for a hung crash."""
    (experiments.root / "expwatch.rules.yaml").write_text(RULES)
    watcher = experiments.start_watcher()
    launch(experiments, "retries", endpoint.url(f"rate_limit:1:{retry_after_s}"), 4, 1, "quiet", "--catch")
    wait_for(lambda: experiments.manifest("retries").completed_at, timeout=60, what="completion")
    survived = wait_for(lambda: experiments.audit(run="retries", event="exception survived"), what="the exception judged caught")
    experiments.stop_watcher(watcher)
    log = (experiments.root / "retries.log").read_text()
    assert "Traceback (most recent call last):" in log and "openai.RateLimitError: Error code: 429" in log
    assert survived[0]["cause"].startswith("openai.RateLimitError 429 at openai_eval.py:")
    assert [r["rule"] for r in experiments.audit(run="retries", event="incident classified")] == ["COMPLETE"]
    assert experiments.manifest("retries").restarts == 0
    assert sorted(experiments.items("retries")) == [f"item-{i:04d}" for i in range(4)]


def test_a_401_from_the_real_openai_client_halts_at_once_and_names_the_fix(experiments, endpoint, capsys):
    (experiments.root / "expwatch.rules.yaml").write_text(RULES)
    watcher = experiments.start_watcher()
    launch(experiments, "badkey", endpoint.url("unauthorized"), items=4)
    wait_for(lambda: experiments.manifest("badkey").halted, timeout=45, what="halt")
    experiments.stop_watcher(watcher)

    first = first_classified(experiments, "badkey")
    assert first["rule"] == "API_REJECTED"
    # openai 3.x logs no error code, so the fix names the exception's type.
    fix = "the API key was rejected (401 AuthenticationError): check OPENAI_API_KEY / the profile's env"
    manifest = experiments.manifest("badkey")
    assert manifest.halted.reason == fix and manifest.restarts == 0
    assert not [r for r in experiments.audit(run="badkey", event="action planned") if r["action"] == "restart"]
    bundle = experiments.layout.run_files_dir("badkey") / f"diagnosis-{manifest.halted.incident}.md"
    assert bundle.read_text().splitlines()[0] == fix
    # The operator sees the cause, not only "Traceback (most recent call last):".
    cause = "openai.AuthenticationError 401 at openai_eval.py:"
    assert first["cause"].startswith(cause)
    capsys.readouterr()
    assert cli(["status", str(experiments.root)]) == 0
    assert f"    cause: {cause}" in capsys.readouterr().out
    assert cli(["status", str(experiments.root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["last_cause"].startswith(cause)
    report = experiments.root / "report.html"
    assert cli(["report", str(experiments.root), "-o", str(report)]) == 0
    assert f"cause: <code>{cause}" in report.read_text()


def test_a_content_filter_crash_halts_naming_the_item(experiments, endpoint):
    (experiments.root / "expwatch.rules.yaml").write_text(RULES)
    watcher = experiments.start_watcher()
    launch(experiments, "filtered", endpoint.url("content_filter"), items=1, workers=1)
    wait_for(lambda: experiments.manifest("filtered").halted, timeout=45, what="halt")
    experiments.stop_watcher(watcher)
    assert first_classified(experiments, "filtered")["rule"] == "CONTENT_FILTER"
    assert experiments.manifest("filtered").halted.reason == (
        "the script does not catch content-policy refusals; item item-0000 triggered it")


def test_a_closed_port_is_proxy_down_on_first_sight(experiments):
    (experiments.root / "expwatch.rules.yaml").write_text(RULES)
    watcher = experiments.start_watcher()
    launch(experiments, "noproxy", f"http://127.0.0.1:{closed_port()}/v1", items=2, workers=1)
    first = first_classified(experiments, "noproxy")
    experiments.stop_watcher(watcher)
    assert first["rule"] == "PROXY_DOWN"
    assert first["cause"].startswith("openai.APIConnectionError")


CRASHER = Path(__file__).parent / "clients" / "client_crash.py"


@pytest.mark.parametrize("client, scenario, rule, cause", [
    ("anthropic", "overloaded", "RATE_LIMIT", "anthropic.OverloadedError 529"),
    ("genai", "gemini_quota", "RATE_LIMIT", "google.genai.errors.ClientError 429 RESOURCE_EXHAUSTED"),
    ("requests", "plain_429", "RATE_LIMIT", "requests.exceptions.HTTPError 429"),
    ("httpx", "plain_429", "RATE_LIMIT", "httpx.HTTPStatusError 429"),
    ("aiohttp", "plain_429", "RATE_LIMIT", "aiohttp.client_exceptions.ClientResponseError 429"),
    ("requests", "unauthorized", "API_REJECTED", "requests.exceptions.HTTPError 401"),
    ("aiohttp", None, "PROXY_DOWN", "aiohttp.client_exceptions.ClientConnectorError"),
    ("httpx", None, "PROXY_DOWN", "httpx.ConnectError"),
    ("genai", None, "PROXY_DOWN", "httpx2.ConnectError"),  # google-genai lets httpx2's error through unwrapped
])
def test_each_real_client_crash_is_classified_by_its_cause_on_first_sight(experiments, endpoint, client, scenario, rule, cause):
    (experiments.root / "expwatch.rules.yaml").write_text(RULES)
    watcher = experiments.start_watcher()
    base = endpoint.url(scenario) if scenario else f"http://127.0.0.1:{closed_port()}/v1"
    if client == "genai" and scenario:
        base = f"http://127.0.0.1:{endpoint.port}/{scenario}"
    result = experiments.root / f"{client}.json"
    assert cli(["launch", "--name", client, "--log", str(experiments.root / f"{client}.log"), "--result", str(result),
                "--expected", "2", "--dir", str(experiments.root), "--", sys.executable, str(CRASHER), "--client", client,
                "--base-url", base, "--items", "2", "--output", str(result)]) == 0
    first = first_classified(experiments, client)
    experiments.stop_watcher(watcher)
    assert first["rule"] == rule, (experiments.root / f"{client}.log").read_text()[-2000:]
    assert first["cause"].startswith(cause), first["cause"]
