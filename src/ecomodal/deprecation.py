"""Keyword names are a contract: a renamed argument keeps working, with a DeprecationWarning."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from ecomodal.errors import InvalidArgumentError

F = TypeVar("F", bound=Callable[..., Any])


def renamed_arguments(**old_to_new: str) -> Callable[[F], F]:
    """Accept each old keyword name for its new one, warning once per call.

    >>> @renamed_arguments(table="data")
    ... def evaluate(data): ...
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise InvalidArgumentError(
                        f"{function.__name__}() got both {old}= and {new}=; {old}= is the old "
                        f"name of {new}=, pass only {new}=."
                    )
                warnings.warn(
                    f"{function.__name__}({old}=...) is deprecated; use {new}=.",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        wrapper.__renamed_arguments__ = dict(old_to_new)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
