"""Untrusted text never reaches a terminal raw (issue 15, item 9: C0 and C1 control characters).

Log lines, ``null_reason`` values and result files are written by the run;
an escape sequence in them (C0 ``ESC [``, or the one-byte C1 forms U+009B CSI
and U+009D OSC that many terminals honour) could retitle the terminal, hide
lines or fake output. Each command that prints such text is driven for real
and its output searched for any control character but the newline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from conftest import write_until_matched
from expwatch.display.table import clean
from expwatch.terminal import terminal_text

HOSTILE = "\x1b]0;pwned\x07 \x9b2J \x9d0;title\x9c \x85 \x7f \u202e"
RULES = """\
version: 1
rules:
  - name: MARKED
    severity: info
    priority: 10
    when: {log: {pattern: 'MARK'}}
    actions: [{exec: {argv: ["true"]}}]
"""


def raw_controls(text: str) -> list[str]:
    return sorted({hex(ord(c)) for c in text if c != "\n" and (ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or c == "\u202e")})


def expwatch(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "expwatch", *args], capture_output=True, text=True, timeout=60)
    return proc.stdout + proc.stderr


def test_control_characters_from_logs_and_results_are_shown_escaped_everywhere(experiments):
    root = experiments.root
    (root / "expwatch.rules.yaml").write_text(RULES)
    result = root / "hostile.json"
    items = [{"id": f"q{i}", "response": None, "answer": "A", "correct": False, "null_reason": f"policy{HOSTILE}"} for i in range(3)]
    result.write_text(json.dumps({"per_item": items}))
    log = root / "hostile.log"
    log.write_text("")
    sleeper = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        assert subprocess.run([sys.executable, "-m", "expwatch", "adopt", "--pid", str(sleeper.pid), "--name", "hostile",
                               "--log", str(log), "--result", str(result), "--dir", str(root)], capture_output=True).returncode == 0
        outputs = drive(experiments, log, result)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert "MARK" in outputs["audit"] and "policy" in outputs["validate"]
    assert {name: raw_controls(text) for name, text in outputs.items() if raw_controls(text)} == {}
    # Shown, not dropped: a person can still see that the line held an escape.
    assert "\\x9b" in outputs["audit"] and "\\x1b" in outputs["validate"]


def drive(experiments, log, result) -> dict[str, str]:
    root = experiments.root
    watcher = experiments.start_watcher()
    write_until_matched(experiments, "hostile", log, f"MARK {HOSTILE}")
    time.sleep(0.3)
    return {
        "watch --plain": experiments.stop_watcher(watcher),
        "audit": expwatch("audit", str(root)),
        "status": expwatch("status", str(root)),
        "validate": expwatch("validate", str(result), "--log", str(log)),
        "rules test": expwatch("rules", "test", str(root / "expwatch.rules.yaml"), str(log)),
    }


def test_one_function_escapes_c0_c1_and_bidi_controls_and_keeps_the_rest():
    assert terminal_text("ok \x1b[31mred\x9b2J é 漢") == "ok \\x1b[31mred\\x9b2J é 漢"
    assert terminal_text("a\nb\tc", keep_newlines=True) == "a\nb\\x09c"
    assert terminal_text("a\nb") == "a\\x0ab"
    assert clean("x\x9dy") == terminal_text("x\x9dy")
