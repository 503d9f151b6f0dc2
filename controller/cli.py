"""The ``feederd`` command line (DESIGN.md §5).

Exit 0 on success; 2 with a one-line message on stderr for bad usage or a bad config, never a
traceback for a user's error. The commands live in ``controller/commands/``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from controller.commands import COMMANDS
from controller.config import ConfigError

__all__ = ["UsageError", "main"]

# The HIL rig (demo, sim, bench poll) needs these; an edge box installs feederd without them.
HIL_MODULES = frozenset({"pandapower"})


class UsageError(Exception):
    """A user's mistake a command found after parsing: printed on one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="feederd", description="Demand-response controller for a distribution feeder.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(handler=module.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (ConfigError, UsageError) as err:
        print(f"feederd: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `feederd ... | head`: the reader left; say nothing more (Python docs, SIGPIPE note).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ModuleNotFoundError as err:
        if err.name not in HIL_MODULES:
            raise
        print(
            f"feederd: {args.command} runs the HIL rig, which needs {err.name}: "
            "install feederd with the 'hil' extra (pip install 'feederd[hil]')",
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
