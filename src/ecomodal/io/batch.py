"""Rows of an embedding table in memory: :class:`EmbeddingBatch`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ecomodal.errors import InvalidEmbeddingsError, TableFormatError, UnknownModalityError
from ecomodal.io.format import as_arrow_table
from ecomodal.vectors import normalise

__all__ = ["EmbeddingBatch"]


@dataclass
class EmbeddingBatch:
    """Rows of an embedding table in memory.

    Attributes:
        ids: numpy array (dtype object) of the rows' string ids, shape [N].
        embeddings: column name -> float32 [N, D]; rows where the modality is absent are zeros.
        present: column name -> bool [N], whether the modality is present in each row.
        columns: the table's other columns (N rows, untouched), or None.
        encoders: column name -> the encoder that produced it (None where unknown).
    """

    ids: np.ndarray
    embeddings: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    columns: pa.Table | None = None
    encoders: dict[str, str | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def modalities(self) -> list[str]:
        """The embedding column names, in order."""
        return list(self.embeddings)

    def stack(
        self, modalities: Sequence[str], dim: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings [N, M, D] (float32) and present mask [N, M] in the order of ``modalities``.

        A requested modality the batch lacks is all-absent (zeros, False) of size ``dim``, or of
        the common dimension of the batch's columns when ``dim`` is None. Requested columns whose
        dimensions differ (from each other or from ``dim``) raise InvalidEmbeddingsError.
        """
        modalities = list(modalities)
        found = {m: self.embeddings[m].shape[1] for m in modalities if m in self.embeddings}
        widths = set(found.values())
        if dim is not None:
            widths.add(int(dim))
        elif not widths:
            widths = {v.shape[1] for v in self.embeddings.values()}
        if len(widths) != 1:
            if not widths:
                raise InvalidEmbeddingsError(
                    f"Cannot stack {modalities}: none is in the batch and no dim was given."
                )
            raise InvalidEmbeddingsError(
                f"Cannot stack embeddings of different dimensions: {found or self.dims}"
                + (f" (expected {dim})" if dim is not None else "")
                + "."
            )
        width = widths.pop()
        out = np.zeros((len(self), len(modalities), width), dtype=np.float32)
        mask = np.zeros((len(self), len(modalities)), dtype=bool)
        for i, name in enumerate(modalities):
            if name in self.embeddings:
                out[:, i] = self.embeddings[name]
                mask[:, i] = self.present[name]
        return out, mask

    @property
    def dims(self) -> dict[str, int]:
        """Column name -> embedding dimension."""
        return {name: int(v.shape[1]) for name, v in self.embeddings.items()}

    def column(self, name: str) -> np.ndarray:
        """The extra column ``name`` as a numpy array; a clear error names the columns there are."""
        names = [] if self.columns is None else self.columns.column_names
        if name not in names:
            raise TableFormatError(
                f"The table has no column {name!r}; extra columns: {', '.join(names) or 'none'}."
            )
        return self.columns.column(name).to_numpy(zero_copy_only=False)

    def modality(self, name: str) -> np.ndarray:
        """The embeddings of one modality [N, D]; a clear error names the modalities there are."""
        if name not in self.embeddings:
            raise UnknownModalityError(
                f"The table has no embedding column {name!r}; available: "
                f"{', '.join(self.modalities) or 'none'}."
            )
        return self.embeddings[name]

    def fuse(self, modalities: Sequence[str]) -> np.ndarray:
        """TaxaBind's fusion: the normalised sum of the normalised embeddings of ``modalities``."""
        total = sum(normalise(self.modality(m)) for m in modalities)
        return normalise(np.asarray(total, dtype=np.float32))

    def has_all(self, modalities: Sequence[str]) -> np.ndarray:
        """Rows [N] that have every one of ``modalities`` (an unknown one raises)."""
        mask = np.ones(len(self), dtype=bool)
        for m in modalities:
            self.modality(m)
            mask &= self.present[m]
        return mask

    def select(self, index: Any) -> EmbeddingBatch:
        """The rows picked by an integer array, a boolean mask, a slice or a single integer.

        As in numpy, a slice gives views of this batch's arrays; an index array or mask copies.
        """
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                stop = max(start, stop)
                return self._take(index, None if self.columns is None else (start, stop - start))
            rows = np.arange(start, stop, step)
        else:
            rows = np.asarray(index)
            if rows.dtype == bool:
                if rows.shape != (len(self),):
                    raise IndexError(
                        f"Boolean mask of shape {list(rows.shape)} for a batch of {len(self)} rows."
                    )
                rows = np.flatnonzero(rows)
            rows = np.atleast_1d(rows).astype(np.int64, copy=False)
            rows = np.where(rows < 0, rows + len(self), rows)
        return self._take(rows, None)

    def _take(self, rows: Any, span: tuple[int, int] | None) -> EmbeddingBatch:
        if self.columns is None:
            columns = None
        elif span is not None:
            columns = self.columns.slice(*span)
        else:
            columns = self.columns.take(pa.array(rows, type=pa.int64()))
        return EmbeddingBatch(
            ids=self.ids[rows],
            embeddings={k: v[rows] for k, v in self.embeddings.items()},
            present={k: v[rows] for k, v in self.present.items()},
            columns=columns,
            encoders=dict(self.encoders),
        )

    @classmethod
    def concat(cls, batches: Sequence[EmbeddingBatch]) -> EmbeddingBatch:
        """One batch from several with the same embedding columns (and dims) and extra columns."""
        batches = list(batches)
        if not batches:
            raise InvalidEmbeddingsError("Cannot concatenate an empty list of batches.")
        first = batches[0]
        for i, other in enumerate(batches[1:], start=1):
            if other.dims != first.dims:
                raise InvalidEmbeddingsError(
                    f"Cannot concatenate batch {i} with columns {other.dims} to batch 0 with "
                    f"columns {first.dims}."
                )
            if (other.columns is None) != (first.columns is None):
                raise TableFormatError(
                    f"Cannot concatenate batch {i}: only some of the batches have extra columns."
                )
        columns = None
        if first.columns is not None:
            tables = [b.columns.select(first.columns.column_names) for b in batches]
            try:
                columns = pa.concat_tables(tables, promote_options="default")
            except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as err:
                raise TableFormatError(f"Cannot concatenate the extra columns: {err}") from err
        encoders: dict[str, str | None] = {}
        for b in batches:
            for k, v in b.encoders.items():
                if encoders.get(k) is None:
                    encoders[k] = v
        return cls(
            ids=np.concatenate([np.asarray(b.ids, dtype=object) for b in batches]),
            embeddings={
                k: np.concatenate([b.embeddings[k] for b in batches]) for k in first.embeddings
            },
            present={k: np.concatenate([b.present[k] for b in batches]) for k in first.embeddings},
            columns=columns,
            encoders=encoders,
        )

    @classmethod
    def from_stacked(
        cls,
        ids: Any,
        embeddings: Any,
        present: Any | None,
        modalities: Sequence[str],
        columns: pa.Table | Mapping[str, Any] | None = None,
        encoders: Mapping[str, str | None] | None = None,
    ) -> EmbeddingBatch:
        """A batch from stacked embeddings [N, M, D] and a present mask [N, M].

        Without ``present``, a row that is entirely NaN for a modality is taken as absent (as in
        :func:`write_embeddings`). Absent rows are set to zeros.
        """
        values = np.asarray(embeddings, dtype=np.float32)
        modalities = list(modalities)
        if values.ndim != 3 or values.shape[1] != len(modalities):
            raise InvalidEmbeddingsError(
                f"Stacked embeddings must be [rows, {len(modalities)} modalities, dim]; got shape "
                f"{list(values.shape)}."
            )
        ids = np.asarray(ids, dtype=object)
        if len(ids) != len(values):
            raise InvalidEmbeddingsError(f"{len(ids)} ids for {len(values)} rows of embeddings.")
        if present is None:
            mask = ~np.isnan(values).all(axis=-1)
        else:
            mask = np.asarray(present, dtype=bool)
            if mask.shape != values.shape[:2]:
                raise InvalidEmbeddingsError(
                    f"present has shape {list(mask.shape)}; expected {list(values.shape[:2])}."
                )
        values = np.where(mask[..., None], values, np.float32(0.0))
        return cls(
            ids=ids,
            embeddings={m: np.ascontiguousarray(values[:, i]) for i, m in enumerate(modalities)},
            present={m: mask[:, i].copy() for i, m in enumerate(modalities)},
            columns=as_arrow_table(columns),
            encoders={m: (encoders or {}).get(m) for m in modalities},
        )
