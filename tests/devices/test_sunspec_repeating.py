"""Layouts of SunSpec models with repeating groups (126's ``curve``, 705's ``Crv``/``Pt``),
checked against pysunspec2's own model builder for the same counts."""

from __future__ import annotations

import pytest
import sunspec2.device as sunspec_device

from devices.sunspec import decode_model, encode_model, layout, repeating_groups


def _pysunspec2_offsets(model_id: int, length: int, data: dict[str, object]) -> dict[str, int]:
    """Every point's offset as pysunspec2 lays the model out (its names mapped to ours)."""
    model = sunspec_device.Model(model_id, model_len=length, data=data)
    out: dict[str, int] = {}

    def walk(group: sunspec_device.Group, prefix: str) -> None:
        for name, pt in group.points.items():
            out[prefix + name] = pt.offset
        for name, sub in group.groups.items():
            if isinstance(sub, list):
                for i, g in enumerate(sub):
                    walk(g, f"{prefix}{name}[{i}].")
            else:
                walk(sub, f"{prefix}{name}.")

    walk(model, "")
    return out


@pytest.mark.parametrize(("n_crv", "n_pt"), [(1, 1), (1, 4), (2, 4), (3, 10)])
def test_model_705_offsets_match_pysunspec2(n_crv: int, n_pt: int) -> None:
    model = layout(705, repeats={"Crv": n_crv, "Crv.Pt": n_pt})
    assert model.length == 13 + n_crv * (10 + 2 * n_pt)  # header, then NCrv x (10 + 2 NPt)
    data = {"NCrv": n_crv, "NPt": n_pt, "Crv": [{"Pt": [{}] * n_pt}] * n_crv}
    theirs = _pysunspec2_offsets(705, model.length, data)
    ours = {name: pt.offset for name, pt in model.points.items()}
    assert ours == theirs
    assert model.point(f"Crv[{n_crv - 1}].Pt[{n_pt - 1}].Var").offset == model.length + 1


@pytest.mark.parametrize("n_crv", [1, 2, 4])
def test_model_126_offsets_match_pysunspec2(n_crv: int) -> None:
    model = layout(126, repeats={"curve": n_crv})
    assert model.length == 10 + 54 * n_crv  # each curve: 20 fixed V/VAr pairs and 14 more
    theirs = _pysunspec2_offsets(126, model.length, {})  # 126 repeats to fill L
    assert {name: pt.offset for name, pt in model.points.items()} == theirs
    assert model.point("curve[0].V1").units == "% VRef"
    assert model.point("curve[0].VAr1").sf == "DeptRef_SF"


def test_fixed_layout_is_unchanged_and_cached() -> None:
    assert layout(126).length == 10  # header only, as before
    assert "curve[0].V1" not in layout(126).points
    assert layout(705).length == 13
    assert layout(126, repeats={"curve": 1}) is layout(126, repeats={"curve": 1})
    assert layout(126, repeats={}) is layout(126)
    assert layout(705, repeats={"Crv": 1}).length == 13 + 10  # Pt left out without its count


def test_repeating_groups_name_what_counts_them() -> None:
    assert repeating_groups(126) == {"curve": 0}
    assert repeating_groups(705) == {"Crv": "NCrv", "Crv.Pt": "NPt"}
    assert repeating_groups(123) == {}


@pytest.mark.parametrize(
    ("repeats", "message"),
    [
        ({"Curve": 1}, "no repeating group 'Curve' (its repeating groups: Crv, Crv.Pt)"),
        ({"Crv": -1}, "count of 'Crv' must be >= 0"),
    ],
)
def test_bad_repeats_are_named(repeats: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        layout(705, repeats=repeats)


def test_repeated_layout_round_trips_through_the_codec() -> None:
    model = layout(705, repeats={"Crv": 2, "Crv.Pt": 4})
    values = {"Ena": 1, "NCrv": 2, "NPt": 4, "Crv[1].ActPt": 4, "Crv[1].Pt[3].Var": -44.0}
    block = encode_model(model, values, {"V_SF": -1, "DeptRef_SF": -1, "RspTms_SF": 0})
    decoded = decode_model(model, block)
    assert decoded["Crv[1].Pt[3].Var"] == pytest.approx(-44.0)
    assert decoded["Crv[1].ActPt"] == 4
    assert decoded["Crv[0].Pt[0].V"] is None  # not implemented until written
