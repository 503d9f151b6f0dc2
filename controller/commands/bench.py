"""``feederd bench dispatch|poll ...``: benchmarks that print one JSON object of figures.

Each benchmark is its own module (``BENCHMARKS``) with ``HELP``, ``add_arguments`` and ``run``.
"""

from __future__ import annotations

import argparse
import importlib

HELP = "benchmarks that print JSON figures"

BENCHMARKS: dict[str, str] = {
    "dispatch": "controller.commands.bench_dispatch",
    "poll": "controller.commands.bench_poll",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True, parser_class=type(parser))
    for name, module_name in BENCHMARKS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(bench_handler=module.run)


def run(args: argparse.Namespace) -> int:
    code: int = args.bench_handler(args)
    return code
