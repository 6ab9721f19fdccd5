"""One parser for the textual options shared by the Python API and the command line.

``KEY=VALUE`` pairs (``--column-map``, ``--encoder``, ``--media``, ``--data NAME=PATH``), comma
lists (``--modalities``) and number lists (``--shots``, ``--k``, ``--alphas``) are read here and
nowhere else; a malformed value raises :class:`~ecomodal.errors.OptionFormatError` naming the option.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ecomodal.errors import InvalidArgumentError, OptionFormatError

T = TypeVar("T")


def parse_list(text: str | Iterable[str] | None, *, sep: str = ",") -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; a sequence is stripped the same way; None -> []."""
    if text is None:
        return []
    parts = text.split(sep) if isinstance(text, str) else [str(part) for part in text]
    return [part.strip() for part in parts if part.strip()]


def parse_key_values(
    items: str | Iterable[str] | Mapping[str, Any] | None,
    *,
    option: str,
    key: str = "KEY",
    value: str = "VALUE",
    allow_bare: Callable[[str], tuple[str, str]] | None = None,
) -> dict[str, str]:
    """Read ``KEY=VALUE`` pairs (a mapping passes through) into a dict, in order.

    ``allow_bare`` turns an item without ``=`` into a pair (for ``--data PATH``, named by its
    stem); without it such an item is an error naming ``option`` and the expected form.
    """
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    if isinstance(items, str):
        items = [items]
    pairs: dict[str, str] = {}
    for item in items:
        text = str(item)
        left, sep, right = text.partition("=")
        left, right = left.strip(), right.strip()
        if not sep and allow_bare is not None:
            left, right = allow_bare(text)
        elif not sep or not left or not right:
            raise OptionFormatError(f"{option} expects {key}={value}; got {text!r}.")
        pairs[left] = right
    return pairs


def parse_numbers(text: str | Iterable[Any], kind: Callable[[str], T], *, option: str) -> list[T]:
    """``"1,5,10"`` -> ``[1, 5, 10]`` (``kind`` converts each part); a sequence converts each item."""
    parts = parse_list(text) if isinstance(text, str) else list(text)
    try:
        return [kind(part) for part in parts]
    except (TypeError, ValueError):
        raise OptionFormatError(
            f"{option} expects comma-separated numbers; got {text!r}."
        ) from None


def parse_linspace(text: str, *, option: str) -> list[float]:
    """``"START:STOP:COUNT"`` -> COUNT evenly spaced values from START to STOP, both included,
    exactly as ``numpy.linspace(START, STOP, COUNT)``."""
    parts = text.split(":")
    try:
        start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        raise OptionFormatError(f"{option} expects START:STOP:COUNT; got {text!r}.") from None
    if len(parts) != 3 or count < 1:
        raise OptionFormatError(f"{option} expects START:STOP:COUNT with COUNT >= 1; got {text!r}.")
    import numpy as np

    return np.linspace(start, stop, count).tolist()


def check_range(
    value: Any,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    integer: bool = False,
) -> Any:
    """``value`` if it is a finite number within the bounds, else an
    :class:`~ecomodal.errors.InvalidArgumentError` saying what ``name`` expects and what it got
    (``"--batch-size must be >= 1; got 0."``). ``integer`` also requires a whole number (bools
    are refused: ``True`` is not a count)."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "a whole number" if integer else "a number"
        raise InvalidArgumentError(f"{name} must be {kind}; got {value!r}.")
    if integer and (not float(value).is_integer()):
        raise InvalidArgumentError(f"{name} must be a whole number; got {value!r}.")
    if not math.isfinite(float(value)):
        raise InvalidArgumentError(f"{name} must be a finite number; got {value!r}.")
    bounds = []
    if minimum is not None:
        bounds.append((">" if exclusive_minimum else ">=", minimum))
    if maximum is not None:
        bounds.append(("<" if exclusive_maximum else "<=", maximum))
    for sign, bound in bounds:
        ok = {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}
        if not ok[sign]:
            wanted = " and ".join(f"{s} {b:g}" for s, b in bounds)
            raise InvalidArgumentError(f"{name} must be {wanted}; got {value!r}.")
    return value
