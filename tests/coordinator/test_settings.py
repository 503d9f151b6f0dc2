"""The fleet's settings refuse what cannot work with one line, and name its MQTT topics."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.settings import FeederSpec, TransformerSpec
from tests.coordinator.core_helpers import settings


def test_topics() -> None:
    fleet = settings()
    assert fleet.flex_filter == "feederd/+/flex"
    assert fleet.dr_status_filter == "feederd/+/dr/status"
    assert fleet.online_filter == "feederd/+/online"
    assert fleet.target_topic == "feederd-fleet/test/target"
    assert fleet.target_status_topic == "feederd-fleet/test/target/status"
    assert fleet.status_topic == "feederd-fleet/test/status"
    assert fleet.event_topic("north-1") == "feederd/north-1/dr/event"
    assert fleet.site_of("feederd/north-1/flex") == "north-1"
    assert fleet.site_of("feederd/south-9/dr/status") == "south-9"  # unknown, still a site
    assert fleet.site_of("other/north-1/flex") is None
    assert fleet.site_of("feederd/flex") is None
    shared = settings(shared_subscription="coordinators")
    assert shared.flex_filter == "$share/coordinators/feederd/+/flex"
    assert shared.dr_status_filter == "feederd/+/dr/status"
    assert settings().group_sites("all") == ("north-1", "north-2", "north-3")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"feeders": (FeederSpec("a", 1.0), FeederSpec("a", 2.0))}, "listed twice: a"),
        ({"feeders": ()}, "at least one feeder"),
        ({"groups": {"g": ("north-1", "nowhere")}}, "group 'g' names unknown feeder(s): nowhere"),
        ({"groups": {"all": ("north-1",)}}, "'all' is implicit"),
        ({"groups": {"g": ()}}, "group 'g' is empty"),
        ({"transformers": ()}, "names unknown transformer 'T1'"),
        ({"transformers": (TransformerSpec("T1", 1.0),) * 2}, "transformer(s) listed twice"),
        ({"topic_root": "fleet/+/x"}, "without wildcards"),
        ({"feeder_root": "feederd/#"}, "without wildcards"),
        ({"topic_root": "a//b"}, "empty level"),
        ({"mode": "cheap"}, "mode must be one of cost, fair"),
        ({"interval_s": 0}, "interval_s must be positive"),
        ({"deadband_kw": -1.0}, "deadband_kw must be a non-negative number"),
        ({"priority": 5000}, "priority must be an integer in 0..1000"),
        ({"shared_subscription": "a/b"}, "shared_subscription"),
    ],
)
def test_bad_settings_are_refused_in_one_line(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r".") as caught:
        settings(**change)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FeederSpec("a b", 1.0), "feeder site 'a b' must match"),
        (lambda: FeederSpec("a", 0.0), "rating_kw must be positive"),
        (lambda: FeederSpec("a", float("inf")), "rating_kw must be positive"),
        (lambda: TransformerSpec("T+", 1.0), "transformer 'T+' must match"),
    ],
)
def test_bad_specs_are_refused(make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r".") as caught:
        make()
    assert message in str(caught.value)
