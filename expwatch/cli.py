"""The ``expwatch`` command line: one argparse tree, one module per command.

Each module in ``expwatch.commands`` exposes ``register(subparsers)``, which
adds its parser and sets ``func`` to a callable taking the parsed namespace
and returning the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from expwatch import __version__

COMMAND_MODULES = (
    "expwatch.commands.watch",
    "expwatch.commands.launch",
    "expwatch.commands.adopt",
    "expwatch.commands.monitor",
    "expwatch.commands.status",
    "expwatch.commands.control",
    "expwatch.commands.rules",
    "expwatch.commands.audit",
    "expwatch.commands.validate",
    "expwatch.commands.drift",
    "expwatch.commands.noise",
    "expwatch.commands.pipeline",
    "expwatch.commands.report",
    "expwatch.commands.completion",
    "expwatch.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="expwatch",
        description="Babysit long ML evaluation runs: watch, decide by rules, heal or halt.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"expwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    if not argv or (argv[0] not in commands and argv[0] not in ("-h", "--help", "--version")):
        argv = ["watch", *argv]  # `expwatch DIR` means `expwatch watch DIR`
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)
