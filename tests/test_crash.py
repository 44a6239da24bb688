"""The crash assembler: one traceback (or fatal line) in, one structured Crash out."""

from __future__ import annotations

import pytest

from expwatch.rules.crashmatch import CrashMatcher
from expwatch.rules.loader import RulesError, parse_rules
from expwatch.watcher.crash import CrashAssembler, CrashLimits
from expwatch.watcher.crashtext import parse_message

SP = "/venv/lib/python3.11/site-packages"


def feed(lines: list[str], limits: CrashLimits | None = None, flush: bool = True):
    assembler = CrashAssembler(limits)
    out = []
    for n, line in enumerate(lines):
        out.extend(assembler.feed(line, n))
    if flush:
        out.extend(assembler.flush())
    return out


def test_a_chained_traceback_interleaved_with_other_threads_is_one_crash_outermost_last():
    crashes = feed([
        "2026-11-26 12:00:00,001 INFO eval: [3/10] item-0002 done",
        "Traceback (most recent call last):",
        '  File "/home/me/run_eval.py", line 188, in call_model',
        "    resp = client.chat.completions.create(**kw)",
        "2026-11-26 12:00:00,002 INFO eval: [4/10] item-0003 done",  # another worker, mid-traceback
        f'  File "{SP}/openai/_base_client.py", line 1047, in _request',
        "    raise self._make_status_error_from_response(err.response) from None",
        "openai.RateLimitError: Error code: 429 - {'error': {'message': 'Please try again in 20s.', 'code': 'rate_limit_exceeded'}}",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        "Traceback (most recent call last):",
        '  File "/home/me/run_eval.py", line 301, in <module>',
        "    main()",
        f'  File "{SP}/tenacity/__init__.py", line 421, in exc_check',
        "tenacity.RetryError: RetryError[<Future at 0x7f state=finished raised RateLimitError>]",
        "2026-11-26 12:00:01,000 INFO eval: shutting down",
    ], flush=False)
    assert len(crashes) == 1
    crash = crashes[0]
    assert [t for t, _ in crash.chain] == ["openai.RateLimitError", "tenacity.RetryError"]
    assert (crash.status, crash.error_code, crash.retry_after_s) == (429, "rate_limit_exceeded", 20.0)
    assert crash.cause() == "tenacity.RetryError 429 rate_limit_exceeded at run_eval.py:188 call_model"
    assert crash.before == ("2026-11-26 12:00:00,001 INFO eval: [3/10] item-0002 done",)
    assert not any("INFO" in line for line in crash.lines)


def test_a_traceback_still_open_is_emitted_on_flush_at_process_exit():
    assembler = CrashAssembler()
    assert assembler.feed("Traceback (most recent call last):") == []
    assert assembler.feed('  File "/home/me/x.py", line 1, in <module>') == []
    assert assembler.feed("KeyError: 'answer'") == []
    assert assembler.reading
    (crash,) = assembler.flush()
    assert crash.chain == (("KeyError", "'answer'"),) and not assembler.reading


def test_a_huge_traceback_is_cut_at_the_setting_and_counted():
    lines = ["Traceback (most recent call last):"]
    for i in range(20_000):
        lines += [f'  File "/home/me/deep.py", line {i}, in recurse', "    return recurse(n - 1)"]
    lines.append("RecursionError: maximum recursion depth exceeded")
    (crash,) = feed(lines, CrashLimits(max_lines=50))
    assert len(crash.lines) == 50 and crash.lines_dropped == len(lines) - 50
    assert crash.final == ("RecursionError", "maximum recursion depth exceeded")


def test_an_exception_group_lists_its_members_before_the_group():
    (crash,) = feed([
        "  + Exception Group Traceback (most recent call last):",
        '  |   File "/home/me/run.py", line 9, in <module>',
        "  |     asyncio.run(main())",
        "  | ExceptionGroup: unhandled errors in a TaskGroup (2 sub-exceptions)",
        "  +-+---------------- 1 ----------------",
        "    | Traceback (most recent call last):",
        '    |   File "/home/me/run.py", line 4, in ask',
        "    | openai.RateLimitError: Error code: 429 - {'error': {'code': 'rate_limit_exceeded'}}",
        "    +---------------- 2 ----------------",
        "    | Traceback (most recent call last):",
        '    |   File "/home/me/run.py", line 5, in ask',
        "    | ValueError: bad",
        "    +------------------------------------",
    ])
    assert [t for t, _ in crash.chain] == ["openai.RateLimitError", "ValueError", "ExceptionGroup"]
    assert crash.status == 429


@pytest.mark.parametrize("line, type_", [
    ("slurmstepd: error: Detected 1 oom_kill event in StepId=440575.0. Some of the step tasks have been OOM Killed.", "slurm.OutOfMemory"),
    ("slurmstepd: error: *** JOB 12 ON node1 CANCELLED AT 2026-11-26T14:00:12 DUE TO TIME LIMIT ***", "slurm.TimeLimit"),
    ("slurmstepd: error: *** JOB 12 ON node1 CANCELLED AT 2026-11-26T14:00:12 DUE TO PREEMPTION ***", "slurm.Preempted"),
    ("Killed", "signal.SIGKILL"),
    ("./run.sh: line 3: 48121 Segmentation fault      (core dumped) python eval.py", "signal.SIGSEGV"),
])
def test_non_python_crashes_are_crashes_with_a_pseudo_type(line, type_):
    (crash,) = feed(["INFO start", line], flush=False)
    assert crash.final[0] == type_


def test_a_line_that_merely_mentions_killed_is_not_a_crash():
    assert feed(["2026-11-26 12:00:00,001 INFO pool: Killed 3 idle workers"]) == []


def test_a_faulthandler_dump_is_one_crash_at_the_users_frame():
    (crash,) = feed(["Fatal Python error: Segmentation fault", "", "Current thread 0x00007f3e (most recent call first):",
                     f'  File "{SP}/torch/functional.py", line 9 in embedding', '  File "/home/me/run.py", line 150 in encode',
                     "", "Extension modules: torch._C (total: 1)", "2026-11-26 12:00:00 INFO restarted"], flush=False)
    assert crash.kind == "faulthandler" and crash.frame.short() == "run.py:150 encode"


@pytest.mark.parametrize("type_, message, status, hint", [
    ("google.genai.errors.ClientError", "429 RESOURCE_EXHAUSTED. {'error': {'code': 429, 'status': 'RESOURCE_EXHAUSTED'}}", 429, None),
    ("google.api_core.exceptions.ResourceExhausted", "429 Quota exceeded", 429, None),
    ("requests.exceptions.HTTPError", "429 Client Error: Too Many Requests for url: http://x", 429, None),
    ("httpx.HTTPStatusError", "Client error '429 Too Many Requests' for url 'http://x'", 429, None),
    ("aiohttp.client_exceptions.ClientResponseError", "429, message='Too Many Requests', url='http://x'", 429, None),
    ("openai.RateLimitError", "Error code: 429 - Please retry after 86400 seconds.", 429, 86400.0),
    ("openai.RateLimitError", "Error code: 429 - Please try again in 6m0s.", 429, 360.0),
    ("openai.RateLimitError", "Error code: 429 - Please try again in 120ms.", 429, 0.12),
    ("ValueError", "429 items expected", None, None),
    ("KeyError", "'item_429'", None, None),
])
def test_status_and_retry_hint_come_only_from_the_clients_structured_forms(type_, message, status, hint):
    parsed = parse_message([(type_, message)])
    assert parsed.status == status
    assert parsed.retry_after_s == (pytest.approx(hint) if hint else None)


RULES = """\
version: 1
rules:
  - name: LIMITED
    when:
      all:
        - exception: ['*.RateLimitError']
        - status: [429]
    actions: [restart]
  - name: QUOTA
    when:
      any:
        - error_code: [insufficient_quota]
        - message: 'exceeded your current quota'
    actions: [halt]
"""


def test_crash_conditions_combine_with_all_and_any_and_explain_why_not():
    ruleset = parse_rules(RULES, "r.yaml")
    (crash,) = feed(["Traceback (most recent call last):", '  File "/home/me/x.py", line 1, in f',
                     "openai.RateLimitError: Error code: 429 - {'error': {'message': 'You exceeded your current quota', 'code': 'insufficient_quota'}}"])
    matcher = CrashMatcher(ruleset)
    assert len(matcher.satisfied(crash)) == 4
    (crash2,) = feed(["Traceback (most recent call last):", '  File "/home/me/x.py", line 1, in f', "KeyError: 'item_429'"])
    assert matcher.satisfied(crash2) == ()
    why_not = {e.rule: [v.line() for v in e.verdicts] for e in matcher.explain(crash2)}
    assert why_not["LIMITED"][1] == "no  status [429] (crash: no status)"


@pytest.mark.parametrize("condition, message", [
    ("status: ['429']", "field 'when.status.0'"),
    ("message: '(unclosed'", "invalid regex"),
    ("exception: []", "field 'when.exception'"),
    ("error_cod: [x]", "unknown field 'error_cod' (did you mean 'error_code'?)"),
])
def test_rules_check_names_file_line_and_field_for_crash_conditions(condition, message):
    text = f"version: 1\nrules:\n  - name: X\n    when:\n      {condition}\n    actions: [halt]\n"
    with pytest.raises(RulesError) as info:
        parse_rules(text, "expwatch.rules.yaml")
    assert str(info.value).startswith("expwatch.rules.yaml:5:") and message in str(info.value)


def test_a_stray_traceback_header_does_not_hold_the_assembler_open():
    lines = ["Traceback (most recent call last):"] + [f"plain output {i}" for i in range(30)]
    assembler = CrashAssembler(CrashLimits(max_lines=10))
    for line in lines:
        assert assembler.feed(line) == []
    assert not assembler.reading


def test_an_exception_raised_while_handling_another_keeps_both_in_the_chain():
    (crash,) = feed(["Traceback (most recent call last):", '  File "/home/me/run.py", line 3, in f', "    return cache[key]",
                     "KeyError: 'item-7'", "", "During handling of the above exception, another exception occurred:", "",
                     "Traceback (most recent call last):", '  File "/home/me/run.py", line 5, in f', "    raise RuntimeError('no answer')",
                     "RuntimeError: no answer"])
    assert crash.chain == (("KeyError", "'item-7'"), ("RuntimeError", "no answer"))
    assert crash.frame.short() == "run.py:3 f"


def crash_evidence(message: str) -> dict:
    (crash,) = feed(["Traceback (most recent call last):", '  File "/home/me/run.py", line 9, in ask', f"openai.RateLimitError: {message}"])
    return {"crash": crash.to_json(), "cause": crash.cause(), "candidates": ["RATE_LIMIT"]}


def test_waits_obey_the_server_and_a_day_long_hint_halts_saying_when():
    from expwatch.rules.retry_hint import CrashPolicy, adjust

    policy = CrashPolicy(retry_wait_max_s=60, retry_halt_above_s=3600)
    plan = [{"name": "kill", "arg": None}, {"name": "wait", "arg": 5}, {"name": "restart", "arg": None}]
    _, evidence = adjust(plan, crash_evidence("Error code: 429 - Please try again in 20s."), policy, now=0.0)
    assert evidence["wait_at_least_s"] == 20
    _, evidence = adjust(plan, crash_evidence("Error code: 429 - Please try again in 30m0s."), policy, now=0.0)
    assert evidence["wait_at_least_s"] == 60  # bounded by the setting
    bare, _ = adjust([{"name": "restart", "arg": None}], crash_evidence("Error code: 429 - Please try again in 2s."), policy, now=0.0)
    assert bare == [{"name": "wait", "arg": 2.0}, {"name": "restart", "arg": None}]
    halted, evidence = adjust(plan, crash_evidence("Error code: 429 - Please retry after 86400 seconds."), policy, now=0.0)
    assert halted == [{"name": "halt", "arg": "quota exhausted: the server asks to retry after 86400 s (at 1970-01-02T00:00:00+00:00)"}]
    assert evidence["fix"] == halted[0]["arg"]
    assert adjust(plan, {"candidates": ["DEAD"]}, policy, now=0.0) == (plan, {"candidates": ["DEAD"]})


def test_the_item_a_crash_happened_on_is_read_by_the_settings_pattern_on_re2():
    from expwatch.rules.retry_hint import CrashPolicy, fields

    (crash,) = feed(["2026-11-26 12:00:00,001 INFO eval: [3/10] item=q-0017 task=QA",
                     "2026-11-26 12:00:00,002 INFO eval: asking about sample=clip_0417.mp4",
                     "Traceback (most recent call last):", '  File "/home/me/run.py", line 9, in ask',
                     "ZeroDivisionError: division by zero"])
    assert fields(crash, CrashPolicy.from_settings({}))["item"] == "q-0017"  # the shipped pattern, on the last line naming an item
    assert fields(crash, CrashPolicy.from_settings({"item_pattern": r"sample=(\S+)"}))["item"] == "clip_0417.mp4"
    # RE2: linear whatever the line holds. Python's re, which read this setting before, backtracks
    # exponentially here: 34 a's already take hours.
    (slow,) = feed(["a" * 5000 + "!", "Traceback (most recent call last):", "ValueError: x"])
    assert fields(slow, CrashPolicy.from_settings({"item_pattern": r"((a+)+)$"}))["item"] == "(unknown: the log did not name it)"
