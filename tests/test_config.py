"""One mechanism validates every field of every learner config (metarl.config): this walks each
config's every field with values of the wrong type and out of its declared range."""
import dataclasses
import importlib
import math
import typing

import pytest

from metarl import config as C
from metarl.cli import ALGOS

CONFIGS = [(module, cls) for module, cls, _ in ALGOS.values()] + [("metarl.algos.reptile", "SineConfig")]


def config_classes():
    return [getattr(importlib.import_module(m), c) for m, c in CONFIGS]


def bad_values(f: dataclasses.Field, annotation) -> list:
    """Values the field must refuse: wrong types, non-finite numbers, values outside its range."""
    kind = C.element_type(annotation)
    bad = {int: [1.5, True, "3", None], float: [math.nan, math.inf, -math.inf, "0.1", True, None],
           bool: ["yes", 1, None], str: [3, None]}[kind]
    choices = C.choices_of(f)
    if choices is not None:
        bad.append("no-such-choice" if kind is str else max(choices) + 1)
    for key, bound in C.bounds_of(f).items():
        step = 1 if kind is int else max(abs(bound) * 1e-6, 1e-9)
        bad.append({"gt": bound, "ge": bound - step, "lt": bound, "le": bound + step}[key])
    if typing.get_origin(annotation) is tuple:
        return ["x", (), 5] + [(v,) for v in bad if v is not None]
    return bad


def cases():
    for cls in config_classes():
        types = C.field_types(cls)
        for f in dataclasses.fields(cls):
            for v in bad_values(f, types[f.name]):
                yield pytest.param(cls, f.name, v, id=f"{cls.__name__}.{f.name}={v!r}")


@pytest.mark.parametrize("cls,name,value", list(cases()))
def test_every_field_refuses_bad_values(cls, name, value):
    with pytest.raises(C.ConfigError, match=name):
        cls(**{name: value})


@pytest.mark.parametrize("cls", config_classes(), ids=lambda c: c.__name__)
def test_defaults_are_valid_and_every_number_declares_its_range(cls):
    cfg = cls()
    types = C.field_types(cls)
    for f in dataclasses.fields(cls):
        kind = C.element_type(types[f.name])
        assert kind in (int, float, bool, str), f.name
        if kind in (int, float):
            assert C.bounds_of(f) or C.choices_of(f) is not None, f"{cls.__name__}.{f.name} declares no range"
    assert dataclasses.asdict(cfg) == cfg.to_dict()


def test_config_error_is_a_value_error_and_a_type_error():
    from metarl.algos.rl2 import RL2Config

    for exc in (ValueError, TypeError):
        with pytest.raises(exc, match="lr must be a positive finite number, got nan"):
            RL2Config(lr=float("nan"))


def test_tuples_accept_lists_and_store_tuples():
    from metarl.algos.maml import MAMLConfig

    cfg = MAMLConfig(hidden_sizes=[8, 8])
    assert cfg.hidden_sizes == (8, 8)
    with pytest.raises(C.ConfigError, match="hidden_sizes"):
        MAMLConfig(hidden_sizes=[8, 0])


def test_describe_range():
    @dataclasses.dataclass
    class Demo(C.Config):
        a: float = C.field(0.5, ge=0, le=1)
        b: int = C.field(3, ge=1)
        c: float = C.field(1.0, gt=0, lt=2)
        d: str = C.field("x", choices=("x", "y"))

    text = {f.name: C.describe_range(f) for f in dataclasses.fields(Demo)}
    assert text == {"a": "in [0, 1]", "b": ">= 1", "c": "in (0, 2)", "d": "one of ('x', 'y')"}
    with pytest.raises(C.ConfigError, match="c must be a finite number in \\(0, 2\\), got 2"):
        Demo(c=2)



@pytest.mark.parametrize("bad", ["nope", "[1, 2]", '"text"', '{"max_episode_steps": 3}', '{"seed": 1}'])
def test_env_options_refused_unless_a_json_object_of_free_names(bad):
    from metarl.algos.maml import MAMLConfig
    from metarl.algos.rl2 import RL2Config

    for cls in (RL2Config, MAMLConfig):
        with pytest.raises(C.ConfigError, match="env_options"):
            cls(env_options=bad)


def test_env_options_reach_the_env():
    from metarl.algos import maml, rl2

    env = rl2.make_env(rl2.RL2Config(env="Bandit-v0", arms=2, num_envs=4, env_options='{"dependent": true}'))
    assert env.base.dependent is True and env.base.arms == 2
    pytest.importorskip("mujoco")
    cfg = maml.MAMLConfig(env="HalfCheetahVel-v0", env_options='{"velocity_range": [0, 2]}')
    assert maml.make_env(cfg, 2).velocity_range == (0.0, 2.0)
