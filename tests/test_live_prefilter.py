"""The crash-aware live prefilter gives a watcher the same crashes as reading every line (issue 16).

Live reads skip, in raw bytes, every line that neither holds a rule's
literal nor starts a crash; a crash's later lines and an incident's
evidence are read in full. These tests hold a real watcher, fed by a writer
process in separate writes, to what the crash assembler makes of the whole
file, ``before`` (the lines printed just before the crash) included.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from conftest import FAST_SETTINGS, fast_rules, wait_for
from fleet import Fleet

from expwatch.engine.persist import RunStatePersistence
from expwatch.engine.reading import history_end
from expwatch.engine.runs import RunTable, WatchedRun
from expwatch.manifest import RunManifest
from expwatch.rules.classify import LineClassifier
from expwatch.rules.facts import RunFacts
from expwatch.rules.loader import parse_rules, shipped_rules_text
from expwatch.rules.prefilter import LinePrefilter
from expwatch.settings import load_settings
from expwatch.state import StateStore
from expwatch.watcher.crash import STARTS, CrashAssembler, CrashLimits
from expwatch.watcher.tail import LogTailer

LIMITS = CrashLimits.from_settings(load_settings().crash)

# Each write is [text, seconds to sleep after it]: the watcher sees every write as its own read.
WRITER = r"""
import json, os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
with open(sys.argv[2]) as fh:
    writes = json.load(fh)
for text, pause in writes:
    os.write(fd, text.encode())
    time.sleep(pause)
"""

RATE_LIMITED = [
    '  File "/work/eval.py", line 88, in score',
    "    reply = client.chat.completions.create(**request)",
    '  File "/venv/lib/python3.11/site-packages/openai/_base_client.py", line 1037, in request',
    "    raise self._make_status_error_from_response(err.response) from None",
    "openai.RateLimitError: Error code: 429 - {'error': {'message': 'Rate limit reached', 'code': 'rate_limit_exceeded'}}",
]
HEADER = "Traceback (most recent call last):"


def ordinary(n: int) -> str:
    return f"2026-12-01 23:00:00,000 INFO eval: [{n}/90000] item-{n:06d} correct=True latency=0.41s\n"


def write(log: Path, writes: list[tuple[str, float]]) -> None:
    plan = log.with_name("writes.json")
    plan.write_text(json.dumps(writes))
    subprocess.run([sys.executable, "-c", WRITER, str(log), str(plan)], check=True, timeout=60)


def every_line_crashes(log: Path, flush: bool = False) -> list[dict]:
    """What the crash assembler makes of the whole file, every line fed: the reference."""
    assembler, crashes, offset = CrashAssembler(LIMITS), [], 0
    for raw in log.read_bytes().splitlines(keepends=True):
        crashes += assembler.feed(raw.rstrip(b"\n").decode(), offset)
        offset += len(raw)
    return [c.to_json() for c in crashes + (assembler.flush() if flush else [])]


def watched_crashes(fleet: Fleet, run: str, count: int) -> list[dict]:
    def crashes():
        found = [r["crash"] for r in fleet.audit.select("rule matched", run=run) if "crash" in r]
        return found if len(found) >= count else None
    return wait_for(crashes, what=f"{count} crash(es) of {run} matched")


def watch(tmp_path: Path) -> Fleet:
    # No STALE while a loaded machine starts the writer: only the crash may open an incident.
    fleet = Fleet(tmp_path / "exp", settings=FAST_SETTINGS, rules=fast_rules(silent_s=600))
    fleet.adopt_sleepers(["r1"])
    fleet.start_watcher("--dry-run")
    wait_for(lambda: fleet.audit.select("run discovered"), what="discovery")
    return fleet


def test_a_traceback_whose_first_line_comes_alone_is_assembled_whole_with_thread_lines_in_between(tmp_path):
    fleet = watch(tmp_path)
    log = fleet.root / "r1.log"
    try:
        rest = RATE_LIMITED[:2] + ["2026-12-01 23:00:01,000 INFO worker-3: [17/90000] item-000017 correct=True"] + RATE_LIMITED[2:]
        write(log, [("".join(ordinary(n) for n in range(300)), 0.3), (HEADER + "\n", 0.3),
                    ("\n".join(rest) + "\n", 0.1), ("2026-12-01 23:00:02,000 INFO eval: shutting down\n", 0.0)])
        got = watched_crashes(fleet, "r1", 1)
        assert got == every_line_crashes(log)
        assert got[0]["before"][-1] == ordinary(299).rstrip("\n")  # the last line printed before the crash
        assert "openai.RateLimitError" in got[0]["cause"]
    finally:
        fleet.cleanup()


def test_a_crash_after_a_long_run_of_skipped_lines_keeps_the_lines_printed_before_it(tmp_path):
    fleet = watch(tmp_path)
    log = fleet.root / "r1.log"
    try:
        # 60,000 skipped lines in 60 writes; the crash's first read starts with its header, so the
        # lines before it come from an earlier read.
        writes = [("".join(ordinary(n) for n in range(i * 1000, (i + 1) * 1000)), 0.0) for i in range(60)]
        writes[-1] = (writes[-1][0], 0.3)
        writes.append(("\n".join([HEADER, *RATE_LIMITED, "2026-12-01 23:00:02,000 INFO eval: after"]) + "\n", 0.0))
        write(log, writes)
        got = watched_crashes(fleet, "r1", 1)
        assert got == every_line_crashes(log)
        assert got[0]["before"] == [ordinary(n).rstrip("\n") for n in range(60000 - LIMITS.context_lines, 60000)]
    finally:
        fleet.cleanup()


def test_evidence_written_after_the_first_match_is_captured_across_reads(tmp_path):
    fleet = watch(tmp_path)
    log = fleet.root / "r1.log"
    try:
        after = [ordinary(n) for n in range(3)]
        write(log, [("".join(ordinary(n) for n in range(500)), 0.3), (HEADER + "\n", 0.05),
                    ("\n".join(RATE_LIMITED) + "\n", 0.05), ("".join(after), 0.0)])
        # The process ends with its crash; one that lived on writing would have caught it (Decider.carried_on).
        os.kill(fleet.manifest("r1").pid, signal.SIGKILL)
        classified = wait_for(lambda: fleet.audit.select("incident classified", run="r1"), what="the incident decided")
        assert classified[0]["rule"] == "RATE_LIMIT"
        assert classified[0]["captured_lines"] == 1 + len(RATE_LIMITED) + len(after)  # the header and every line after it
    finally:
        fleet.cleanup()


def test_prefiltered_reads_hand_the_crash_assembler_what_every_line_would(tmp_path):
    """Random logs written in random pieces: crashes, chains, faulthandler dumps, fatal lines, thread lines.

    Odd seeds read as after a write inotify saw alone: ``skip_quiet`` first,
    then ``read_new(appended=True)`` when it declines (engine/reading.py).
    """
    prefilter = LinePrefilter.build([r"HTTP/1\.1 429", STARTS.pattern])
    chained = [HEADER, *RATE_LIMITED, "", "During handling of the above exception, another exception occurred:", "",
               HEADER, '  File "/work/eval.py", line 9, in main', "KeyError: 'choices'"]
    fault = ["Fatal Python error: Segmentation fault", "", "Current thread 0x00007f3a (most recent call first):",
             '  File "/work/eval.py", line 5 in run']
    for seed in range(40):
        rng = random.Random(seed)
        lines: list[str] = []
        for n in range(300):
            pick = rng.random()
            if pick < 0.04:
                lines += chained if rng.random() < 0.5 else [HEADER, *RATE_LIMITED]
            elif pick < 0.05:
                lines += fault
            elif pick < 0.06:
                lines.append(rng.choice(["Killed", "Segmentation fault (core dumped)", "got HTTP/1.1 429 back"]))
            elif pick < 0.08:
                lines.append(f"2026-12-01 23:00:00,000 INFO worker-{n}: still going")
            else:
                lines.append(ordinary(n).rstrip("\n") + " " + "x" * rng.randrange(80))
        data = ("\n".join(lines) + "\n").encode()
        log = tmp_path / f"{seed}.log"
        log.touch()
        tailer, assembler, crashes = LogTailer(log, read_chunk=rng.choice([64, 4096])), CrashAssembler(LIMITS), []
        with open(log, "ab", buffering=0) as out:
            at = 0
            while at < len(data):
                step = rng.randrange(1, 400)
                out.write(data[at:at + step])
                at += step
                if seed % 2 and not assembler.reading and tailer.skip_quiet(prefilter, LIMITS.context_lines) is not None:
                    continue  # as quiet_lines reads: nothing worth a look was written
                while True:  # as expwatch/engine/reading.py reads
                    filtered = None if assembler.reading else prefilter
                    rewound = False
                    for index, line in enumerate(tailer.read_new(filtered, LIMITS.context_lines, appended=bool(seed % 2))):
                        crashes += assembler.feed(line.text, line.offset)
                        if filtered is not None and assembler.reading and (rewound := tailer.reread_after(index)):
                            break
                    if not tailer.more_pending and not rewound:
                        break
        crashes += assembler.flush()
        assert [c.to_json() for c in crashes] == every_line_crashes(log, flush=True), f"seed {seed}"
        assert os.path.getsize(log) == tailer.position.offset


def test_a_log_truncated_in_place_under_a_write_only_read_is_noticed(tmp_path):
    """A truncation is a write to inotify (IN_MODIFY): the quick read finds nothing new and looks the careful way."""
    prefilter = LinePrefilter.build([r"HTTP/1\.1 429"])
    log = tmp_path / "run.log"
    log.write_text("".join(ordinary(n) for n in range(50)))
    tailer = LogTailer(log)
    tailer.read_new(prefilter, 5)
    with open(log, "ab", buffering=0) as out:
        out.write(ordinary(50).encode())
        assert tailer.skip_quiet(prefilter, 5) == 1
        os.truncate(log, 0)
        out.write(b"after truncation: HTTP/1.1 429\n")
    assert tailer.skip_quiet(prefilter, 5) is None  # the offset is past the end: nothing consumed
    lines = tailer.read_new(prefilter, 5, appended=True)
    assert lines[-1].text == "after truncation: HTTP/1.1 429" and lines[-1].offset == 0  # after the 5 lines read before it
    assert tailer.drain_notes() == ["replaced (head changed)"]  # its first line is another: noticed before the read


NO_LITERAL_RULE = """
  - name: ANY_WORD_BROKE
    description: A pattern no required literal can be read off.
    severity: warning
    priority: 5
    when:
      log: {pattern: '[0-9]{3}'}
    actions: [{alert: broke}]
"""


def test_live_reads_skip_lines_only_when_every_rule_pattern_has_a_literal():
    shipped = LineClassifier(parse_rules(shipped_rules_text(), "rules.yaml"))
    live = {lit.text for lit in shipped.live_prefilter.literals}
    # Every line a rule literal lets through is let through live (a literal holding a shorter one is dropped).
    assert all(any(short in lit.text for short in live) for lit in shipped.prefilter.literals)
    assert {"Traceback (", "Fatal Python error", "slurmstepd", "*** ", "Killed", "Segmentation fault", "Aborted"} <= live
    assert LineClassifier(parse_rules(shipped_rules_text() + NO_LITERAL_RULE, "rules.yaml")).live_prefilter is None


CONNECTION_REFUSED = [  # requests' own wording (src/requests/adapters.py, HTTPAdapter.send), as tests/data/crashes has it
    HEADER,
    '  File "/work/eval.py", line 188, in call_model',
    "    resp = requests.post(url, json=body, timeout=10)",
    '  File "/venv/lib/python3.11/site-packages/requests/adapters.py", line 700, in send',
    "    raise ConnectionError(e, request=request)",
    "requests.exceptions.ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=8000): Max retries exceeded with url: "
    "/v1/chat/completions (Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f2c>: "
    "Failed to establish a new connection: [Errno 111] Connection refused'))",
]


def test_a_first_read_is_history_only_up_to_the_crash_the_log_ends_inside(tmp_path):
    """Found by the live corpus test: a run discovered while writing its traceback read its start as history."""
    log = tmp_path / "run.log"
    before = "".join(ordinary(n) for n in range(3))
    log.write_text(before + "\n".join(CONNECTION_REFUSED) + "\n")
    assert history_end(str(log), LIMITS, 1 << 20) == len(before)
    # Only the last tail_bytes are searched: a crash that starts before them is history, as before the fix.
    assert history_end(str(log), LIMITS, 200) == log.stat().st_size
    tailer = LogTailer(log)
    assert [line.text for line in tailer.read_new(until=len(before))] == [ordinary(n).rstrip("\n") for n in range(3)]
    assert [line.text for line in tailer.read_new()] == CONNECTION_REFUSED  # the news, read on from there
    with open(log, "a") as fh:
        fh.write(ordinary(3))
    assert history_end(str(log), LIMITS, 1 << 20) == log.stat().st_size  # a crash followed by other lines is over
    assert history_end(str(tmp_path / "absent.log"), LIMITS, 1 << 20) is None


def test_a_saved_read_position_stays_before_a_crash_still_being_read(tmp_path):
    """A watcher resumed inside a traceback would never see its start, and lose its cause."""
    log = tmp_path / "run.log"
    log.write_text(ordinary(0) + "\n".join(CONNECTION_REFUSED[:3]) + "\n")
    manifest = RunManifest(name="r1", argv=("python", "eval.py"), cwd=str(tmp_path), log=str(log))
    run = WatchedRun(manifest, LogTailer(log), RunFacts(parse_rules(shipped_rules_text(), "rules.yaml"), started_at=0.0), crashes=CrashAssembler(LIMITS))
    for line in run.tailer.read_new():
        run.crashes.feed(line.text, line.offset)
    assert run.crashes.reading and run.tailer.position.offset == log.stat().st_size
    assert RunStatePersistence.state_of(run)["position"]["offset"] == len(ordinary(0))
    with open(log, "a") as fh:
        fh.write("\n".join(CONNECTION_REFUSED[3:]) + "\n" + ordinary(1))
    for line in run.tailer.read_new():
        run.crashes.feed(line.text, line.offset)
    assert RunStatePersistence.state_of(run)["position"]["offset"] == log.stat().st_size  # the crash is over


def test_batched_saves_write_the_run_the_table_holds_not_an_older_copy(tmp_path):
    """A run released and watched again before the batch is written is another object: its newer position wins."""
    log = tmp_path / "run.log"
    log.write_text("".join(ordinary(n) for n in range(3)))
    manifest = RunManifest(name="r1", argv=("python", "eval.py"), cwd=str(tmp_path), log=str(log))
    rules = parse_rules(shipped_rules_text(), "rules.yaml")
    store = StateStore(tmp_path / "state.sqlite3")
    persist, runs = RunStatePersistence(store), RunTable()
    released = WatchedRun(manifest, LogTailer(log), RunFacts(rules, started_at=0.0), crashes=CrashAssembler(LIMITS))
    released.tailer.read_new()
    runs.add(released)
    assert persist.save_later(released)  # the first run waiting: the caller arms the timer
    assert not persist.save_later(released)
    runs.pop("r1")  # released (it saved itself then) ...
    with open(log, "a") as fh:
        fh.write(ordinary(3))
    revived = WatchedRun(manifest, LogTailer(log, persist.saved_position("r1")), RunFacts(rules, started_at=0.0),
                         crashes=CrashAssembler(LIMITS))
    revived.tailer.read_new()
    runs.add(revived)  # ... and watched again, further on
    persist.save_due(runs)
    assert persist.saved_position("r1").offset == log.stat().st_size
    persist.save_later(revived)
    runs.pop("r1")
    persist.save_due(runs)  # a run gone from the table is not written from the batch
    assert persist.saved_position("r1").offset == log.stat().st_size
    store.close()
