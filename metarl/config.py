"""Learner configs: dataclasses whose every field is checked from its type annotation and a
declared range, by one mechanism.

A config subclasses :class:`Config` and declares each numeric or choice field with :func:`field`::

    @dataclasses.dataclass
    class MyConfig(Config):
        lr: float = field(3e-3, gt=0)
        \"\"\"Adam learning rate.\"\"\"
        gamma: float = field(0.99, ge=0, le=1)
        \"\"\"Discount.\"\"\"
        env: str = field("Bandit-v0", choices=env_ids)
        \"\"\"Task distribution.\"\"\"

Construction runs :func:`validate`: the value's type must match the annotation (``int``: an int, not a
bool or a float such as 1.5; ``float``: an int or float, finite; ``bool``: a bool; ``str``;
``tuple[int, ...]`` / ``tuple[float, ...]``: a sequence of those, stored as a tuple) and lie in the
declared range (``gt``/``ge``/``lt``/``le``, applied to each element of a tuple) or among ``choices``.
A bad value raises :class:`ConfigError` (a ``ValueError`` and a ``TypeError``) naming the field and
what it must be. Checks between fields go in the subclass's :meth:`Config.check`.

This module imports no torch: ``metarl train NAME --help`` builds its options from it quickly.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Sequence

_BOUNDS = ("gt", "ge", "lt", "le")
_OPS = {"gt": lambda v, b: v > b, "ge": lambda v, b: v >= b, "lt": lambda v, b: v < b, "le": lambda v, b: v <= b}


def field(default, *, gt=None, ge=None, lt=None, le=None, choices: Sequence | Callable[[], Sequence] | None = None):
    """A dataclass field with a declared range (``gt``/``ge``/``lt``/``le``) or a set of ``choices``
    (a sequence, or a function returning one, called at validation: e.g. the registered env ids)."""
    bounds = {k: v for k, v in zip(_BOUNDS, (gt, ge, lt, le)) if v is not None}
    return dataclasses.field(default=default, metadata={"bounds": bounds, "choices": choices})


def bounds_of(f: dataclasses.Field) -> dict:
    """``{"gt"|"ge"|"lt"|"le": bound}`` declared for a field (empty when none)."""
    return dict(f.metadata.get("bounds", {}))


def choices_of(f: dataclasses.Field) -> tuple | None:
    """The field's allowed values, or None."""
    choices = f.metadata.get("choices")
    if callable(choices):
        choices = choices()
    return None if choices is None else tuple(choices)


class ConfigError(ValueError, TypeError):
    """A config field of the wrong type or out of range (both a ValueError and a TypeError, so either
    ``except`` catches it); the message names the field and what it must be."""


def describe_range(f: dataclasses.Field) -> str:
    """The declared range in words, e.g. ``> 0``, ``in [0, 1]``, ``one of ('a', 'b')`` ('' when none)."""
    choices = choices_of(f)
    if choices is not None:
        return f"one of {choices}"
    b = bounds_of(f)
    lo = ("(", b["gt"]) if "gt" in b else ("[", b["ge"]) if "ge" in b else None
    hi = (")", b["lt"]) if "lt" in b else ("]", b["le"]) if "le" in b else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]}, {hi[1]}{hi[0]}"
    if lo:
        return f"{'>' if lo[0] == '(' else '>='} {lo[1]}"
    if hi:
        return f"{'<' if hi[0] == ')' else '<='} {hi[1]}"
    return ""


def describe(f: dataclasses.Field, kind: type) -> str:
    """What a value of the field must be, in words: ``a positive int``, ``a finite number in [0, 1]``, ..."""
    b, rng = bounds_of(f), describe_range(f)
    if choices_of(f) is not None:
        return rng
    if kind is int:
        if b == {"ge": 1} or b == {"gt": 0}:
            return "a positive int"
        if b == {"ge": 0}:
            return "a non-negative int"
        return f"an int {rng}".rstrip()
    if kind is float:
        if b == {"gt": 0}:
            return "a positive finite number"
        return f"a finite number {rng}".rstrip()
    if kind is bool:
        return "a bool (true or false)"
    return f"a str {rng}".rstrip() if kind is str else kind.__name__


def field_types(cls) -> dict[str, object]:
    """``{field name: resolved annotation}`` of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def element_type(annotation) -> type:
    """``int`` for ``int`` and ``tuple[int, ...]``, and so on."""
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0]
    return annotation


def _is_kind(v, kind: type) -> bool:
    if kind is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if kind is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return isinstance(v, kind)


def _in_range(v, f: dataclasses.Field) -> bool:
    choices = choices_of(f)
    if choices is not None and v not in choices:
        return False
    return all(_OPS[key](v, bound) for key, bound in bounds_of(f).items())


def validate(cfg) -> None:
    """Check every field of ``cfg`` against its annotation and declared range; :class:`ConfigError`
    naming the first bad field. A list given for a tuple field is stored as a tuple."""
    types = field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        name, v, annotation = f.name, getattr(cfg, f.name), types[f.name]
        kind = element_type(annotation)
        if kind not in (int, float, bool, str):
            raise ConfigError(f"{name}: unsupported config field type {annotation!r}")
        if typing.get_origin(annotation) is tuple:
            if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or not len(v) \
                    or not all(_is_kind(x, kind) and _in_range(x, f) for x in v):
                raise ConfigError(f"{name} must be a non-empty sequence of {describe(f, kind)}s, got {v!r}")
            object.__setattr__(cfg, name, tuple(v))
        elif not (_is_kind(v, kind) and _in_range(v, f)):
            raise ConfigError(f"{name} must be {describe(f, kind)}, got {v!r}")


@dataclasses.dataclass
class Config:
    """Base of every learner's config: fields are validated on construction (:func:`validate`),
    then :meth:`check` runs the checks between fields."""

    def __post_init__(self):
        validate(self)
        self.check()

    def check(self) -> None:
        """Checks between fields (raise ``ValueError`` naming them); none by default."""

    def to_dict(self) -> dict:
        """The fields as plain values (what ``config.json`` and checkpoints store)."""
        return dataclasses.asdict(self)


def env_options(text: str, reserved: Sequence[str] = ()) -> dict:
    """Parse an ``env_options`` field: a JSON object of extra keyword arguments for ``metarl.make_vec``
    (e.g. ``'{"velocity_range": [0, 2]}'``, ``'{"task_name": "reach-v3"}'``). :class:`ConfigError` when it
    is not a JSON object or sets a name in ``reserved`` (one the config sets from its own fields)."""
    import json

    try:
        options = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"env_options must be a JSON object, got {text!r} ({e})") from None
    if not isinstance(options, dict):
        raise ConfigError(f"env_options must be a JSON object, got {text!r}")
    clash = sorted(set(options) & set(reserved))
    if clash:
        raise ConfigError(f"env_options must not set {', '.join(clash)} (the config's own fields set them)")
    return options


def env_ids() -> tuple[str, ...]:
    """The registered metarl env ids (the ``choices`` of a learner's ``env`` field)."""
    from metarl.envs.registry import ENV_CLASSES

    return tuple(sorted(ENV_CLASSES))
