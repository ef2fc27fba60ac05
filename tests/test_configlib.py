"""Tests for ami.configlib on a small local schema: building, errors, overrides, YAML and replace."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
import yaml

from ami.configlib import (
    ConfigError,
    apply_overrides,
    check,
    dump,
    dumps,
    from_dict,
    load,
    parse_override,
    replace_path,
    to_dict,
)


@dataclass(frozen=True)
class Noise:
    scale: float = 0.5
    kind: Literal["gaussian", "uniform"] = "gaussian"

    def validate(self) -> None:
        if self.scale < 0:
            raise ValueError(f"scale must be >= 0, got {self.scale}")


@dataclass(frozen=True)
class Planner:
    horizon: int = 16
    method: Literal["mppi", "cem"] = "mppi"
    temperature: float = 1.0
    warm_start: bool = True
    noise: Noise = field(default_factory=Noise)

    def validate(self) -> None:
        check(self.horizon >= 1, "horizon", f"must be >= 1, got {self.horizon}")


@dataclass(frozen=True)
class Model:
    hidden: tuple[int, ...] = (64, 64)
    dropout: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    name: str
    seed: int = 0
    scales: tuple[float, ...] = (1.0,)
    planner: Planner = field(default_factory=Planner)
    model: Model = field(default_factory=Model)
    prior: Noise | None = None

    def validate(self) -> None:
        check(self.planner.horizon <= 100, "planner.horizon", f"must be <= 100, got {self.planner.horizon}")


@dataclass(frozen=True)
class Odd:
    pair: tuple[int, float] = (1, 2.0)
    label: int | str = 0
    level: Literal[1, 2] = 1
    anything: Any = None


def custom() -> Experiment:
    return Experiment(
        name="run",
        seed=3,
        scales=(0.5, 2.0),
        planner=Planner(horizon=32, method="cem", temperature=0.1, warm_start=False, noise=Noise(0.2, "uniform")),
        model=Model(hidden=(128, 32, 8), dropout=0.1, extra={"act": "gelu", "sizes": [1, 2]}),
        prior=Noise(scale=1.5),
    )


def error(cls: type, data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        from_dict(cls, data)
    return str(info.value)


# ----------------------------------------------------------------------------- building


def test_defaults_and_nested_values():
    cfg = from_dict(Experiment, {"name": "a", "planner": {"horizon": 8, "noise": {"kind": "uniform"}}})
    assert cfg == Experiment(name="a", planner=Planner(horizon=8, noise=Noise(kind="uniform")))


def test_round_trip_to_dict_from_dict():
    cfg = custom()
    data = to_dict(cfg)
    assert data["scales"] == [0.5, 2.0]
    assert data["model"]["hidden"] == [128, 32, 8]
    assert data["planner"]["noise"] == {"scale": 0.2, "kind": "uniform"}
    json.dumps(data)  # plain data only
    assert from_dict(Experiment, data) == cfg
    assert from_dict(Experiment, to_dict(Experiment(name="b"))) == Experiment(name="b")


def test_sequences_become_tuples_and_ints_become_floats():
    cfg = from_dict(Experiment, {"name": "a", "scales": [1, 2.5], "planner": {"temperature": 2}})
    assert cfg.scales == (1.0, 2.5)
    assert all(type(s) is float for s in cfg.scales)
    assert cfg.planner.temperature == 2.0 and type(cfg.planner.temperature) is float
    assert from_dict(Model, {"dropout": 0}).dropout == 0.0


def test_optional_and_free_form_dict():
    cfg = from_dict(Experiment, {"name": "a", "prior": {"scale": 2}, "model": {"extra": {"k": (1, 2)}}})
    assert cfg.prior == Noise(scale=2.0)
    assert cfg.model.extra == {"k": [1, 2]}
    assert from_dict(Experiment, {"name": "a", "prior": None}).prior is None


def test_fixed_tuple_union_and_int_literal():
    odd = from_dict(Odd, {"pair": [3, 4], "label": "x", "level": 2, "anything": {"a": (1,)}})
    assert odd == Odd(pair=(3, 4.0), label="x", level=2, anything={"a": [1]})
    assert from_dict(Odd, {"label": 5}).label == 5
    assert error(Odd, {"pair": [1]}) == "pair: expected tuple[int, float] (2 items), got [1] (list)"
    assert error(Odd, {"pair": [1, "a"]}) == "pair[1]: expected float, got 'a' (str)"
    assert error(Odd, {"label": 1.5}) == "label: expected int | str, got 1.5 (float)"
    assert error(Odd, {"level": True}) == "level: expected one of 1, 2, got True (bool)"
    assert from_dict(Odd, to_dict(odd)) == odd


def test_config_is_frozen():
    cfg = custom()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.planner.horizon = 1  # type: ignore[misc]


def test_input_data_is_not_aliased():
    data = {"name": "a", "model": {"extra": {"sizes": [1, 2]}}}
    cfg = from_dict(Experiment, data)
    data["model"]["extra"]["sizes"].append(3)
    assert cfg.model.extra == {"sizes": [1, 2]}


def test_non_frozen_schema_is_refused():
    @dataclass
    class Loose:
        x: int = 0

    with pytest.raises(TypeError, match="must be frozen"):
        from_dict(Loose, {})


# ----------------------------------------------------------------------------- key errors


def test_unknown_key_names_path_suggests_and_lists():
    message = error(Experiment, {"name": "a", "planner": {"horizn": 3}})
    assert message == (
        "planner.horizn: unknown key in planner; did you mean 'horizon'? "
        "(valid keys: horizon, method, temperature, warm_start, noise)"
    )


def test_unknown_key_deep_and_top_level():
    assert error(Experiment, {"name": "a", "planner": {"noise": {"scael": 1.0}}}).startswith(
        "planner.noise.scael: unknown key in planner.noise; did you mean 'scale'?"
    )
    message = error(Experiment, {"name": "a", "zzz": 1})
    assert message.startswith("zzz: unknown key (valid keys: name, seed, scales, planner, model, prior)")


def test_missing_required_key():
    assert error(Experiment, {"seed": 1}) == "name: required key is missing (type str)"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"planner": {"horizon": "forty"}}, "planner.horizon: expected int, got 'forty' (str)"),
        ({"planner": {"horizon": 4.0}}, "planner.horizon: expected int, got 4.0 (float)"),
        ({"planner": {"horizon": True}}, "planner.horizon: expected int, got True (bool)"),
        ({"planner": {"temperature": "hot"}}, "planner.temperature: expected float, got 'hot' (str)"),
        ({"planner": {"temperature": False}}, "planner.temperature: expected float, got False (bool)"),
        ({"planner": {"warm_start": 1}}, "planner.warm_start: expected bool, got 1 (int)"),
        ({"planner": {"warm_start": "true"}}, "planner.warm_start: expected bool, got 'true' (str)"),
        ({"seed": "1"}, "seed: expected int, got '1' (str)"),
        ({"model": {"dropout": "x"}}, "model.dropout: expected float | None, got 'x' (str)"),
        ({"model": {"hidden": 64}}, "model.hidden: expected tuple[int, ...], got 64 (int)"),
        ({"model": {"hidden": [64, "a"]}}, "model.hidden[1]: expected int, got 'a' (str)"),
        ({"model": {"extra": [1]}}, "model.extra: expected dict[str, Any], got [1] (list)"),
        ({"model": {"extra": {1: "a"}}}, "model.extra.1: expected str, got 1 (int)"),
        ({"planner": 3}, "planner: expected a mapping for Planner, got 3 (int)"),
        ({"prior": "big"}, "prior: expected Noise | None, got 'big' (str)"),
        ({"prior": {"scale": "x"}}, "prior.scale: expected float, got 'x' (str)"),
        ({"prior": {"size": 1}}, "prior.size: unknown key in prior"),
        (
            {"planner": {"method": "mpi"}},
            "planner.method: expected one of 'mppi', 'cem', got 'mpi' (str); did you mean 'mppi'?",
        ),
        ({"planner": {"noise": {"kind": 1}}}, "planner.noise.kind: expected one of 'gaussian', 'uniform', got 1 (int)"),
    ],
)
def test_wrong_type_messages(data, expected):
    message = error(Experiment, {"name": "a", **data})
    assert message.startswith(expected), message


def test_str_does_not_accept_numbers():
    assert error(Experiment, {"name": 3}) == "name: expected str, got 3 (int)"


def test_errors_are_value_errors():
    with pytest.raises(ValueError, match=re.escape("planner.horizon")):
        from_dict(Experiment, {"name": "a", "planner": {"horizon": "x"}})


# ----------------------------------------------------------------------------- validate


def test_check_helper_is_prefixed_with_section_path():
    assert error(Experiment, {"name": "a", "planner": {"horizon": 0}}) == "planner.horizon: must be >= 1, got 0"


def test_plain_value_error_is_prefixed_with_section_path():
    message = error(Experiment, {"name": "a", "planner": {"noise": {"scale": -1}}})
    assert message == "planner.noise: scale must be >= 0, got -1.0"


def test_cross_section_validate_at_top_level():
    assert error(Experiment, {"name": "a", "planner": {"horizon": 200}}) == "planner.horizon: must be <= 100, got 200"


def test_validate_inside_optional_section_is_reported():
    assert error(Experiment, {"name": "a", "prior": {"scale": -2}}) == "prior: scale must be >= 0, got -2.0"


def test_check_directly():
    check(True, "x", "never")
    with pytest.raises(ConfigError, match=r"^x: bad$") as info:
        check(False, "x", "bad")
    assert info.value.key == "x"


# ----------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("planner.horizon=40", "planner.horizon", 40),
        ("planner.temperature=0.5", "planner.temperature", 0.5),
        ("lr=1e-3", "lr", 0.001),
        ("planner.warm_start=true", "planner.warm_start", True),
        ("x=yes", "x", "yes"),
        ("model.hidden=[1,2]", "model.hidden", [1, 2]),
        ("env.factory=pkg.mod:factory", "env.factory", "pkg.mod:factory"),
        ("model.dropout=null", "model.dropout", None),
        ("name=a=b", "name", "a=b"),
        (" planner.horizon = 8 ", "planner.horizon", 8),
        ("model.extra={act: relu}", "model.extra", {"act": "relu"}),
    ],
)
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


@pytest.mark.parametrize("text", ["planner.horizon", "=3", " =3", "a..b=1", ".a=1", "a.=1"])
def test_malformed_override(text):
    with pytest.raises(ConfigError, match=re.escape(f"malformed override {text!r}")):
        parse_override(text)


def test_override_value_that_is_not_yaml():
    with pytest.raises(ConfigError, match=re.escape("override 'a=[1, 2'")):
        parse_override("a=[1, 2")


def test_apply_overrides_creates_sections_and_copies():
    data = {"name": "a", "planner": {"horizon": 8}}
    out = apply_overrides(data, ["planner.horizon=32", "planner.noise.scale=0.1", "seed=7"])
    assert out == {"name": "a", "seed": 7, "planner": {"horizon": 32, "noise": {"scale": 0.1}}}
    assert data == {"name": "a", "planner": {"horizon": 8}}


def test_apply_overrides_into_a_scalar_names_the_parent():
    with pytest.raises(ConfigError) as info:
        apply_overrides({"planner": {"horizon": 8}}, ["planner.horizon.x=1"])
    assert str(info.value) == "planner.horizon: is 8 (int), not a mapping, so planner.horizon.x cannot be set"


def test_bool_override_true_is_accepted_but_one_is_not():
    base = {"name": "a"}
    assert load(Experiment, base, ["planner.warm_start=false"]).planner.warm_start is False
    with pytest.raises(ConfigError, match=re.escape("planner.warm_start: expected bool, got 1 (int)")):
        load(Experiment, base, ["planner.warm_start=1"])


# ----------------------------------------------------------------------------- YAML files


EXPERIMENT_YAML = """\
# a small experiment
name: demo
scales: [1, 0.5]
planner:
  horizon: 8
  temperature: 1e-2
  noise: {kind: uniform}
model:
  hidden: [32, 32]
  extra: {act: gelu}
"""


def test_load_yaml_with_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT_YAML)
    cfg = load(Experiment, path, ["planner.horizon=32", "model.dropout=0.25", "prior.scale=2"])
    assert cfg == Experiment(
        name="demo",
        scales=(1.0, 0.5),
        planner=Planner(horizon=32, temperature=0.01, noise=Noise(kind="uniform")),
        model=Model(hidden=(32, 32), dropout=0.25, extra={"act": "gelu"}),
        prior=Noise(scale=2.0),
    )
    assert load(Experiment, str(path)).planner.temperature == 0.01


def test_yaml_yes_is_not_a_bool(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: a\nplanner:\n  warm_start: yes\n")
    with pytest.raises(ConfigError, match=re.escape("planner.warm_start: expected bool, got 'yes' (str)")):
        load(Experiment, path)


def test_load_error_carries_a_note_with_the_source(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: a\n")
    with pytest.raises(ConfigError) as info:
        load(Experiment, path, ["planner.horizon=0"])
    assert str(info.value) == "planner.horizon: must be >= 1, got 0"
    assert info.value.__notes__ == [f"while loading Experiment from {path} with overrides ['planner.horizon=0']"]


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"config file not found: {path}")):
        load(Experiment, path)


def test_load_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: the top level must be a mapping")):
        load(Experiment, path)


def test_load_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing\n")
    assert load(Planner, path) == Planner()


def test_load_malformed_yaml_names_the_location(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: a\nplanner:\n  horizon: [1, 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:4:1: invalid YAML")):
        load(Experiment, path)


def test_load_duplicate_key_is_refused(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nplanner:\n  horizon: 1\n  horizon: 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:4:3: invalid YAML: found duplicate key 'horizon'")):
        load(Experiment, path)


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {horizon: 4, method: cem}\nplanner:\n  <<: *b\n  horizon: 9\n")
    data = yaml.safe_load(path.read_text())
    assert data["planner"] == {"horizon": 9, "method": "cem"}
    del data["base"]
    assert load(Experiment, {"name": "a", **data}).planner == Planner(horizon=9, method="cem")


def test_dump_then_load_is_equal(tmp_path):
    cfg = custom()
    path = dump(cfg, tmp_path / "run" / "config.yaml")
    assert load(Experiment, path) == cfg
    text = path.read_text()
    assert text.startswith("name: run\nseed: 3\n")  # declaration order, not sorted
    assert "hidden: [128, 32, 8]" in text
    assert dumps(cfg) == text


def test_dump_keeps_strings_that_look_like_other_scalars(tmp_path):
    cfg = Experiment(name="yes", model=Model(extra={"a": "1e-3", "b": "null", "c": "no"}))
    assert load(Experiment, dump(cfg, tmp_path / "c.yaml")) == cfg


# ----------------------------------------------------------------------------- replace_path


def test_replace_path_nested():
    cfg = custom()
    new = replace_path(cfg, "planner.noise.scale", 3)
    assert new.planner.noise.scale == 3.0 and type(new.planner.noise.scale) is float
    assert new.planner.horizon == cfg.planner.horizon
    assert cfg.planner.noise.scale == 0.2
    assert replace_path(cfg, "model.hidden", [1, 2]).model.hidden == (1, 2)


def test_replace_path_whole_section():
    cfg = replace_path(Experiment(name="a"), "planner", Planner(horizon=5))
    assert cfg.planner == Planner(horizon=5)
    assert replace_path(cfg, "prior", {"scale": 1}).prior == Noise(scale=1.0)
    assert replace_path(cfg, "prior", None).prior is None


def test_replace_path_checks_types_values_and_keys():
    cfg = Experiment(name="a")
    with pytest.raises(ConfigError, match=re.escape("planner.horizon: expected int, got 'x' (str)")):
        replace_path(cfg, "planner.horizon", "x")
    with pytest.raises(ConfigError, match=re.escape("planner.horizon: must be >= 1, got 0")):
        replace_path(cfg, "planner.horizon", 0)
    with pytest.raises(ConfigError, match=re.escape("planner.horizon: must be <= 100, got 500")):
        replace_path(cfg, "planner.horizon", 500)
    with pytest.raises(ConfigError, match=re.escape("planner.horizn: unknown key in planner; did you mean 'horizon'?")):
        replace_path(cfg, "planner.horizn", 3)
    with pytest.raises(ConfigError, match=re.escape("planner.horizon: not a config section")):
        replace_path(cfg, "planner.horizon.x", 3)
    with pytest.raises(ConfigError, match=re.escape("planner.noise: scale must be >= 0, got -1.0")):
        replace_path(cfg, "planner", Planner(noise=Noise(scale=-1)))
