"""How a setting is declared, explained and checked: the machinery under ``flowlib.config``.

    from flowlib.settings import CheckedConfig, ConfigError, Setting, setting, settings_of
    @dataclass(frozen=True)
    class MyConfig(CheckedConfig):
        batch_size: int = setting(64, kind="int", bounds=(1, 4096), label="Batch size",
                                  flag="--batch-size", help="images per step")

A field declared with :func:`setting` carries a :class:`Setting` in its metadata: its label,
one-line help, allowed values, CLI flag, unit, and whether the Train form shows it and the
Runs diff compares it. :class:`CheckedConfig` checks every such field when the dataclass is
made (``ConfigError`` naming the field) and gives the dict and JSON round trips. The CLI,
the Train page's widgets and the Runs page's comparison rows are generated from these.

No torch, and no other flowlib import: the ground floor.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["ConfigError", "Setting", "setting", "settings_of", "form_fields", "field_errors",
           "dataclass_from_dict", "CheckedConfig"]


class ConfigError(ValueError):
    """A setting with a bad value; ``field`` names it (e.g. "batch_size"), so a form can mark it."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# -- the metadata of one setting ---------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """How one config field is named, explained, checked and offered (CLI, form, Runs diff)."""

    label: str                  # widget label and Runs row ("Batch size")
    help: str                   # one line: the CLI's --help, the start of every tooltip
    kind: str                   # int | float | bool | choice | device | temperatures | shape | options
    choices: Mapping | None = None      # allowed value -> words shown for it (choice, device; int: the picker)
    bounds: tuple | None = None         # (lo, hi) of an int or float; (max channels, max side) of a shape
    low_open: bool = False      # float: lo itself is not allowed (0 < lr)
    high_open: bool = False     # float: hi itself is not allowed (lr_drop < 1)
    optional: bool = False      # None is allowed
    none_words: str = ""        # what None means, in words ("no clipping")
    flag: str | None = None     # CLI flag; None: not on the command line
    cli_none: Any = None        # the CLI value that stands for None (--grad-clip 0)
    unit: str = ""              # "images", "steps", "minutes": after numbers in words
    explain: str = ""           # the form's tooltip, when one line is not enough to teach it
    form: bool = False          # the Train page's settings grid shows it
    form_step: float | None = None      # number-input step of that widget
    form_format: str | None = None      # number-input format, e.g. "%.5f"
    compare: bool = True        # the Runs page compares it between runs
    short: str = ""             # the Runs row's name (default: the label, lower-case unless a name)

    @property
    def row_label(self) -> str:
        """"Batch size" -> "batch size"; words like ActNorm and NaN keep their capitals."""
        if self.short:
            return self.short
        first = self.label.split(" ", 1)[0]
        return self.label if first[1:] != first[1:].lower() else self.label[:1].lower() + self.label[1:]

    def range_text(self) -> str:
        """Allowed values in words: "1..4096", "0 < value ≤ 1", "one of a, b"."""
        if self.bounds is not None:
            lo, hi = self.bounds
            if self.kind == "int":
                return f"{lo}..{hi}"
            return f"{lo:g} {'<' if self.low_open else '≤'} value {'<' if self.high_open else '≤'} {hi:g}"
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        return ""

    def tooltip(self) -> str:
        """The Train form's help: the explanation (or the one line), then the valid values."""
        text = self.explain or self.help[:1].upper() + self.help[1:] + "."
        valid = self.range_text()
        return f"{text} Valid: {valid}." if valid and self.kind in ("int", "float") else text

    def words(self, value) -> str:
        """A value as the app says it: a choice's words, None's meaning, else the value."""
        if value is None:
            return self.none_words or "–"
        if self.choices is not None and value in self.choices:
            return str(self.choices[value])
        return str(value)

    def check(self, name: str, value):
        """``value`` as stored (lists -> tuples, ints -> floats), or ConfigError naming the field."""
        if value is None and self.optional:
            return None
        return _CHECKS[self.kind](self, name, value)


def setting(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, **meta):
    return field(default=default, default_factory=default_factory, metadata={"setting": Setting(**meta)})


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _or_none(s: Setting) -> str:
    return " or None" if s.optional else ""


def _check_int(s: Setting, name: str, v):
    lo, hi = s.bounds
    if not _is_int(v) or not lo <= v <= hi:
        raise ConfigError(f"{name} must be an integer in {lo}..{hi}{_or_none(s)}, got {v!r}", name)
    return v


def _check_float(s: Setting, name: str, v):
    lo, hi = s.bounds
    ok = _is_number(v) and (lo < v if s.low_open else lo <= v) and (v < hi if s.high_open else v <= hi)
    if not ok:
        raise ConfigError(f"{name} must be a finite number with {s.range_text()}{_or_none(s)}, got {v!r}", name)
    return float(v)


def _check_bool(s: Setting, name: str, v):
    if not isinstance(v, bool):
        raise ConfigError(f"{name} must be True or False, got {v!r}", name)
    return v


def _check_choice(s: Setting, name: str, v):
    if not isinstance(v, str) or v not in s.choices:
        raise ConfigError(f"{name} must be one of {', '.join(s.choices)}; got {v!r}", name)
    return v


def _check_device(s: Setting, name: str, v):
    ok = isinstance(v, str) and (v in s.choices or (v.startswith("cuda:") and v[5:].isdigit()))
    if not ok:
        raise ConfigError(f"{name} must be one of {', '.join(s.choices)} (or cuda:N); got {v!r}", name)
    return v


def _check_temperatures(s: Setting, name: str, v):
    temps = tuple(v) if isinstance(v, list) else v
    if (not isinstance(temps, tuple) or not 1 <= len(temps) <= 8
            or not all(_is_number(t) and 0 <= t <= 2 for t in temps)):
        raise ConfigError(f"{name} must be 1..8 numbers in 0..2, got {v!r}", name)
    return temps


def _check_shape(s: Setting, name: str, v):
    shape = tuple(v) if isinstance(v, list) else v
    if not isinstance(shape, tuple) or len(shape) != 3 or not all(_is_int(x) for x in shape):
        raise ConfigError(f"{name} must be three integers (C, H, W), got {v!r}", name)
    c, h, w = shape
    max_channels, max_side = s.bounds
    if not 1 <= c <= max_channels:
        raise ConfigError(f"{name} channels must be in 1..{max_channels}, got {c}", name)
    if h > max_side or w > max_side:
        raise ConfigError(f"{name} height and width must be at most {max_side}, got {h}×{w}", name)
    return shape


def _check_options(s: Setting, name: str, v):
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise ConfigError(f"{name} must be a dict with string keys, got {v!r}", name)
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must hold plain JSON values (str, number, bool), got {v!r}", name) from None
    return v


_CHECKS = {"int": _check_int, "float": _check_float, "bool": _check_bool, "choice": _check_choice,
           "device": _check_device, "temperatures": _check_temperatures, "shape": _check_shape,
           "options": _check_options}


# -- what both configs share ---------------------------------------------------------------------
def settings_of(cls) -> list[tuple[str, Setting]]:
    """(field name, Setting) of a config class, in declaration order."""
    return [(f.name, f.metadata["setting"]) for f in dataclasses.fields(cls) if "setting" in f.metadata]


def form_fields(cls) -> tuple[str, ...]:
    """The fields the Train page's settings grid shows, in declaration order."""
    return tuple(name for name, s in settings_of(cls) if s.form)


def field_errors(cls, values: Mapping) -> dict[str, str]:
    """{field: message} for each value that is wrong on its own (a form marks them all at once)."""
    meta = dict(settings_of(cls))
    errors = {}
    for name, value in values.items():
        if name in meta:
            try:
                meta[name].check(name, value)
            except ConfigError as exc:
                errors[name] = str(exc)
    return errors


def dataclass_from_dict(cls, d: dict):
    """``cls(**d)`` for a config dataclass, refusing a non-dict or unknown keys by name."""
    if not isinstance(d, dict):
        raise ConfigError(f"a {cls.__name__} dict is needed, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(known)}",
                          unknown[0])
    return cls(**d)


class CheckedConfig:
    """Validation and dict round trips from the fields' Settings (both configs inherit it)."""

    def __post_init__(self):
        for name, s in settings_of(type(self)):
            object.__setattr__(self, name, s.check(name, getattr(self, name)))
        self._check_together()

    def _check_together(self) -> None:
        """Rules that involve several fields (a field's own range is in its Setting)."""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a dict (a checkpoint's ``config``, the store's ``train``); unknown keys are an error."""
        return dataclass_from_dict(cls, d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


