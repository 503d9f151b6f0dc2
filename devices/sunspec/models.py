"""SunSpec model layouts, read from pysunspec2's model definitions.

The top-level points of a model are laid out here, followed by its fixed nested groups (a group
without a count, or with a literal count, as model 704's ``PFWInj``), whose points are named
``Group.Point`` (``Group[i].Point`` when the group repeats a fixed number of times). That covers
the common, inverter, nameplate, settings, controls, storage, meter and 700-series DER models
feederd uses. Offsets count from the model's ``ID`` register, so ``ID`` is offset 0 and ``L``
offset 1.

Groups that repeat a device-defined number of times (a count that is a point, as model 705's
``Crv`` with ``NCrv`` and its nested ``Pt`` with ``NPt``, or the legacy count 0 of model 126's
``curve``, which repeats to fill ``L``) are left out of ``layout(model_id)``: a model with them
has no length of its own. ``layout(model_id, repeats={...})`` lays them out with the counts the
device declares, keyed by the group's path (``{"curve": 1}``, ``{"Crv": 2, "Crv.Pt": 4}``); every
repetition is indexed, even a single one (``curve[0].V1``, ``Crv[1].Pt[2].V``). A repeating
group without a count in ``repeats`` is left out, and so are the groups nested in it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sunspec2.device as sunspec_device

__all__ = ["ModelLayout", "PointDef", "UnknownModelError", "layout", "repeating_groups"]


class UnknownModelError(LookupError):
    """pysunspec2 has no definition for this model id."""

    def __init__(self, model_id: int) -> None:
        super().__init__(f"SunSpec model {model_id} has no definition in pysunspec2")
        self.model_id = model_id


@dataclass(frozen=True, slots=True, kw_only=True)
class PointDef:
    """One point of a model: where it sits and how to read it."""

    name: str
    offset: int
    size: int
    type: str
    sf: str | int | None
    writable: bool
    units: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelLayout:
    """The block of a SunSpec model, with its repeating groups laid out ``repeats`` times.

    ``length`` is the model's ``L`` value (registers after ``ID`` and ``L``), so the block
    spans ``length + 2`` registers. ``repeats`` holds the counts the repeating groups were laid
    out with, sorted by group path (empty for the fixed layout).
    """

    model_id: int
    name: str
    length: int
    points: dict[str, PointDef]
    repeats: tuple[tuple[str, int], ...] = ()

    def point(self, name: str) -> PointDef:
        try:
            return self.points[name]
        except KeyError:
            raise KeyError(f"model {self.model_id} ({self.name}) has no point {name!r}") from None


def layout(model_id: int, repeats: Mapping[str, int] | None = None) -> ModelLayout:
    """Return the layout of ``model_id`` from pysunspec2's bundled JSON definitions.

    ``repeats`` gives the counts of the repeating groups by path (see the module docstring);
    a path the model does not have, or a negative count, is a ``ValueError`` naming it. The
    layouts are cached: the same arguments give the same object.
    """
    key = tuple(sorted((repeats or {}).items()))
    return _layout(model_id, key)


def repeating_groups(model_id: int) -> dict[str, str | int]:
    """The paths of ``model_id``'s repeating groups with what sets their count (a point's
    name, or 0 where the group repeats to fill the model's length)."""
    out: dict[str, str | int] = {}

    def walk(groups: list[dict[str, Any]], parent: str) -> None:
        for sub in groups:
            path = parent + sub["name"]
            count = sub.get("count", 1)
            if not isinstance(count, int) or count == 0:
                out[path] = count
            walk(sub.get("groups", []), path + ".")

    walk(_definition(model_id)["group"].get("groups", []), "")
    return out


def _definition(model_id: int) -> dict[str, Any]:
    try:
        definition: dict[str, Any] = sunspec_device.get_model_def(model_id)
    except Exception as err:
        raise UnknownModelError(model_id) from err
    return definition


@functools.cache
def _layout(model_id: int, repeats: tuple[tuple[str, int], ...]) -> ModelLayout:
    group = _definition(model_id)["group"]
    counts = dict(repeats)
    known = repeating_groups(model_id)
    for path, count in repeats:
        if path not in known:
            have = ", ".join(known) or "none"
            raise ValueError(
                f"model {model_id} has no repeating group {path!r} (its repeating groups: {have})"
            )
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"model {model_id}: count of {path!r} must be >= 0, got {count!r}")
    points: dict[str, PointDef] = {}
    offset = _add_points(points, group["points"], prefix="", offset=0)
    for sub in group.get("groups", []):
        count = sub.get("count", 1)
        if isinstance(count, int) and count != 0:
            # a fixed group: laid out as it always was (nested groups not at all)
            for i in range(count):
                prefix = f"{sub['name']}." if count == 1 else f"{sub['name']}[{i}]."
                offset = _add_points(points, sub["points"], prefix=prefix, offset=offset)
        elif sub["name"] in counts:
            offset = _add_repeating(points, sub, counts, path=sub["name"], prefix="", offset=offset)
    return ModelLayout(
        model_id=model_id,
        name=group["name"],
        length=offset - 2,
        points=points,
        repeats=repeats,
    )


def _add_repeating(
    points: dict[str, PointDef],
    group: dict[str, Any],
    counts: dict[str, int],
    *,
    path: str,
    prefix: str,
    offset: int,
) -> int:
    """Lay out ``counts[path]`` repetitions of ``group`` (and of its nested groups)."""
    for i in range(counts[path]):
        inner = f"{prefix}{group['name']}[{i}]."
        offset = _add_points(points, group["points"], prefix=inner, offset=offset)
        for sub in group.get("groups", []):
            sub_path = f"{path}.{sub['name']}"
            count = sub.get("count", 1)
            if isinstance(count, int) and count != 0:
                for j in range(count):
                    name = f"{inner}{sub['name']}." if count == 1 else f"{inner}{sub['name']}[{j}]."
                    offset = _add_points(points, sub["points"], prefix=name, offset=offset)
            elif sub_path in counts:
                offset = _add_repeating(
                    points, sub, counts, path=sub_path, prefix=inner, offset=offset
                )
    return offset


def _add_points(
    points: dict[str, PointDef], defs: list[dict[str, Any]], *, prefix: str, offset: int
) -> int:
    for pt in defs:
        size = int(pt.get("size", 1))
        name = prefix + pt["name"]
        points[name] = PointDef(
            name=name,
            offset=offset,
            size=size,
            type=pt["type"],
            sf=pt.get("sf"),
            writable=pt.get("access", "R") == "RW",
            units=pt.get("units"),
        )
        offset += size
    return offset
