"""The one error of a config that cannot be used."""

from __future__ import annotations

import reprlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # loaded when a config is: `feederd event --journal` needs neither
    pass


_MESSAGE_MAX = 400
"""A config error is one line of at most this many characters (a key's value is cut short)."""


def _one_line(text: str) -> str:
    """``text`` without line breaks or other control characters, cut to ``_MESSAGE_MAX``."""
    flat = "".join(c if c.isprintable() else " " for c in text)
    return flat if len(flat) <= _MESSAGE_MAX else flat[: _MESSAGE_MAX - 3] + "..."


class ConfigError(Exception):
    """A config that cannot be used; ``str()`` is the one-line message for the operator."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        where = f"{_one_line(source)}: {_one_line(key)}: " if key else f"{_one_line(source)}: "
        super().__init__(where + _one_line(problem))
        self.source = source
        self.key = key
        self.problem = problem


# -- bounded file reads -------------------------------------------------------------------
#
# Every file feederd reads because its config names it is a regular file of bounded size:
# a device (``/dev/zero``), a FIFO or a directory is refused before it is opened for reading,
# and a file over its limit before it is read.


_REPR = reprlib.Repr()
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlong = 40
_REPR.maxlevel = 2
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 4


def short_value(value: Any) -> str:
    """A value as the operator wrote it, cut short (a value may be a megabyte long)."""
    return _REPR.repr(value)
