"""``expwatch report``: one self-contained page, checked in a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import fast_rules, wait_for
from expwatch.cli import main as cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
EVIL = 'EVIL </script><script>document.title="pwned"</script><img src=x onerror="document.title=1">'


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
         "--window-size=1100,1600", *args, page.as_uri()],
        capture_output=True, text=True, timeout=60,
    )


class Elements(HTMLParser):
    """Every start tag of the rendered DOM with its attributes, and the page's text."""

    def __init__(self, markup: str):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, **want: str) -> list[dict[str, str]]:
        out = []
        for name, attrs in self.tags:
            if name != tag:
                continue
            if all((w in attrs.get(k.rstrip("_"), "").split()) if k.endswith("_") else attrs.get(k) == w for k, w in want.items()):
                out.append(attrs)
        return out


@pytest.fixture
def watched_night(experiments):
    """A halted code bug, a rate limit healed by a restart, a healthy run with one log line crafted to break HTML."""
    (experiments.root / "expwatch.yaml").write_text((experiments.root / "expwatch.yaml").read_text() + "audit: {progress_every_s: 0.2}\n")
    rules = fast_rules().replace("rules:\n", "rules:\n  - {name: EVIL_LINE, severity: info, when: {log: {pattern: 'EVIL'}}, actions: [{alert: odd line}]}\n", 1)
    (experiments.root / "expwatch.rules.yaml").write_text(rules)
    watcher = experiments.start_watcher()
    experiments.launch("code-bug", "--fault", "traceback:always@5")
    experiments.launch("rate-limited", "--fault", "rate_limit@4", items=30, delay=0.03)
    experiments.launch("healthy", items=40, delay=0.04)
    wait_for(lambda: experiments.audit(run="healthy", event="run discovered"), what="the healthy run watched")
    with (experiments.root / "healthy.log").open("a") as fh:
        fh.write(EVIL + "\n")
    wait_for(lambda: experiments.manifest("code-bug").halted, timeout=30, what="code-bug halted")
    for name in ("rate-limited", "healthy"):
        wait_for(lambda: experiments.manifest(name).completed_at, timeout=30, what=f"{name} completed")
    experiments.wait_settled("code-bug", "rate-limited", "healthy")
    experiments.stop_watcher(watcher)
    return experiments


@needs_chromium
def test_the_report_shows_each_runs_timeline_incidents_and_validation_in_a_real_browser(watched_night, tmp_path, capsys):
    experiments = watched_night
    assert cli(["report", str(experiments.root)]) == 0
    page = experiments.layout.home / "report.html"
    assert f"wrote {page} (3 runs, " in capsys.readouterr().out
    source = page.read_text()
    # Self-contained: nothing to fetch, no external script, style sheet or image.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", source)
    assert "<link" not in source

    done = chromium(tmp_path, page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = Elements(done.stdout)
    text = " ".join(dom.text)

    runs = {s["data-run"]: s["data-state"] for s in dom.find("section", class_="run")}
    assert runs == {"code-bug": "HALTED", "rate-limited": "COMPLETE", "healthy": "COMPLETE"}
    # The timelines are built by the page's script: present in the DOM only if it ran without error.
    assert len(dom.find("svg", class_="tl")) == 3
    assert len(dom.find("path", class_="progress")) == 3
    marks = [(m["data-label"], m["class"]) for m in dom.find("g", class_="mark")]
    assert ("TRACEBACK", "mark lane-incident tone-bad") in marks and ("TRACEBACK", "mark lane-incident tone-warn") in marks
    assert ("RATE_LIMIT", "mark lane-incident tone-warn") in marks
    assert {"restart", "halt", "complete", "exit"} <= {label for label, _ in marks}
    # Incidents with their evidence, linked from the marks.
    rules = [li["data-rule"] for li in dom.find("li", class_="incident")]
    assert sorted(rules) == ["EVIL_LINE", "RATE_LIMIT", "TRACEBACK", "TRACEBACK"]
    assert "Traceback (most recent call last):" in text and "429" in text
    assert "TRACEBACK fired 2 times in a row with no progress" in text and "diagnosis-" in text
    # The final validation summary of each completed run.
    assert text.count("No validation issues.") + text.count("validation issue") >= 2 and "raw accuracy" in text
    # A log line is text, never markup: no injected script ran, no element was added.
    assert EVIL in text
    assert len(dom.find("script")) == 2 and not dom.find("img")
    assert "pwned" not in done.stdout.split("</title>")[0]

    shot = tmp_path / "report.png"
    done = chromium(tmp_path, page, f"--screenshot={shot}")
    assert done.returncode == 0 and shot.stat().st_size > 20_000


def test_report_writes_where_asked_and_refuses_a_directory_with_nothing_to_report(experiments, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(["report", str(empty)]) == 2
    assert "nothing to report" in capsys.readouterr().err
    experiments.launch("quick", items=3, delay=0.01)
    out = tmp_path / "elsewhere" / "night.html"
    assert cli(["report", str(experiments.root), "-o", str(out)]) == 0
    page = out.read_text()
    assert "data-run='quick'" in page and 'id="expwatch-data"' in page
