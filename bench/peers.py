"""The same workload against expwatch's peers: fail2ban and ``tail -F | grep``.

bench/latency.py measures expwatch; this module runs the very same writer
(bench/logwriter.py: N logs × ``rate`` lines/s, probe lines stamped with
their write time) against

* **fail2ban**: a private ``fail2ban-server`` (Debian's fail2ban package) in
  the foreground with its own config dir, socket, pidfile and database under
  the benchmark's temp dir, never the system's. One jail over the same logs
  (pyinotify backend, as the system package uses), a filter matching the probe
  line with the probe's stamp as the failure id (``<F-ID>``, so every probe is
  its own ticket) and ``maxretry = 1``, and an action that appends the id and
  ``date +%s.%N`` to a file. Latency = that time minus the stamp.
* **tail | grep**: ``tail -q -n0 -F LOGS | grep --line-buffered 'latency probe'``,
  its output read by this process, which stamps each line on arrival.
* **the CPython floor** (bench/floor.py): epoll, inotify, ``pread`` and
  expwatch's own prefilter per write and nothing else, over the same rules
  as the watcher; its output is stamped on arrival like grep's. What a
  Python watcher cannot go below on this machine.

CPU is (user + system) time of the tool's processes over the writer's run
(for fail2ban also the action shells it waited for, reported apart); RSS is
the largest sample of their sum. fail2ban's config keys follow its own
shipped ``jail.conf``/``fail2ban.conf`` (Debian's /etc/fail2ban).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from fleet import wait_for
from latency import PROBE_RULE

from expwatch.rules.loader import shipped_rules_text

PROBE = re.compile(r"latency probe run=(\S+) seq=(\d+) t=([\d.]+)")
WRITER = Path(__file__).with_name("logwriter.py")


@dataclass(frozen=True)
class PeerResult:
    tool: str
    runs: int
    probes: int
    seen: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_pct: float  # the tool's own processes
    cpu_children_pct: float  # plus the children it waited for (fail2ban's action shells)
    rss_mb: float
    version: str


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (as bench/latency.py)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.4999)))
    return sorted_values[rank - 1]


def available() -> dict[str, str]:
    """Which peers this machine can run, with the reason for each missing one."""
    missing = {}
    if not shutil.which("fail2ban-server"):
        missing["fail2ban"] = "fail2ban-server not found (apt-get install fail2ban; `make bench` does it as root)"
    if not (shutil.which("tail") and shutil.which("grep")):
        missing["tail|grep"] = "tail or grep not found"
    return missing


class _Sampler:
    """CPU time and peak summed RSS of a fixed set of processes, RSS sampled twice a second."""

    def __init__(self, roots: list[psutil.Process]):
        self._roots = roots
        self.rss_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def cpu(self) -> tuple[float, float]:
        own = children = 0.0
        for p in self._roots:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            own += t.user + t.system
            children += t.children_user + t.children_system
        return own, children

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            total = 0
            for p in self._roots:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.rss_max = max(self.rss_max, total)

    def __enter__(self) -> "_Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class _Arrivals:
    """Lines a peer prints, each stamped when this process reads it (a reader thread)."""

    def __init__(self, stream) -> None:
        self.lines: list[tuple[float, str]] = []
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            self.lines.append((time.time(), raw.decode("utf-8", "replace")))

    def latencies(self, probes: int, who: str) -> list[float]:
        """Each probe's arrival minus its stamp, in ms, once (after waiting up to 5 s for the last)."""
        def seen() -> dict[tuple[str, str], float]:
            first: dict[tuple[str, str], float] = {}
            for at, line in list(self.lines):
                if m := PROBE.search(line):
                    first.setdefault((m.group(1), m.group(2)), (at - float(m.group(3))) * 1000)
            return first

        try:
            wait_for(lambda: len(seen()) >= probes, 5, f"{who} to print every probe")
        except TimeoutError:
            pass
        return list(seen().values())

    def join(self) -> None:
        self._thread.join(timeout=5)


def _write(root: Path, logs: list[Path], rate: float, duration: float, samples: int, seed: int) -> dict:
    config = {"logs": [str(p) for p in logs], "rate": rate, "duration": duration,
              "probe_every": len(logs) * duration / samples, "seed": seed, "start_at": time.time() + 0.5}
    (root / "writer.json").write_text(json.dumps(config))
    writer = subprocess.run([sys.executable, str(WRITER), str(root / "writer.json")],
                            capture_output=True, text=True, timeout=duration + 60)
    if writer.returncode != 0:
        raise RuntimeError(f"log writer failed: {writer.stderr}")
    return json.loads(writer.stdout.strip().splitlines()[-1])


def _logs(root: Path, runs: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    logs = [root / f"r{i:03d}.log" for i in range(runs)]
    for log in logs:
        log.touch()
    return logs


def _result(tool: str, runs: int, report: dict, latencies: list[float], busy: tuple[float, float], wall: float,
            rss: int, version: str) -> PeerResult:
    latencies.sort()
    return PeerResult(tool, runs, report["probes"], len(latencies), percentile(latencies, 50), percentile(latencies, 99),
                      latencies[-1] if latencies else float("nan"), 100 * busy[0] / wall, 100 * (busy[0] + busy[1]) / wall,
                      rss / 2**20, version)


# ----- fail2ban ----------------------------------------------------------------------

FAIL2BAN_CONF = """[Definition]
loglevel = INFO
logtarget = {home}/fail2ban.log
syslogsocket = auto
socket = {home}/fail2ban.sock
pidfile = {home}/fail2ban.pid
dbfile = {home}/fail2ban.sqlite3
dbpurgeage = 1d
"""
JAIL_CONF = """[DEFAULT]
backend = pyinotify
usedns = no
maxretry = 1
findtime = 1d
bantime = 1d

[probe]
enabled = true
filter = expwatch-probe
action = record-time
logpath = {logs}
"""
# F-ID: the probe's own stamp, so every probe is a ticket of its own and its action says which one it was.
FILTER_CONF = r"""[Definition]
failregex = latency probe run=\S+ seq=\d+ t=<F-ID>[\d.]+</F-ID>
datepattern = {^LN-BEG}%%Y-%%m-%%d %%H:%%M:%%S(?:,%%f)?
"""
ACTION_CONF = """[Definition]
actionstart =
actionstop =
actioncheck =
actionban = echo "<fid> $(date +%%s.%%N)" >> {home}/banned.txt
actionunban =
"""


def fail2ban_version() -> str:
    out = subprocess.run(["fail2ban-server", "-V"], capture_output=True, text=True, timeout=30)
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def measure_fail2ban(workdir: Path, runs: int, rate: float, duration: float, samples: int, seed: int) -> PeerResult:
    root = workdir / f"fail2ban-{runs}"
    logs = _logs(root, runs)
    home = root / "f2b"
    for sub in ("filter.d", "action.d"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    (home / "fail2ban.conf").write_text(FAIL2BAN_CONF.format(home=home))
    (home / "jail.conf").write_text(JAIL_CONF.format(logs="\n          ".join(str(p) for p in logs)))
    (home / "filter.d" / "expwatch-probe.conf").write_text(FILTER_CONF)
    (home / "action.d" / "record-time.conf").write_text(ACTION_CONF.format(home=home))
    banned = home / "banned.txt"
    out = open(root / "fail2ban.out", "wb")
    server = subprocess.Popen(["fail2ban-server", "-f", "-x", "-c", str(home), "-s", str(home / "fail2ban.sock"),
                               "-p", str(home / "fail2ban.pid"), "--logtarget", str(home / "fail2ban.log")],
                              stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        log = home / "fail2ban.log"
        wait_for(lambda: server.poll() is not None or (log.exists() and "Jail 'probe' started" in log.read_text()),
                 60, "fail2ban's jail to start")
        if server.poll() is not None:
            raise RuntimeError(f"fail2ban-server exited with {server.returncode}; see {root / 'fail2ban.out'}")
        time.sleep(1.0)
        proc = psutil.Process(server.pid)
        with _Sampler([proc]) as sampler:
            cpu0, t0 = sampler.cpu(), time.monotonic()
            report = _write(root, logs, rate, duration, samples, seed)
            cpu1, t1 = sampler.cpu(), time.monotonic()
        try:
            wait_for(lambda: banned.exists() and len(banned.read_text().splitlines()) >= report["probes"], 10,
                     "fail2ban to act on every probe")
        except TimeoutError:
            pass  # reported as probes not seen
        latencies = []
        for line in banned.read_text().splitlines() if banned.exists() else []:
            stamp, _, acted = line.partition(" ")
            latencies.append((float(acted) - float(stamp)) * 1000)
        busy = (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])
        return _result("fail2ban", runs, report, latencies, busy, t1 - t0, sampler.rss_max, fail2ban_version())
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        out.close()


# ----- tail -F | grep ----------------------------------------------------------------


def measure_tail_grep(workdir: Path, runs: int, rate: float, duration: float, samples: int, seed: int) -> PeerResult:
    root = workdir / f"tailgrep-{runs}"
    logs = _logs(root, runs)
    tail = subprocess.Popen(["tail", "-q", "-n0", "-F", *map(str, logs)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    grep = subprocess.Popen(["grep", "--line-buffered", "latency probe"], stdin=tail.stdout, stdout=subprocess.PIPE)
    tail.stdout.close()
    arrivals = _Arrivals(grep.stdout)
    try:
        time.sleep(1.0)  # tail opens and watches every file
        with _Sampler([psutil.Process(tail.pid), psutil.Process(grep.pid)]) as sampler:
            cpu0, t0 = sampler.cpu(), time.monotonic()
            report = _write(root, logs, rate, duration, samples, seed)
            cpu1, t1 = sampler.cpu(), time.monotonic()
        latencies = arrivals.latencies(report["probes"], "grep")
        busy = (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])
        first = subprocess.run(["tail", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        version = first.replace("tail (", "").replace(")", "")  # "tail (GNU coreutils) 9.1" -> "GNU coreutils 9.1"
        return _result("tail|grep", runs, report, latencies, busy, t1 - t0, sampler.rss_max, version)
    finally:
        tail.kill()
        grep.kill()
        tail.wait()
        grep.wait()
        arrivals.join()


# ----- the CPython floor ---------------------------------------------------------------


def measure_floor(workdir: Path, runs: int, rate: float, duration: float, samples: int, seed: int) -> PeerResult:
    root = workdir / f"floor-{runs}"
    logs = _logs(root, runs)
    rules = root / "rules.yaml"
    rules.write_text(shipped_rules_text() + PROBE_RULE)  # the watcher's own (bench/latency.py)
    floor = subprocess.Popen([sys.executable, str(Path(__file__).with_name("floor.py")), str(rules), *map(str, logs)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if floor.stdout.readline() != b"ready\n":
            raise RuntimeError(f"bench/floor.py did not start: {floor.stderr.read().decode(errors='replace')}")
        arrivals = _Arrivals(floor.stdout)
        with _Sampler([psutil.Process(floor.pid)]) as sampler:
            cpu0, t0 = sampler.cpu(), time.monotonic()
            report = _write(root, logs, rate, duration, samples, seed)
            cpu1, t1 = sampler.cpu(), time.monotonic()
        latencies = arrivals.latencies(report["probes"], "the floor")
        busy = (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])
        return _result("CPython floor", runs, report, latencies, busy, t1 - t0, sampler.rss_max, f"Python {sys.version.split()[0]}")
    finally:
        floor.kill()
        floor.wait()
