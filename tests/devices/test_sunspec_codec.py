"""SunSpec codec: round trips for every model feederd uses, and any register contents."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.sunspec import DecodeError, decode_model, decode_point_raw, encode_model, layout

MODELS = (1, 101, 102, 103, 120, 121, 122, 123, 124, 201, 202, 203, 204, 701, 702, 704, 713)


# the L of each model as the SunSpec specifications give it (golden values)
SPEC_LENGTH = {
    1: 66, 101: 50, 102: 50, 103: 50, 120: 26, 121: 30, 122: 44, 123: 24, 124: 24,
    201: 105, 202: 105, 203: 105, 204: 105, 701: 153, 702: 50, 704: 65, 713: 7,
}  # fmt: skip


@pytest.mark.parametrize("model_id", MODELS)
def test_layout_length_is_the_specified_length(model_id: int) -> None:
    assert layout(model_id).length == SPEC_LENGTH[model_id]


def test_model_704_lays_out_its_fixed_groups() -> None:
    model = layout(704)
    assert model.point("PFWInj.PF").offset == model.point("PFWInj.Ext").offset - 1
    assert model.point("PFWAbsRvrt.Ext").offset == model.length + 1  # the block's last word


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


@pytest.mark.parametrize("model_id", MODELS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_block_decoding_matches_point_by_point_decoding(model_id: int, data: st.DataObject) -> None:
    """The fast block decoder gives exactly what decoding each point on its own gives."""
    model = layout(model_id)
    words = st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0x8000, 0xFFFF, 0, 0xFFF6, 3]))
    body = data.draw(st.lists(words, min_size=model.length, max_size=model.length))
    block = [model_id, model.length, *body]
    values = decode_model(model, block)
    for pt in model.points.values():
        raw = decode_point_raw(block, pt)
        if raw is None or isinstance(raw, str) or pt.type == "sunssf" or pt.sf is None:
            assert values[pt.name] == raw, pt.name
            continue
        sf = pt.sf if isinstance(pt.sf, int) else decode_point_raw(block, model.point(pt.sf))
        if not isinstance(sf, int) or not -10 <= sf <= 10:
            assert values[pt.name] is None, pt.name
        else:
            assert values[pt.name] == pytest.approx(raw * 10.0**sf), pt.name
