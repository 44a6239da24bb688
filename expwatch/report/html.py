"""A ``Report`` as one self-contained HTML page: inline CSS, inline JS, SVG drawn in the page.

Everything a person reads (facts, validation, incidents and their evidence)
is plain HTML written here, so the page still reads with scripts off; the
script only draws each run's timeline from the JSON embedded beside it.
Nothing is fetched: the page works from a laptop on a train.
"""

from __future__ import annotations

import html
import json
import re
from datetime import datetime
from importlib import resources
from typing import Any

from expwatch import __version__
from expwatch.audit.timeline import shorten
from expwatch.redact import redact_record, redact_text
from expwatch.report.gather import IncidentStory, Report, RunStory, epoch

_MARKER = re.compile(r"\{\{(TITLE|BODY|DATA)\}\}")
STEP_TONES = {"halt": "bad", "complete": "good", "restart": "info"}


def e(value: Any) -> str:
    return html.escape("" if value is None else redact_text(str(value)), quote=True)


def when(t: float | None, with_date: bool = False) -> str:
    if t is None:
        return "?"
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


def span_text(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def anchor(kind: str, name: str) -> str:
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9_-]", "_", name)


def step_text(step: dict[str, Any]) -> str:
    if step.get("event") == "action failed":
        return f"{step.get('action')}: FAILED: {step.get('error')}"
    extra = step.get("reason") or step.get("pid") or step.get("message") or step.get("seconds")
    return f"{step.get('action')}: {step.get('outcome')}" + (f" ({extra})" if extra not in (None, "") else "")


def step_tone(step: dict[str, Any]) -> str:
    return "bad" if step.get("event") == "action failed" else STEP_TONES.get(str(step.get("action")), "")


def incident_tone(inc: IncidentStory) -> str:
    halted = inc.outcome == "halted" or (inc.classified or {}).get("decision") == "halt"
    return "bad" if halted else "warn"


# ----- what the script draws ---------------------------------------------------------

def timeline_marks(run: RunStory) -> list[dict[str, Any]]:
    marks = []
    for inc in run.troubles():
        evidence = inc.evidence()
        decision = (inc.classified or {}).get("decision", "?")
        text = f"{inc.rule}: {'halt' if decision == 'halt' else 'act'} → {inc.outcome}" + (f"\n{shorten(evidence[0], 160)}" if evidence else "")
        marks.append({"t": inc.at, "lane": "incident", "label": inc.rule, "text": text, "tone": incident_tone(inc),
                      "href": "#" + anchor("inc", inc.id)})
    for inc in run.incidents.values():
        for step in inc.steps:
            marks.append({"t": epoch(step), "lane": "action", "label": step.get("action"), "text": shorten(step_text(step), 200),
                          "tone": step_tone(step), "href": None if inc.bookkeeping else "#" + anchor("inc", inc.id)})
    for record in run.records:
        event = record.get("event")
        if event == "process exited":
            how = f"killed by signal {record['signal']}" if record.get("signal") else f"exited {record.get('returncode')}"
            who = (f"job {record['job_id']} {record.get('job_state') or ''} on {record.get('node') or '?'}"
                   if record.get("job_id") else f"process {record.get('pid')}")
            marks.append({"t": epoch(record), "lane": "process", "label": "exit", "text": f"{who} {how}", "tone": "muted"})
        elif event in ("run resumed by hand", "run stopped by hand", "run resumed"):
            marks.append({"t": epoch(record), "lane": "action", "label": event.split()[1], "text": event, "tone": "info"})
    return [m for m in marks if m["t"] is not None]


def page_data(report: Report) -> dict[str, Any]:
    runs = []
    for index, run in enumerate(report.runs):
        span = run.span()
        runs.append({
            "index": index, "name": run.name, "state": run.state,
            "expected": run.manifest.expected if run.manifest else None,
            "t0": span[0] if span else None, "t1": span[1] if span else None,
            "progress": run.progress, "marks": timeline_marks(run),
        })
    return {"tzOffsetMin": round(datetime.now().astimezone().utcoffset().total_seconds() / 60),
            "sessions": report.sessions, "runs": runs}


def embedded_json(data: Any) -> str:
    # "</script>" or "<!--" inside a log line must not end the script element.
    return json.dumps(data, ensure_ascii=False, default=str).replace("<", "\\u003c")


# ----- what a person reads -------------------------------------------------------------

def facts_html(run: RunStory) -> str:
    m, status = run.manifest, run.status
    data = status.to_json() if status else {}
    items = []
    done, expected = data.get("done"), data.get("expected")
    if done is not None:
        items.append(f"<b>{e(done)}</b>/{e(expected if expected is not None else '?')} items")
    if data.get("accuracy") is not None:
        items.append(f"accuracy <b>{data['accuracy']:.3f}</b>")
    if data.get("null_count"):
        items.append(f"<b>{e(data['null_count'])}</b> nulls")
    if m is not None:
        items.append(f"<b>{m.restarts}</b> restart{'s' if m.restarts != 1 else ''}")
    if m is not None and m.job_id:
        where = f" on {data['node']}" if data.get("node") else ""
        items.append(f"SLURM job <b>{e(m.job_id)}</b> {e(data.get('slurm_state') or '')}{e(where)}")
    span = run.span()
    if span:
        items.append(f"{e(when(span[0], True))} → {e(when(span[1]))} ({e(span_text(span[1] - span[0]))})")
    if m is not None and m.halted:
        items.append(f"<span class='bad'>halted: {e(m.halted.reason)}</span>")
    return " · ".join(items)


def details_html(run: RunStory) -> str:
    m = run.manifest
    if m is None:
        return "<p class='muted'>No manifest any more (the run was removed); what follows is from the audit log.</p>"
    rows = [("command", " ".join(m.argv)), ("directory", m.cwd), ("log", m.log), ("result", m.result), ("profile", m.profile),
            ("runner", m.runner), ("SLURM job", m.job_id), ("sbatch options", " ".join(m.sbatch_args))]
    body = "".join(f"<tr><th>{e(k)}</th><td><code>{e(v)}</code></td></tr>" for k, v in rows if v)
    return f"<details class='run-details'><summary>Command and files</summary><table class='kv'>{body}</table></details>"


def _pct(value: Any) -> str:
    return f"{value * 100:.1f}%" if isinstance(value, (int, float)) else "-"


def validation_html(run: RunStory) -> str:
    v = run.validation
    if not v:
        return "<p class='muted'>No validation report yet (written when the run completes).</p>"
    issues = v.get("issues") or []
    verdict = ("<p class='verdict good'>No validation issues.</p>" if not issues else
               "<ul class='issues'>" + "".join(f"<li>{e(i)}</li>" for i in issues) + "</ul>")
    reasons = ", ".join(f"{e(k)}: {e(n)}" for k, n in sorted((v.get("null_reasons") or {}).items()))
    gap = v.get("acc_gap_points")
    cells = [
        ("raw accuracy", _pct(v.get("raw_acc"))), ("valid accuracy", _pct(v.get("valid_acc"))),
        ("nulls", f"{v.get('null_count', 0)} ({_pct(v.get('null_rate'))})" + (f" — {reasons}" if reasons else "")),
        ("items", f"{v.get('done')}/{v.get('expected') if v.get('expected') is not None else '?'}"),
        ("null gap", f"{gap:.1f} points" if isinstance(gap, (int, float)) else "-"),
    ]
    stats = "".join(f"<div class='stat'><span>{e(k)}</span><b>{e(val)}</b></div>" for k, val in cells)
    tasks = v.get("per_task") or {}
    table = ""
    if tasks:
        rows = "".join(f"<tr><td>{e(t)}</td><td>{e(d.get('n'))}</td><td>{_pct(d.get('acc'))}</td></tr>" for t, d in sorted(tasks.items()))
        table = f"<table class='tasks'><thead><tr><th>task</th><th>items</th><th>accuracy</th></tr></thead><tbody>{rows}</tbody></table>"
    source = f"<p class='muted small'>from <code>{e(run.validation_path)}</code></p>" if run.validation_path else ""
    return f"<div class='stats'>{stats}</div>{verdict}{table}{source}"


def incident_html(inc: IncidentStory) -> str:
    c = inc.classified or {}
    decision = "halt" if c.get("decision") == "halt" else "act" if c else "undecided"
    cands = ", ".join(f"{e(n)}" + (f" ×{k}" if k > 1 else "") for n, k in inc.candidates())
    evidence = "\n".join(inc.evidence())
    steps = "".join(f"<li class='tone-{step_tone(s)}'><time>{e(when(epoch(s)))}</time> {e(step_text(s))}</li>" for s in inc.steps)
    notes = "".join(f"<li class='note'><time>{e(when(epoch(n)))}</time> {e(n.get('event'))}"
                    + (f": {e(n.get('error'))}" if n.get("error") else "") + "</li>" for n in inc.notes)
    bundle = inc.bundle()
    reason = c.get("reason")
    return (
        f"<li class='incident tone-{incident_tone(inc)}' id='{anchor('inc', inc.id)}' data-rule='{e(inc.rule)}'>"
        f"<div class='inc-head'><time>{e(when(inc.at))}</time> <b class='rule'>{e(inc.rule)}</b>"
        f" <span class='decision'>{e(decision)}</span> → <span class='outcome'>{e(inc.outcome)}</span>"
        f" <code class='inc-id'>{e(inc.id)}</code></div>"
        + (f"<p class='reason'>{e(reason)}</p>" if reason else "")
        + (f"<p class='cause'>cause: <code>{e(c['cause'])}</code></p>" if c.get("cause") else "")
        + (f"<p class='cands'>matched: {cands}</p>" if cands else "")
        + (f"<pre class='evidence'>{e(evidence)}</pre>" if evidence else "")
        + (f"<ol class='steps'>{steps}{notes}</ol>" if steps or notes else "")
        + (f"<p class='bundle'>diagnosis bundle: <a href='file://{e(bundle)}'><code>{e(bundle)}</code></a></p>" if bundle else "")
        + "</li>"
    )


def run_html(index: int, run: RunStory) -> str:
    troubles = sorted(run.troubles(), key=lambda i: i.at or 0)
    incidents = ("<ol class='incidents'>" + "".join(incident_html(i) for i in troubles) + "</ol>") if troubles else \
        "<p class='muted'>No incidents.</p>"
    return (
        f"<section class='run' id='{anchor('run', run.name)}' data-run='{e(run.name)}' data-state='{e(run.state)}'>"
        f"<header><h2>{e(run.name)}</h2><span class='pill {e(run.state)}'>{e(run.state)}</span></header>"
        f"<p class='facts'>{facts_html(run)}</p>"
        f"<div class='timeline' data-index='{index}'><noscript>The timeline is drawn by a script.</noscript></div>"
        f"<h3>Validation</h3>{validation_html(run)}"
        f"<h3>Incidents <span class='count'>{len(troubles)}</span></h3>{incidents}"
        f"{details_html(run)}</section>"
    )


def summary_html(report: Report) -> str:
    states: dict[str, int] = {}
    for run in report.runs:
        states[run.state] = states.get(run.state, 0) + 1
    chips = "".join(f"<span class='pill {e(s)}'>{n} {e(s)}</span>" for s, n in sorted(states.items()))
    toc = "".join(
        f"<li><a href='#{anchor('run', r.name)}'>{e(r.name)}</a> <span class='pill small {e(r.state)}'>{e(r.state)}</span>"
        f" <span class='muted'>{len(r.troubles())} incident{'s' if len(r.troubles()) != 1 else ''}</span></li>"
        for r in report.runs
    )
    incidents = sum(len(r.troubles()) for r in report.runs)
    restarts = sum(r.manifest.restarts for r in report.runs if r.manifest)
    sessions = len(report.sessions)
    skipped = f" · {report.skipped_lines} unreadable audit line(s) skipped" if report.skipped_lines else ""
    return (
        f"<header class='top'><h1>expwatch report</h1><p class='dir'><code>{e(report.root)}</code></p>"
        f"<p class='muted'>generated {e(report.generated.astimezone().strftime('%Y-%m-%d %H:%M:%S %Z'))} by expwatch {e(__version__)}"
        f" · {sessions} watcher session{'s' if sessions != 1 else ''}{skipped}</p>"
        f"<div class='chips'>{chips}<span class='total'>{incidents} incidents · {restarts} restarts</span></div>"
        f"<nav><ol class='toc'>{toc}</ol></nav></header>"
    )


def render_html(report: Report) -> str:
    template = (resources.files("expwatch.report") / "template.html").read_text(encoding="utf-8")
    if report.runs:
        body = summary_html(report) + "".join(run_html(i, r) for i, r in enumerate(report.runs))
    else:
        body = summary_html(report) + "<p class='muted'>No runs under this directory yet.</p>"
    values = {"TITLE": e(f"expwatch report: {report.root.name}"), "BODY": body, "DATA": embedded_json(redact_record(page_data(report)))}
    # One pass, so text from logs that happens to contain a marker is never expanded.
    return _MARKER.sub(lambda m: values[m.group(1)], template)
