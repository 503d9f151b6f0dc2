"""SunSpec codec: round trips for every model feederd uses, and any register contents."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.sunspec import DecodeError, decode_model, encode_model, layout

MODELS = (1, 103, 120, 123, 124, 203)


@pytest.mark.parametrize("model_id", MODELS)
def test_layout_comes_from_pysunspec2(model_id: int) -> None:
    model = layout(model_id)
    assert model.points["ID"].offset == 0
    assert model.points["L"].offset == 1
    last = max(model.points.values(), key=lambda p: p.offset)
    assert last.offset + last.size == model.length + 2


def test_round_trip_with_scale_factors() -> None:
    inv = layout(103)
    block = encode_model(inv, {"W": 123_450.0, "Hz": 50.02, "St": 4}, {"W_SF": 1, "Hz_SF": -2})
    values = decode_model(inv, block)
    assert values["W"] == pytest.approx(123_450.0)
    assert values["Hz"] == pytest.approx(50.02)
    assert values["St"] == 4
    assert values["VAr"] is None  # not given: encoded as not implemented
    ctl = layout(123)
    block = encode_model(ctl, {"WMaxLimPct": 42.5, "WMaxLim_Ena": 1}, {"WMaxLimPct_SF": -1})
    assert decode_model(ctl, block)["WMaxLimPct"] == pytest.approx(42.5)
    common = layout(1)
    block = encode_model(common, {"Mn": "feederd", "SN": "pv-7"}, {})
    assert decode_model(common, block)["SN"] == "pv-7"


def test_not_implemented_and_bad_scale_factors_are_unknown() -> None:
    meter = layout(203)
    block = encode_model(meter, {"W": 1_000_000.0}, {"W_SF": 3})
    block[meter.point("W_SF").offset] = 11  # outside -10..10
    assert decode_model(meter, block)["W"] is None
    block[meter.point("W_SF").offset] = 0x8000  # scale factor not implemented
    assert decode_model(meter, block)["W"] is None


def test_changed_id_or_length_is_refused() -> None:
    inv = layout(103)
    block = encode_model(inv, {}, {})
    with pytest.raises(DecodeError, match="starts with id"):
        decode_model(inv, [101, *block[1:]])
    with pytest.raises(DecodeError, match="length"):
        decode_model(inv, [103, 60, *block[2:]])
    with pytest.raises(DecodeError, match="registers, need"):
        decode_model(inv, block[:10])


@pytest.mark.parametrize("model_id", MODELS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_register_contents_decode_or_raise_our_error(
    model_id: int, data: st.DataObject
) -> None:
    model = layout(model_id)
    body = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=model.length, max_size=model.length))
    values = decode_model(model, [model_id, model.length, *body])
    for name, value in values.items():
        assert value is None or isinstance(value, int | float | str), name
