"""Validation of embedding rows as they are read or written.

:class:`Validator` checks each batch of a stream: finite values, at least one embedding per row
and ids unique across the whole stream. Its messages name the file and row (a
:class:`BatchOrigin`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ecomodal.errors import InvalidEmbeddingsError

if TYPE_CHECKING:
    from ecomodal.io.batch import EmbeddingBatch


#: The least L2 norm a vector can be scaled to unit length from (``F.normalize``'s floor).
MIN_NORM = 1e-12


def check_normalisable(
    values: np.ndarray,
    rows: np.ndarray,
    *,
    source: str,
    column: str,
    ids: Sequence[object] | np.ndarray | None = None,
    offset: int = 0,
) -> None:
    """Raise :class:`InvalidEmbeddingsError` for the first of ``rows`` (a bool mask) of
    ``values`` [N, D] whose float32 L2 norm is not finite and at least :data:`MIN_NORM`.

    Such a vector (finite values as large as 1e30, or as small as 1e-30) would be normalised to
    zeros or garbage and its modality silently lost; the message names ``source``, ``column`` and
    the row (counted from ``offset``, with its id when ``ids`` are given).
    """
    values = np.asarray(values, dtype=np.float32)
    rows = np.asarray(rows, dtype=bool)
    if not len(values) or not rows.any():
        return
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        norms = np.linalg.norm(values, axis=-1)
    bad = rows & ~(np.isfinite(norms) & (norms >= MIN_NORM))
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    with np.errstate(invalid="ignore"):
        largest = float(np.nanmax(np.abs(values[row]))) if values.shape[-1] else 0.0
    if not np.isfinite(values[row]).all():
        reason = "has NaN or inf values"
    elif np.isfinite(norms[row]):
        reason = f"has L2 norm {float(norms[row]):.3g}, too small to normalise (values up to {largest:.3g})"
    else:
        reason = f"has values up to {largest:.3g}, whose L2 norm overflows float32"
    name = f" (id {ids[row]!r})" if ids is not None else ""
    count = int(bad.sum())
    raise InvalidEmbeddingsError(
        f"{source}: column {column!r}, row {offset + row}{name} {reason}; an embedding must be "
        f"a finite vector with an L2 norm between {MIN_NORM:g} and 3.4e38 (float32)"
        + (f" ({count} such rows in this batch)." if count > 1 else ".")
    )


@dataclass(frozen=True)
class BatchOrigin:
    """Where a batch's rows come from, for error messages.

    Attributes:
        source: the file (or other source) named in messages.
        offset: the row number, in ``source``, of the batch's first row.
        labels: embedding column -> how messages name it (default: ``repr`` of the name).
    """

    source: str
    offset: int = 0
    labels: Mapping[str, str] | None = None


class Validator:
    """Checks rows as they stream: finite values, an embedding per row, ids unique overall.

    Keeps a set of every id seen (and, for error messages, a reference to each batch's id array:
    8 bytes a row, the strings themselves are shared with the set).
    """

    def __init__(self, *, require_any: bool = True):
        self.require_any = require_any
        self._seen: set[str] = set()
        self._chunks: list[tuple[str, int, np.ndarray]] = []

    def check(self, batch: EmbeddingBatch, origin: BatchOrigin) -> None:
        """Raise InvalidEmbeddingsError for the first bad row; record the ids if all is well."""
        source, offset = origin.source, origin.offset
        ids = batch.ids
        labels = origin.labels or {}
        for name, values in batch.embeddings.items():
            label = labels.get(name) or repr(name)
            present = batch.present[name]
            if not len(values) or not values.shape[1]:
                continue
            # A row sum is non-finite iff the row holds NaN/inf, or overflows: confirm exactly.
            with np.errstate(over="ignore", invalid="ignore"):
                suspect = present & ~np.isfinite(values.sum(axis=1))
            if suspect.any():
                rows = np.flatnonzero(suspect)
                bad = rows[~np.isfinite(values[rows]).all(axis=1)]
                if len(bad):
                    row = int(bad[0])
                    raise InvalidEmbeddingsError(
                        f"{source}: column {label}, row {offset + row} "
                        f"(id {ids[row]!r}) has NaN or inf values"
                        + (f" ({len(bad)} such rows in this batch)." if len(bad) > 1 else ".")
                    )
        if self.require_any and len(ids):
            if batch.present:
                any_present = np.logical_or.reduce(list(batch.present.values()))
            else:
                any_present = np.zeros(len(ids), dtype=bool)
            if not any_present.all():
                row = int(np.flatnonzero(~any_present)[0])
                raise InvalidEmbeddingsError(
                    f"{source}: row {offset + row} (id {ids[row]!r}) has no embedding at all; "
                    "every row needs at least one present modality."
                )
        unique = set(ids)
        if len(unique) != len(ids):
            first: dict[str, int] = {}
            for row, identifier in enumerate(ids):
                if identifier in first:
                    raise InvalidEmbeddingsError(
                        f"{source}: duplicate id {identifier!r} at rows "
                        f"{offset + first[identifier]} and {offset + row}."
                    )
                first[identifier] = row
        if not self._seen.isdisjoint(unique):
            row = next(i for i, identifier in enumerate(ids) if identifier in self._seen)
            identifier = ids[row]
            message = f"{source}: duplicate id {identifier!r} at row {offset + row}."
            for earlier_source, earlier_offset, earlier_ids in self._chunks:
                hits = np.flatnonzero(earlier_ids == identifier)
                if len(hits):
                    earlier = earlier_offset + int(hits[0])
                    if earlier_source == source:
                        message = (
                            f"{source}: duplicate id {identifier!r} at rows {earlier} and "
                            f"{offset + row}."
                        )
                    else:
                        message = (
                            f"{source}: duplicate id {identifier!r} at row {offset + row}; it was "
                            f"already at row {earlier} of {earlier_source}."
                        )
                    break
            raise InvalidEmbeddingsError(message)
        self._seen.update(unique)
        self._chunks.append((source, offset, ids))
