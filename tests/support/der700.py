"""A 700-series DER for driver tests: models 1, 701, 702, 704 and 713, takes any write."""

from __future__ import annotations

from hil.register_image import SimSunSpecDevice

__all__ = ["Der700"]


class Der700(SimSunSpecDevice):
    """A 700-series DER (models 1, 701, 702, 704, 713) that stores what it is told."""

    def __init__(self, *, w_kw: float, soc_pct: float = 50.0) -> None:
        super().__init__(
            "der",
            models=(1, 701, 702, 704, 713),
            scale_factors={
                701: {"W_SF": 1, "A_SF": -1, "V_SF": 0, "Hz_SF": -2, "VA_SF": 0, "Var_SF": 0},
                702: {"W_SF": 1, "VA_SF": 1, "Var_SF": 1},
                704: {"WMaxLimPct_SF": -1, "WSet_SF": 1, "WSetPct_SF": -1},
                713: {"WH_SF": 1, "Pct_SF": -1},
            },
        )
        self._set(1, {"Mn": "test", "Md": "DER", "SN": "1", "DA": 1})
        self._set(701, {"W": 1000.0 * w_kw, "LLV": 400.0, "Hz": 50.0})
        self._set(702, {"WMaxRtg": 100_000.0})
        self._set(
            704,
            {
                "WMaxLimPctEna": 0,
                "WMaxLimPct": 100.0,
                "WMaxLimPctRvrt": 100.0,
                "WMaxLimPctEnaRvrt": 0,
                "WMaxLimPctRvrtTms": 0,
                "WSetEna": 0,
                "WSetMod": 1,
                "WSet": 0.0,
                "WSetRvrt": 0.0,
                "WSetEnaRvrt": 0,
                "WSetRvrtTms": 0,
            },
        )
        self._set(713, {"WHRtg": 200_000.0, "WHAvail": 100_000.0, "SoC": soc_pct})

    def _accepts(self, model_id: int, candidate: object, written: set[str]) -> bool:
        return True  # a device that takes anything: the envelope must be what keeps it safe
