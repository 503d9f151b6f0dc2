"""SunSpec model layouts, read from pysunspec2's model definitions.

The top-level points of a model are laid out here, followed by its fixed nested groups (a group
without a count, or with a literal count, as model 704's ``PFWInj``), whose points are named
``Group.Point`` (``Group[i].Point`` when the group repeats a fixed number of times). Groups that
repeat a device-defined number of times are not laid out. That covers the common, inverter,
nameplate, settings, controls, storage, meter and 700-series DER models feederd uses. Offsets
count from the model's ``ID`` register, so ``ID`` is offset 0 and ``L`` offset 1.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import sunspec2.device as sunspec_device

__all__ = ["ModelLayout", "PointDef", "UnknownModelError", "layout"]


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
    """The fixed block of a SunSpec model.

    ``length`` is the model's ``L`` value (registers after ``ID`` and ``L``), so the block
    spans ``length + 2`` registers.
    """

    model_id: int
    name: str
    length: int
    points: dict[str, PointDef]

    def point(self, name: str) -> PointDef:
        try:
            return self.points[name]
        except KeyError:
            raise KeyError(f"model {self.model_id} ({self.name}) has no point {name!r}") from None


@functools.cache
def layout(model_id: int) -> ModelLayout:
    """Return the layout of ``model_id`` from pysunspec2's bundled JSON definitions."""
    try:
        definition: dict[str, Any] = sunspec_device.get_model_def(model_id)
    except Exception as err:
        raise UnknownModelError(model_id) from err
    group = definition["group"]
    points: dict[str, PointDef] = {}
    offset = _add_points(points, group["points"], prefix="", offset=0)
    for sub in group.get("groups", []):
        count = sub.get("count", 1)
        if not isinstance(count, int):
            continue  # repeats as often as a point says: not a fixed layout
        for i in range(count):
            prefix = f"{sub['name']}." if count == 1 else f"{sub['name']}[{i}]."
            offset = _add_points(points, sub["points"], prefix=prefix, offset=offset)
    return ModelLayout(model_id=model_id, name=group["name"], length=offset - 2, points=points)


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
