"""The canonical modalities of the TaxaBind / ProM3E embedding space, in their fixed order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ecomodal.errors import UnknownModalityError

#: Canonical order: ProM3E consumes embeddings stacked as ``[batch, 6, 512]`` in exactly this order.
MODALITIES: tuple[str, ...] = ("image", "sat", "loc", "env", "text", "audio")

#: Dimension of every embedding in the shared TaxaBind space.
EMBED_DIM = 512

#: The binding modality of TaxaBind.
BINDING_MODALITY = "image"


def check_modality(name: str, allowed: Sequence[str] = MODALITIES) -> str:
    """Return ``name`` if it is one of ``allowed``, else raise a clear :class:`UnknownModalityError`."""
    if name not in allowed:
        raise UnknownModalityError(
            f"Unknown modality {name!r}; expected one of: {', '.join(allowed)}."
        )
    return name


def parse_modalities(
    value: str | Iterable[str] | None, allowed: Sequence[str] = MODALITIES
) -> list[str]:
    """Parse ``"image,loc"`` or ``["image", "loc"]`` into a checked list in the order of ``allowed``.

    Duplicates are dropped. An empty selection is an error.
    """
    if value is None:
        return list(allowed)
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if n]
    if not names:
        raise UnknownModalityError(
            f"No modality given; expected a selection from: {', '.join(allowed)}."
        )
    for name in names:
        check_modality(name, allowed)
    chosen = set(names)
    return [m for m in allowed if m in chosen]
