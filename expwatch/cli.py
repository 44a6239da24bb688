"""The ``expwatch`` command line: one argparse tree, one module per command.

Each module in ``expwatch.commands`` exposes ``register(subparsers)``, which
adds its parser and sets ``func`` to a callable taking the parsed namespace
and returning the exit code. A command imports only its own module:
building the whole tree took 0.43-0.54 s, the status command's part alone
0.23 s (BENCHMARKS.md, issue 16); ``--help`` and shell completion build the
whole tree.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from expwatch import __version__

# Every command name, with the module that registers it (tests/test_cli_niceties.py holds the two equal).
COMMANDS = {
    "watch": "expwatch.commands.watch",
    "launch": "expwatch.commands.launch",
    "adopt": "expwatch.commands.adopt",
    "monitor": "expwatch.commands.monitor",
    "status": "expwatch.commands.status",
    "resume": "expwatch.commands.control",
    "stop": "expwatch.commands.control",
    "rules": "expwatch.commands.rules",
    "audit": "expwatch.commands.audit",
    "validate": "expwatch.commands.validate",
    "drift": "expwatch.commands.drift",
    "noise": "expwatch.commands.noise",
    "verdict": "expwatch.commands.noise",
    "pipeline": "expwatch.commands.pipeline",
    "report": "expwatch.commands.report",
    "completion": "expwatch.commands.completion",
    "demo": "expwatch.commands.demo",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command tree, or with ``command`` only the part that runs it."""
    parser = argparse.ArgumentParser(
        prog="expwatch",
        description="Babysit long ML evaluation runs: watch, decide by rules, heal or halt.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"expwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [COMMANDS[command]] if command else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["watch", *argv]  # `expwatch DIR` means `expwatch watch DIR`
    parser = build_parser(argv[0] if argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # `expwatch status --json | head`: the reader left; end quietly as a shell tool does (128 + SIGPIPE),
        # with stdout pointed at /dev/null so the interpreter's own flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
