"""What values a setting may take, declared beside its default, and the one check that reads the declarations.

Every field of a settings dataclass is made with :func:`setting` (or is a nested settings dataclass), e.g.
``min_similarity: float = setting(0.7, low=-1, high=1)``. :func:`check` walks a settings object and raises
one :class:`~equivar_core.errors.EquivarError` naming the first bad field: a number that is not finite or
lies outside its range, a value that is not one of its choices, an empty tuple, a tuple element that breaks
the element rule. ``RunSettings.validate`` calls it, so a bad value is refused before a run writes anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass

from .errors import EquivarError

_KEY = "limits"


@dataclass(frozen=True)
class Limits:
    """The values one setting (or each element of a tuple setting) may take.

    ``low``/``high``: inclusive bounds, unless ``low_open``/``high_open`` (then the bound itself is
    refused); ``choices``: the only values allowed; ``nonempty``: a tuple must hold at least one value;
    ``divides``: the value must divide this number evenly (a sweep step of a full turn).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    nonempty: bool = False
    divides: float | None = None

    def describe(self, whole: bool = False) -> str:
        """The rule in words, e.g. ``a number in (0, 360]`` (``whole``: ``a whole number ...``)."""
        number = "a whole number" if whole else "a number"
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            rule = (f"{number} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                    f"{')' if self.high_open else ']'}")
        elif self.low is not None:
            rule = f"{number} {'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            rule = f"{number} {'<' if self.high_open else '<='} {self.high:g}"
        else:
            rule = f"{number}, finite"
        return rule + (f" that divides {self.divides:g}" if self.divides else "")

    def accepts(self, value) -> bool:
        """Whether one (scalar) value keeps the rule."""
        if self.choices:
            return value in self.choices
        if isinstance(value, str):            # a text setting without choices (a path): checked where it is read
            return True
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return isinstance(value, bool) and self.low is None and self.high is None
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        if self.divides:
            ratio = self.divides / value
            return abs(ratio - round(ratio)) < 1e-9
        return True


def setting(default, **limits):
    """A dataclass field with ``default`` and its :class:`Limits` (keywords as there)."""
    return field(default=default, metadata={_KEY: Limits(**limits)})


def limits_of(f) -> Limits | None:
    """The declared limits of a dataclass field, or None."""
    return f.metadata.get(_KEY)


def leaf_fields(obj, prefix: str = "") -> list[tuple[str, object, Limits | None]]:
    """``(dotted name, value, limits)`` of every field of ``obj`` that is not a settings dataclass itself,
    walking nested settings (e.g. ``tuning.stimuli.orientation_step``)."""
    out = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = prefix + f.name
        if is_dataclass(value):
            out += leaf_fields(value, name + ".")
        else:
            out.append((name, value, limits_of(f)))
    return out


def check(obj, prefix: str = "") -> None:
    """Raise :class:`EquivarError` (one line) for the first field of ``obj`` that breaks its limits."""
    for name, value, limits in leaf_fields(obj, prefix):
        if limits is None:
            continue
        if isinstance(value, tuple):
            if limits.nonempty and not value:
                raise EquivarError(f"setting {name} is empty: give at least one value "
                                   f"({'each ' + limits.describe()})")
            bad = [v for v in value if not limits.accepts(v)]
            if bad:
                raise EquivarError(f"setting {name}={','.join(str(v) for v in value)}: {bad[0]!r} is not "
                                   f"{limits.describe()}")
        elif value is not None and not limits.accepts(value):
            raise EquivarError(f"setting {name}={value!r}: must be {limits.describe(isinstance(value, int))}")
