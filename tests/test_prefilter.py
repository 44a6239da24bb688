"""The catch-up prefilter skips lines, never a line a rule could match."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from expwatch.rules.classify import LineClassifier
from expwatch.rules.loader import parse_rules, shipped_rules_text
from expwatch.rules.model import LogAtom, RatioAtom
from expwatch.rules.prefilter import Literal, LinePrefilter, hyperscan, required_literals
from expwatch.watcher.tail import LogTailer

ENGINES = ["re", pytest.param("hyperscan", marks=pytest.mark.skipif(hyperscan is None, reason="hyperscan not installed"))]


@pytest.mark.parametrize(
    "pattern, literals",
    [
        (r"\b429\b", {"429"}),
        (r"[Rr]ate limit (reached|exceeded)", {"ate limit "}),
        (r"^Traceback \(most recent call last\):", {"Traceback (most recent call last):"}),
        (r"(?:CUDA|cuda) \d", {"CUDA", "cuda"}),
        (r"(?:CUDA|cuda) out", {" out"}),  # as selective as the pair, and one literal
        (r"x(?:abc|de)+y", {"abc", "de"}),
        (r"(?i)timeout", {"meout"}),  # caseless i, k and s also match İ, K and ſ: they end a literal
        (r"(?i)deadlock", {"deadloc"}),
        (r"done(?i:LATER)", {"LATER"}),
        (r"a\nbcd", {"bcd"}),
    ],
)
def test_required_literals_are_read_off_the_pattern(pattern, literals):
    found = required_literals(pattern)
    assert found is not None and {lit.text for lit in found} == literals


@pytest.mark.parametrize("pattern", [r"\w+", r"(?:foo)?b?", r"[0-9]{3}", r"a|\d", r".*", r"(?i)sik"])
def test_patterns_without_a_required_literal_turn_the_prefilter_off(pattern):
    assert required_literals(pattern) is None
    assert LinePrefilter.build(["OutOfMemoryError", pattern]) is None


def test_only_i_k_and_s_have_non_ascii_caseless_matches_in_python_re():
    ascii_letter = re.compile(r"(?i)[a-z]")
    folded = {c for c in map(chr, range(128, 0x110000)) if ascii_letter.fullmatch(c)}
    assert folded and all(any(re.fullmatch(f"(?i){a}", c) for a in "iks") for c in folded)


def test_literals_that_contain_another_are_dropped():
    pf = LinePrefilter.build([r"OutOfMemoryError", r"torch\.cuda\.OutOfMemoryError", r"CUDA out of memory"])
    assert pf is not None and set(pf.literals) == {Literal("OutOfMemoryError"), Literal("CUDA out of memory")}
    pf = LinePrefilter.build([r"OutOfMemoryError", r"(?i)memory"])
    assert pf is not None and set(pf.literals) == {Literal("memory", caseless=True)}


EXTRA_RULES = """
  - name: CASELESS
    when: {log: {pattern: '(?i)deadlock detected'}}
    actions: [{alert: x}]
  - name: ANCHORED
    when: {log: {any_of: ['^step \\d+ nan$', 'é+ ünïcode', 'loss=nan\\r']}}
    actions: [{alert: x}]
  - name: RATIO
    when: {ratio: {numerator: 'cache hit', denominator: ['cache hit', 'cache miss'], below: 0.5}}
    actions: [{alert: x}]
"""

FRAGMENTS = [
    "INFO eval: [3/20] item-0003 task=EPM correct=True", 'HTTP Request: POST http://x "HTTP/1.1 200 OK"',
    'HTTP Request: POST http://x "HTTP/1.1 429 Too Many Requests"', "HTTP/1.1 42", "9 Too Many", "RateLimitError",
    "Rate limit reached", "rate limit exceeded", "ate limit", "Traceback (most recent call last):",
    "  Traceback (most recent call last):", "CUDA out of memory", "OutOfMemoryError", "Connection refused",
    '"HTTP/1.1 403 Forbidden"', "DEADLOCK DETECTED", "Deadlock detected", "deadlock detecte", "step 12 nan",
    "step 12 nan ", "éé ünïcode", "é ünïcod", "loss=nan", "cache hit", "cache miss", "cache", "\u212a",
    "\ufffd", "\t", " ", "429",
]
RAW = [b"\xff\xfe", b"\xc3", b"\xe2\x82", b"\r", b"\x00"]


def random_log(rng: random.Random, lines: int) -> bytes:
    out = []
    for _ in range(lines):
        parts = []
        for _ in range(rng.randrange(0, 5)):
            parts.append(rng.choice(RAW) if rng.random() < 0.1 else rng.choice(FRAGMENTS).encode())
        if rng.random() < 0.02:
            parts.append(b"x" * rng.randrange(100, 400))  # longer than max_line_bytes below: cut
        out.append(b"".join(parts) + (b"\r\n" if rng.random() < 0.2 else b"\n"))
    tail = b"" if rng.random() < 0.5 else rng.choice(FRAGMENTS).encode()  # an unfinished last line
    return b"".join(out) + tail


def read_all(path: Path, classifier: LineClassifier, filtered: bool, chunk: int) -> tuple[list, int]:
    tailer = LogTailer(path, max_line_bytes=160, read_chunk=chunk, max_batch_bytes=3000)
    hits, count = [], 0
    while True:
        for line in tailer.read_new(classifier.prefilter if filtered else None):
            found = classifier.classify(line.text)
            if found:
                hits.append((line.offset, line.text, found))
        count += tailer.lines_read
        if not tailer.more_pending:
            break
    return hits, count


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("seed", range(6))
def test_prefiltered_catch_up_finds_exactly_what_reading_every_line_finds(tmp_path, engine, seed):
    ruleset = parse_rules(shipped_rules_text() + EXTRA_RULES, "test.rules.yaml")
    classifier = LineClassifier(ruleset, use_hyperscan=engine == "hyperscan")
    assert classifier.prefilter is not None and classifier.prefilter.engine == engine
    rng = random.Random(seed)
    log = tmp_path / "history.log"
    log.write_bytes(random_log(rng, 3000))
    chunk = rng.choice([7, 64, 1000, 1 << 16])
    every, every_count = read_all(log, classifier, filtered=False, chunk=chunk)
    picked, picked_count = read_all(log, classifier, filtered=True, chunk=chunk)
    assert picked == every and picked_count == every_count
    assert len(every) > 100
    # The classifier's quick test agrees with trying every pattern on every line.
    plain = [re.compile(p) for p in ruleset_patterns(ruleset)]
    tailer = LogTailer(log, max_line_bytes=160)
    for line in tailer.read_new():
        assert bool(classifier.classify(line.text)) == any(rx.search(line.text) for rx in plain), line.text


def ruleset_patterns(ruleset) -> list[str]:
    out = []
    for atom in ruleset.all_atoms():
        if isinstance(atom, LogAtom):
            out += atom.patterns
        elif isinstance(atom, RatioAtom):
            out += [atom.numerator, *atom.denominator]
    return out
