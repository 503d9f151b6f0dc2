"""SunSpec model layouts (from pysunspec2) and the pure register codec."""

from devices.sunspec.codec import (
    NOT_IMPLEMENTED,
    DecodeError,
    Value,
    decode_model,
    decode_point_raw,
    encode_model,
    encode_point,
)
from devices.sunspec.models import (
    ModelLayout,
    PointDef,
    UnknownModelError,
    layout,
    repeating_groups,
)

__all__ = [
    "NOT_IMPLEMENTED",
    "DecodeError",
    "ModelLayout",
    "PointDef",
    "UnknownModelError",
    "Value",
    "decode_model",
    "decode_point_raw",
    "encode_model",
    "encode_point",
    "layout",
    "repeating_groups",
]
