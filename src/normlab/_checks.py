"""Field checks for the config dataclasses: each error names the class, the field, the value and the rule."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

__all__ = ["check_int", "check_float", "check_bool", "check_choice"]


def _got(value: Any) -> str:
    return f"got {value!r} ({type(value).__name__})"


def check_int(obj: Any, name: str, *, lo: int | None = None, hi: int | None = None, optional: bool = False) -> None:
    """``obj.<name>`` is an int (not a bool) in [lo, hi] (or None when ``optional``)."""
    value = getattr(obj, name)
    if optional and value is None:
        return
    rule = "an int" + (f" >= {lo}" if lo is not None and hi is None else "") + \
        (f" in [{lo}, {hi}]" if lo is not None and hi is not None else "") + (" or None" if optional else "")
    if isinstance(value, bool) or not isinstance(value, int) or \
            (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{type(obj).__name__}.{name} must be {rule}, {_got(value)}")


def check_float(obj: Any, name: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                hi_open: bool = False, optional: bool = False) -> None:
    """``obj.<name>`` is a finite real number (int or float, not bool) within the given bounds."""
    value = getattr(obj, name)
    if optional and value is None:
        return
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    if lo is not None and hi is not None:
        rule = f"a number in {left}{lo}, {hi}{right}"
    elif lo is not None:
        rule = f"a number {'>' if lo_open else '>='} {lo}"
    elif hi is not None:
        rule = f"a number {'<' if hi_open else '<='} {hi}"
    else:
        rule = "a finite number"
    rule += " or None" if optional else ""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        raise ValueError(f"{type(obj).__name__}.{name} must be {rule}, {_got(value)}")


def check_bool(obj: Any, name: str, *, optional: bool = False) -> None:
    value = getattr(obj, name)
    if not (isinstance(value, bool) or (optional and value is None)):
        raise ValueError(f"{type(obj).__name__}.{name} must be True or False{' or None' if optional else ''}, "
                         f"{_got(value)}")


def check_choice(obj: Any, name: str, choices: Collection[str], value: Any = None) -> None:
    """``obj.<name>`` (or ``value``, one entry of it) is one of ``choices``."""
    value = getattr(obj, name) if value is None else value
    if not isinstance(value, str) or value not in choices:
        kind = "" if isinstance(value, str) else f" ({type(value).__name__})"
        raise ValueError(f"{type(obj).__name__}: unknown {name} {value!r}{kind}; choose one of {', '.join(choices)}")
