"""A search's ranges: what ``--search lr=1e-4:1e-2:log`` and ``--search hidden=32,64,128`` mean.

    from flowlib.study.space import parse_range, SearchRange
    r = parse_range("lr", "1e-4:1e-2:log")       # SearchRange(name="lr", kind="float", low=1e-4, high=1e-2, log=True)
    r = parse_range("hidden", "32:128")          # an integer range (every whole number from 32 to 128)
    r = parse_range("hidden", "32,64,128")       # a list: one of these values
    r.distribution()                             # the Optuna distribution it is sampled from
    r.to_text()                                  # "1e-4:1e-2:log": how it is stored with the study

A range is ``LOW:HIGH`` (``:log`` samples on a log scale, for rates and widths; ``:STEP`` an
integer grid) for a number setting, or a comma-separated list for any setting. Each is
checked against the setting it searches, before anything is stored, in one sentence naming
the setting: an empty range (LOW not below HIGH), a log range that reaches 0, an end the
setting does not allow, a list with one value (nothing to search), a setting a study may
not vary. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flowlib.settings import ConfigError

__all__ = ["SearchRange", "parse_range", "MAX_CHOICES"]

MAX_CHOICES = 32


@dataclass(frozen=True)
class SearchRange:
    """One setting's range: a float or int interval (optionally log-scaled or stepped), or a list."""

    name: str
    kind: str                  # "float" | "int" | "choice"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: int | None = None
    choices: tuple = ()

    def distribution(self):
        """The Optuna distribution a trial's value is drawn from (imported late: optuna)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "float":
            return FloatDistribution(float(self.low), float(self.high), log=self.log)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=self.step or 1)
        return CategoricalDistribution(list(self.choices))

    def to_text(self) -> str:
        if self.kind == "choice":
            return ",".join("none" if v is None else ("on" if v is True else "off" if v is False else str(v))
                            for v in self.choices)
        tail = ":log" if self.log else (f":{self.step}" if self.step else "")
        return f"{self.low:g}:{self.high:g}{tail}" if self.kind == "float" else f"{self.low}:{self.high}{tail}"

    def words(self) -> str:
        if self.kind == "choice":
            return f"{self.name} in {{{', '.join(map(str, self.choices))}}}"
        scale = " (log scale)" if self.log else (f" in steps of {self.step}" if self.step else "")
        return f"{self.name} from {self.low:g} to {self.high:g}{scale}"


def _number(name: str, text: str, kind: str):
    try:
        value = int(text) if kind == "int" else float(text)
    except ValueError:
        raise ConfigError(f"search range of {name}: {text!r} is not {'a whole number' if kind == 'int' else 'a number'}",
                          name) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"search range of {name}: {text!r} is not a finite number", name)
    return value


def parse_range(name: str, text: str, setting, check_value) -> SearchRange:
    """The range of setting ``name`` (its :class:`~flowlib.settings.Setting`) from ``text``.

    ``check_value(name, value)`` raises ConfigError when the setting does not allow ``value``
    (the study's planner passes one that builds the config), so every end and every listed
    value is checked against the setting itself.
    """
    raw = str(text).strip()
    if not raw:
        raise ConfigError(f"search range of {name} is empty: give LOW:HIGH[:log] or a list V1,V2,...", name)
    if ":" in raw and "," not in raw:
        if setting.kind not in ("int", "float"):
            raise ConfigError(f"{name} is a {setting.kind} setting: search it with a list of values "
                              f"(e.g. {name}={','.join(map(str, list(setting.choices or ('a', 'b'))[:2]))}), "
                              "not a LOW:HIGH range", name)
        parts = [p.strip() for p in raw.split(":")]
        if len(parts) not in (2, 3):
            raise ConfigError(f"search range of {name}: {raw!r} is not LOW:HIGH, LOW:HIGH:log or LOW:HIGH:STEP", name)
        low, high = _number(name, parts[0], setting.kind), _number(name, parts[1], setting.kind)
        log, step = False, None
        if len(parts) == 3:
            if parts[2].lower() == "log":
                log = True
            elif setting.kind == "int":
                step = _number(name, parts[2], "int")
                if step < 1:
                    raise ConfigError(f"search range of {name}: the step must be at least 1, got {step}", name)
            else:
                raise ConfigError(f"search range of {name}: the third part must be 'log', got {parts[2]!r}", name)
        if not low < high:
            raise ConfigError(f"search range of {name} is empty: {low:g}:{high:g} (LOW must be below HIGH)", name)
        if log and low <= 0:
            raise ConfigError(f"search range of {name}: a log scale needs LOW above 0, got {low:g}", name)
        if step is not None and (high - low) % step:
            raise ConfigError(f"search range of {name}: {high} - {low} is not a multiple of the step {step}", name)
        for end in (low, high):
            check_value(name, end)
        return SearchRange(name, setting.kind, low, high, log, step)
    values = []
    for item in raw.split(","):
        if not item.strip():
            continue
        values.append(check_value(name, item.strip()))
    distinct: list[Any] = []
    for v in values:
        if v not in distinct:
            distinct.append(v)
    if len(distinct) < 2:
        raise ConfigError(f"search list of {name} has {len(distinct)} distinct value(s): give at least two "
                          "(a setting with one value is not searched; set it with --set)", name)
    if len(distinct) > MAX_CHOICES:
        raise ConfigError(f"search list of {name} has {len(distinct)} values; at most {MAX_CHOICES}", name)
    return SearchRange(name, "choice", choices=tuple(distinct))
