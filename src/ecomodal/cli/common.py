"""Small parsers shared by the command groups."""

from __future__ import annotations

import typer


def numbers(text: str, kind: type, option: str) -> list:
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"{option} expects comma-separated numbers; got {text!r}."
        ) from None


def parse_devices(text: str) -> int | str:
    """``--devices``: a count ("2") as an int, anything else ("auto", "0,1") as given."""
    return int(text) if text.isdigit() else text
