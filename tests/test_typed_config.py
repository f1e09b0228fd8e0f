from dataclasses import dataclass, field
from typing import Literal

import pytest

from mawsflow.errors import ConfigError
from mawsflow.typed_config import check_key, from_dict, parse_override, to_dict


@dataclass
class Inner:
    size: int = 1
    scale: tuple[float, float] = (0.1, 1.0)


@dataclass
class Outer:
    name: Literal["a", "b"] = "a"
    rate: float = 0.5
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    table: dict[int, float] = field(default_factory=dict)


def test_round_trip_and_lossless_coercion():
    cfg = from_dict(Outer, {"rate": 2, "inner": {"scale": [0.2, 1]}, "table": {1: 56}})
    assert cfg.rate == 2.0 and isinstance(cfg.rate, float)
    assert cfg.inner.scale == (0.2, 1.0)
    assert from_dict(Outer, to_dict(cfg)) == cfg
    assert from_dict(Inner, {"size": 5e9}).size == 5_000_000_000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "c"}, "name: 'c' is not one of"),
        ({"rate": "fast"}, "rate: expected a number"),
        ({"rate": True}, "rate: expected a number"),
        ({"inner": {"size": 1.5}}, "inner.size: expected an integer"),
        ({"inner": {"scale": [1]}}, "inner.scale: expected 2 items"),
        ({"inner": {"sizes": 1}}, "unknown key inner.sizes"),
        ({"tags": "x"}, "tags: expected a list"),
        ({"inner": None}, "inner: null is not allowed"),
    ],
)
def test_errors_name_the_dotted_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_overrides_parse_yaml_scalars():
    assert parse_override("a.b=1e-3") == ("a.b", 1e-3)
    assert parse_override("x=[0.9, 0.95]") == ("x", [0.9, 0.95])
    assert parse_override("x=null") == ("x", None)
    assert parse_override("x=vit_6.5b14") == ("x", "vit_6.5b14")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("novalue")


def test_check_key_walks_nested_and_dict_fields():
    check_key(Outer, "inner.size")
    check_key(Outer, "table.5")
    with pytest.raises(ConfigError, match="unknown key inner.nope"):
        check_key(Outer, "inner.nope")
    with pytest.raises(ConfigError, match="takes a value"):
        check_key(Outer, "rate.x")
