"""The ``feederd`` subcommands, one module each.

Each module has ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``, and
keeps its heavy imports inside ``run`` so ``feederd --help`` stays fast. ``COMMANDS`` lists
them in the order ``--help`` shows; add a command by adding its module here.
"""

from __future__ import annotations

COMMANDS: dict[str, str] = {
    "run": "controller.commands.run",
    "check": "controller.commands.check",
    "demo": "controller.commands.demo",
    "event": "controller.commands.event",
    "status": "controller.commands.status",
    "coordinate": "controller.commands.coordinate",
    "report": "controller.commands.report",
    "sim": "controller.commands.sim",
    "powerflow": "controller.commands.powerflow",
    "solve": "controller.commands.solve",
    "bench": "controller.commands.bench",
    "scan": "controller.commands.scan",
}
