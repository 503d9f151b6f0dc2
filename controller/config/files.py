"""Reading what a config names, bounded: only regular files, within a size, valid UTF-8, TOML of
bounded nesting; a relative path starts next to the config."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # loaded when a config is: `feederd event --journal` needs neither
    pass


CONFIG_MAX_BYTES = 1 << 20
"""The config file: 1 MiB."""
# A register map: 1 MiB (``devices.register_map.MAP_MAX_BYTES``, read there).
CASE_MAX_BYTES = 50 << 20
"""A MATPOWER case: 50 MiB (read by ``optimizer.network``, which has the same limit)."""
SECRET_MAX_BYTES = 64 << 10
"""A password file, a certificate, a key or a CA bundle: 64 KiB."""


class FileRefused(Exception):
    """A file that must not be read; ``str()`` says why (without the key)."""


def file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_regular_file(path: str | Path, *, limit: int) -> None:
    """``path`` is a regular file of at most ``limit`` bytes, or ``FileRefused`` says why.
    Nothing is opened: a FIFO or a device is never touched."""
    try:
        st = os.stat(path)
    except ValueError:  # an embedded NUL byte
        raise FileRefused(f"{str(path)!r}: a path cannot contain a NUL byte") from None
    except OSError as err:
        raise FileRefused(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"{str(path)!r} is {file_kind(st.st_mode)}, not a regular file")
    if st.st_size > limit:
        raise FileRefused(
            f"{str(path)!r} is {st.st_size} bytes, more than the {_size(limit)} allowed"
        )


def read_limited(path: str | Path, *, limit: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes; ``FileRefused``
    otherwise (it is checked before it is opened, and again on the open file)."""
    check_regular_file(path, limit=limit)
    try:
        # O_NONBLOCK: should the path have become a FIFO since, the open does not wait
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as err:
        raise FileRefused(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"{str(path)!r} is {file_kind(st.st_mode)}, not a regular file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise FileRefused(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise FileRefused(f"{str(path)!r} is more than the {_size(limit)} allowed")
    return b"".join(chunks)


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"


def decode_utf8(data: bytes) -> str:
    """``data`` as UTF-8; ``FileRefused`` names the first bad byte's offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileRefused(f"not valid UTF-8 (byte {err.start})") from None


TOML_MAX_KEY_PARTS = 32
"""A dotted key of more parts is refused before parsing (tomllib's time grows with the square
of a key's parts: a 1 MiB file of one dotted key would take hours)."""
_TOML_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_TOML_DEEP_KEY = re.compile(
    r"(?m)(?:^|[\[{,])[ \t]*"
    + _TOML_KEY_PART
    + r"(?:[ \t]*\.[ \t]*"
    + _TOML_KEY_PART
    + "){"
    + str(TOML_MAX_KEY_PARTS)
    + "}"
)


def parse_toml(text: str) -> dict[str, Any]:
    """A TOML document; every problem (syntax, an integer of thousands of digits, nesting too
    deep, a dotted key of too many parts) is ``FileRefused`` with one line."""
    deep = _TOML_DEEP_KEY.search(text)
    if deep is not None:
        line = text.count("\n", 0, deep.start()) + 1
        raise FileRefused(
            f"not valid TOML: a dotted key of more than {TOML_MAX_KEY_PARTS} parts (line {line})"
        )
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise FileRefused("not valid TOML: arrays or tables nested too deeply") from None
    except ValueError as err:  # TOMLDecodeError, and int() of more than 4300 digits
        raise FileRefused(f"not valid TOML: {err}") from None


# -- the models -----------------------------------------------------------------------------


def resolve_path(value: str, base_dir: Path) -> Path:
    """A path from the config: relative ones start next to the config file."""
    path = Path(value)
    return path if path.is_absolute() else base_dir / path
