"""What every table of the config shares: the strict base model (unknown keys, NaN and infinity
refused; frozen), the bound on any power in kW, and a path field (no NUL byte). The tables live in
``models`` and, loaded by it, in ``outlook`` and ``openadr``."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = ["MAX_KW", "FilePath", "Strict"]


class Strict(BaseModel):
    # NaN and infinity are refused everywhere: no limit, rating or duration can be one
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


MAX_KW = 1e6
"""No power in a feeder's config is a gigawatt or more: a bigger number is a typing error."""


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a path cannot contain a NUL byte")
    return value


FilePath = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_no_nul)]
"""A path in the config (relative ones start next to the config file)."""
