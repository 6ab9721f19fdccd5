"""Small parsers shared by the command groups (the rest are in :mod:`ecomodal.options`)."""

from __future__ import annotations


def parse_devices(text: str) -> int | str:
    """``--devices``: a count ("2") as an int, anything else ("auto", "0,1") as given."""
    return int(text) if text.isdigit() else text
