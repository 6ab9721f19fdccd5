"""The embedding-table format: one Parquet layout for every table of embeddings.

A table has

* a unique, non-null string ``id`` column;
* one column per modality (``image``, ``sat``, ``loc``, ``env``, ``text``, ``audio``, or any user
  name such as ``image_hat``) of Arrow type ``fixed_size_list<float32>[dim]``, null in the rows
  where that modality is missing;
* any other columns (taxon ranks, ``lat``, ``lon``, labels, ``sigma_l1``...) carried through
  untouched;
* schema metadata under the key ``b"ecomodal"``: the JSON object
  ``{"format_version": 1, "embeddings": {"<column>": {"encoder": "<name>" | null, "dim": D}}}``
  naming the encoder and dimension of each embedding column, in column order.

Files without that metadata ("foreign" Parquet) are readable too: their embedding columns are the
columns of type ``fixed_size_list``/``list``/``large_list`` of floating values (float16, float32
or float64, converted to float32), every other column is carried as an extra column.

Tables are read lazily and in streamed batches (:func:`read_embeddings`), written atomically
(:func:`write_embeddings`, :class:`EmbeddingTableWriter`), and every batch read or written is
validated: finite values, consistent dimensions, unique ids and at least one embedding per row.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecomodal.errors import InvalidEmbeddingsError, TableFormatError, UnknownModalityError
from ecomodal.io.atomic import atomic_path
from ecomodal.modalities import MODALITIES

__all__ = [
    "FORMAT_VERSION",
    "ID_COLUMN",
    "METADATA_KEY",
    "EmbeddingBatch",
    "EmbeddingTable",
    "EmbeddingTableWriter",
    "import_multinat",
    "read_embeddings",
    "write_embeddings",
]

#: Schema metadata key holding the JSON description of the embedding columns.
METADATA_KEY = b"ecomodal"
#: Version of the layout written by this module.
FORMAT_VERSION = 1
#: Name of the unique string id column.
ID_COLUMN = "id"

# Streamed reads go through a buffered stream, so a file with huge row groups (foreign files)
# still reads in bounded memory.
_READ_BUFFER = 4 << 20


# --------------------------------------------------------------------------- small helpers


def _ids_to_arrow(ids: Any, source: str) -> pa.Array:
    """Ids as a non-null Arrow string array; non-string ids are converted with ``str``."""
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if isinstance(ids, pa.Array):
        array = ids
    else:
        values = np.asarray(ids, dtype=object)
        if values.ndim != 1:
            raise InvalidEmbeddingsError(
                f"{source}: ids must be one-dimensional; got shape {list(values.shape)}."
            )
        try:
            array = pa.array(values, type=pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            array = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    if array.null_count:
        row = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise TableFormatError(f"{source}: row {row} has a null id; every row needs an id.")
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        try:
            array = array.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise TableFormatError(
                f"{source}: ids of type {array.type} cannot be read as strings: {err}"
            ) from err
    return array


def _ids_to_numpy(array: pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=object)


def _as_table(columns: pa.Table | Mapping[str, Any] | None) -> pa.Table | None:
    """Extra columns as an Arrow table: from a table, or a dict of arrays / lists."""
    if columns is None or isinstance(columns, pa.Table):
        return columns
    if isinstance(columns, pa.RecordBatch):
        return pa.Table.from_batches([columns])
    arrays = {}
    for name, values in columns.items():
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            arrays[name] = values
        elif isinstance(values, np.ndarray) and values.dtype == object:
            arrays[name] = pa.array(values.tolist())
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def _is_embedding_type(arrow_type: pa.DataType) -> bool:
    """Whether a column of this type holds embeddings: a list of floating values."""
    if (
        pa.types.is_fixed_size_list(arrow_type)
        or pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
    ):
        return pa.types.is_floating(arrow_type.value_type)
    return False


def _embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


@contextlib.contextmanager
def _open_parquet(path: Path) -> Iterator[pq.ParquetFile]:
    """Open a Parquet file for streaming; a file that is not Parquet is a TableFormatError."""
    if not path.exists():
        raise FileNotFoundError(f"Embedding table {path} does not exist.")
    if not path.is_file():
        raise TableFormatError(f"{path} is not a file (a Parquet embedding table was expected).")
    try:
        parquet = pq.ParquetFile(path, pre_buffer=False, buffer_size=_READ_BUFFER)
    except (pa.ArrowException, OSError) as err:
        raise TableFormatError(f"{path} is not a readable Parquet file: {err}") from err
    with parquet:
        yield parquet


def _infer_list_dim(files: Sequence[Path], column: str) -> int:
    """The length of the first non-null value of a variable-length list column (reads little)."""
    for file in files:
        with _open_parquet(file) as parquet:
            try:
                for record in parquet.iter_batches(batch_size=1024, columns=[column]):
                    lengths = record.column(0).value_lengths().drop_null()
                    if len(lengths):
                        return int(lengths[0].as_py())
            except (pa.ArrowException, OSError) as err:
                raise TableFormatError(f"{file} could not be read: {err}") from err
    names = ", ".join(str(f) for f in files)
    raise TableFormatError(
        f"{names}: embedding column {column!r} is null in every row, so its dimension is "
        "unknown; leave it out with modalities=[...]."
    )


def _column_to_numpy(
    array: pa.Array,
    dim: int,
    *,
    source: str,
    column: str,
    ids: np.ndarray,
    offset: int,
) -> tuple[np.ndarray, np.ndarray]:
    """An embedding column as float32 [N, dim] (zeros where null) and its present mask [N].

    Vectorised: the child values are flattened and reshaped, never walked row by row.
    """
    n = len(array)
    if array.null_count:
        present = ~array.is_null().to_numpy(zero_copy_only=False)
    else:
        present = np.ones(n, dtype=bool)
    if pa.types.is_fixed_size_list(array.type):
        width = array.type.list_size
        if width != dim:
            raise InvalidEmbeddingsError(
                f"{source}: column {column!r} has dimension {width}; expected {dim}."
            )
        # The child holds a slot for every row, null rows included; `.values` ignores the slice.
        child = array.values.slice(array.offset * width, n * width)
        values = child.to_numpy(zero_copy_only=False).astype(np.float32, copy=True)
        values = values.reshape(n, width)
        if not present.all():
            values[~present] = 0.0
        return values, present
    lengths = array.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    wrong = present & (lengths != dim)
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise InvalidEmbeddingsError(
            f"{source}: column {column!r}, row {offset + row} (id {ids[row]!r}) has "
            f"{int(lengths[row])} values; expected {dim}."
        )
    flat = array.flatten().to_numpy(zero_copy_only=False)
    if present.all():
        values = flat.astype(np.float32, copy=True).reshape(n, dim)
    else:
        values = np.zeros((n, dim), dtype=np.float32)
        values[present] = flat.reshape(-1, dim)
    return values, present


class _Validator:
    """Checks rows as they stream: finite values, an embedding per row, ids unique overall.

    Keeps a set of every id seen (and, for error messages, a reference to each batch's id array:
    8 bytes a row, the strings themselves are shared with the set).
    """

    def __init__(self, *, require_any: bool = True):
        self.require_any = require_any
        self._seen: set[str] = set()
        self._chunks: list[tuple[str, int, np.ndarray]] = []

    def check(
        self,
        batch: EmbeddingBatch,
        *,
        source: str,
        offset: int,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Raise InvalidEmbeddingsError for the first bad row; record the ids if all is well."""
        ids = batch.ids
        labels = labels or {}
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


# --------------------------------------------------------------------------- batches


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
            columns=_as_table(columns),
            encoders={m: (encoders or {}).get(m) for m in modalities},
        )


# --------------------------------------------------------------------------- reading


def _parse_metadata(path: Path, schema: pa.Schema) -> dict[str, dict[str, Any]] | None:
    """The ``embeddings`` object of the ecomodal metadata, or None for a foreign file."""
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
        version = meta["format_version"]
        described = meta["embeddings"]
        if not isinstance(described, dict) or not all(
            isinstance(v, dict) for v in described.values()
        ):
            raise TypeError("'embeddings' is not an object of objects")
    except (ValueError, KeyError, TypeError) as err:
        raise TableFormatError(
            f"{path}: malformed {METADATA_KEY.decode()} metadata: {err}"
        ) from err
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise TableFormatError(
            f"{path}: format_version {version!r} is not supported (this ecomodal reads up to "
            f"{FORMAT_VERSION}); upgrade ecomodal."
        )
    return described


class EmbeddingTable:
    """A lazy handle on an embedding table; :func:`read_embeddings` returns one.

    Opening reads only the Parquet footer (and, for a foreign file with variable-length list
    columns, the first non-null value of each selected one, to learn its dimension). Rows are
    read by :meth:`iter_batches` (streamed) or :meth:`load` (all at once).

    Attributes:
        path: the file.
        schema: its Arrow schema, metadata included.
        modalities: the selected embedding columns, in file order (all of them by default).
        dims: selected embedding column -> dimension.
        encoders: selected embedding column -> encoder name (None where unknown).
        extra_columns: the columns that are neither ``id`` nor an embedding column.
        num_rows: the row count, from the Parquet metadata.
    """

    def __init__(self, path: str | os.PathLike[str], *, modalities: Sequence[str] | None = None):
        self.path = Path(path)
        with _open_parquet(self.path) as parquet:
            self.schema: pa.Schema = parquet.schema_arrow
            self.num_rows: int = parquet.metadata.num_rows
        names = self.schema.names
        if ID_COLUMN not in names:
            raise TableFormatError(
                f"{self.path} has no {ID_COLUMN!r} column; an embedding table needs unique string "
                f"ids (columns: {', '.join(names)})."
            )
        id_type = self.schema.field(ID_COLUMN).type
        if pa.types.is_nested(id_type) or pa.types.is_null(id_type):
            raise TableFormatError(
                f"{self.path}: the {ID_COLUMN!r} column has type {id_type}; ids must be strings."
            )
        described = _parse_metadata(self.path, self.schema)
        if described is None:
            embedding = [n for n in names if n != ID_COLUMN and _is_embedding_type(self._type(n))]
            described = {}
        else:
            unknown = [n for n in described if n not in names or n == ID_COLUMN]
            if unknown:
                raise TableFormatError(
                    f"{self.path}: the metadata describes embedding columns {unknown} that the "
                    f"file does not have (columns: {', '.join(names)})."
                )
            embedding = [n for n in names if n in described]
        self._described = described
        self._embedding: list[str] = embedding
        self._all_encoders = {n: described.get(n, {}).get("encoder") for n in embedding}
        self._dims: dict[str, int] = {}
        for name in embedding:
            arrow_type = self._type(name)
            if not _is_embedding_type(arrow_type):
                raise TableFormatError(
                    f"{self.path}: column {name!r} is described as an embedding but has type "
                    f"{arrow_type}; expected fixed_size_list<float32>."
                )
            meta_dim = described.get(name, {}).get("dim")
            if pa.types.is_fixed_size_list(arrow_type):
                if meta_dim is not None and meta_dim != arrow_type.list_size:
                    raise TableFormatError(
                        f"{self.path}: column {name!r} has dimension {arrow_type.list_size} but "
                        f"the metadata says {meta_dim}."
                    )
                self._dims[name] = arrow_type.list_size
            elif meta_dim is not None:
                self._dims[name] = int(meta_dim)
        self.extra_columns: list[str] = [n for n in names if n != ID_COLUMN and n not in embedding]
        selected = list(embedding if modalities is None else modalities)
        self._check_modalities(selected)
        self.modalities: list[str] = selected
        self.dims: dict[str, int] = {m: self._dim(m) for m in selected}
        self.encoders: dict[str, str | None] = {m: self._all_encoders[m] for m in selected}

    def _type(self, name: str) -> pa.DataType:
        return self.schema.field(name).type

    def _dim(self, name: str) -> int:
        if name not in self._dims:
            self._dims[name] = _infer_list_dim([self.path], name)
        return self._dims[name]

    def _check_modalities(self, modalities: Sequence[str]) -> None:
        for name in modalities:
            if name not in self._embedding:
                raise UnknownModalityError(
                    f"{self.path} has no embedding column {name!r}; available: "
                    f"{', '.join(self._embedding) or 'none'}."
                )
        if len(set(modalities)) != len(modalities):
            raise UnknownModalityError(f"Modalities requested twice: {list(modalities)}.")

    def _resolve(
        self, modalities: Sequence[str] | None, columns: Sequence[str] | None
    ) -> tuple[list[str], list[str]]:
        wanted = list(self.modalities if modalities is None else modalities)
        self._check_modalities(wanted)
        extra = list(self.extra_columns if columns is None else columns)
        for name in extra:
            if name not in self.extra_columns:
                kind = "an embedding column" if name in self._embedding else "not a column"
                raise TableFormatError(
                    f"{self.path}: {name!r} is {kind}; extra columns: "
                    f"{', '.join(self.extra_columns) or 'none'}."
                )
        return wanted, extra

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        return (
            f"EmbeddingTable({str(self.path)!r}, rows={self.num_rows}, "
            f"modalities={self.modalities}, extra={self.extra_columns})"
        )

    def iter_batches(
        self,
        batch_size: int = 8192,
        modalities: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> Iterator[EmbeddingBatch]:
        """Stream the table in validated batches of at most ``batch_size`` rows.

        Only ``id``, the ``modalities`` (default: :attr:`modalities`) and the extra ``columns``
        (default: all extra columns; ``[]`` for none) are read from disk. Every batch is checked:
        null ids, lists of the wrong length and NaN/inf values raise, as do ids repeated anywhere
        in the stream and, when every embedding column is read, rows with no embedding at all.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive; got {batch_size}.")
        wanted, extra = self._resolve(modalities, columns)
        dims = {m: self._dim(m) for m in wanted}
        return self._stream(batch_size, wanted, dims, extra)

    def _stream(
        self, batch_size: int, wanted: list[str], dims: dict[str, int], extra: list[str]
    ) -> Iterator[EmbeddingBatch]:
        validator = _Validator(require_any=bool(wanted) and set(wanted) == set(self._embedding))
        source = str(self.path)
        offset = 0
        with _open_parquet(self.path) as parquet:
            if parquet.schema_arrow != self.schema:
                raise TableFormatError(f"{self.path} has changed since it was opened.")
            try:
                reader = parquet.iter_batches(
                    batch_size=batch_size, columns=[ID_COLUMN, *wanted, *extra]
                )
                while True:
                    try:
                        record = next(reader)
                    except StopIteration:
                        break
                    if not record.num_rows:
                        continue
                    batch = self._convert(record, wanted, dims, extra, offset)
                    validator.check(batch, source=source, offset=offset)
                    offset += len(batch)
                    yield batch
            except (pa.ArrowException, OSError) as err:
                raise TableFormatError(
                    f"{self.path} could not be read (after row {offset}): {err}"
                ) from err

    def _convert(
        self,
        record: pa.RecordBatch,
        wanted: list[str],
        dims: dict[str, int],
        extra: list[str],
        offset: int,
    ) -> EmbeddingBatch:
        source = str(self.path)
        raw_ids = record.column(ID_COLUMN)
        if raw_ids.null_count:
            row = int(np.flatnonzero(raw_ids.is_null().to_numpy(zero_copy_only=False))[0])
            raise TableFormatError(f"{source}: row {offset + row} has a null id.")
        ids = _ids_to_numpy(_ids_to_arrow(raw_ids, source))
        embeddings, present = {}, {}
        for name in wanted:
            embeddings[name], present[name] = _column_to_numpy(
                record.column(name), dims[name], source=source, column=name, ids=ids, offset=offset
            )
        columns = pa.Table.from_batches([record.select(extra)]) if extra else None
        return EmbeddingBatch(
            ids=ids,
            embeddings=embeddings,
            present=present,
            columns=columns,
            encoders={m: self._all_encoders[m] for m in wanted},
        )

    def load(
        self, modalities: Sequence[str] | None = None, columns: Sequence[str] | None = None
    ) -> EmbeddingBatch:
        """All rows in memory: the concatenation of :meth:`iter_batches`, validated the same way.

        The output arrays are allocated once, so peak memory is the result plus one batch.
        """
        wanted, extra = self._resolve(modalities, columns)
        dims = {m: self._dim(m) for m in wanted}
        n = self.num_rows
        embeddings = {m: np.zeros((n, dims[m]), dtype=np.float32) for m in wanted}
        present = {m: np.zeros(n, dtype=bool) for m in wanted}
        ids: list[np.ndarray] = []
        tables: list[pa.Table] = []
        row = 0
        for batch in self._stream(65536, wanted, dims, extra):
            stop = row + len(batch)
            if stop > n:
                raise TableFormatError(f"{self.path} holds more rows than its metadata says ({n}).")
            for m in wanted:
                embeddings[m][row:stop] = batch.embeddings[m]
                present[m][row:stop] = batch.present[m]
            ids.append(batch.ids)
            if batch.columns is not None:
                tables.append(batch.columns)
            row = stop
        if row != n:
            raise TableFormatError(f"{self.path} holds {row} rows; its metadata says {n}.")
        columns = None
        if extra:
            columns = (
                pa.concat_tables(tables)
                if tables
                else pa.schema([self.schema.field(c) for c in extra]).empty_table()
            )
        return EmbeddingBatch(
            ids=np.concatenate(ids) if ids else np.array([], dtype=object),
            embeddings=embeddings,
            present=present,
            columns=columns,
            encoders={m: self._all_encoders[m] for m in wanted},
        )


def read_embeddings(
    path: str | os.PathLike[str], *, modalities: Sequence[str] | None = None
) -> EmbeddingTable:
    """Open an embedding table lazily (see :class:`EmbeddingTable`); no rows are read yet.

    ``modalities`` restricts the table to those embedding columns (an unknown one raises
    :class:`~ecomodal.errors.UnknownModalityError`). A missing file raises FileNotFoundError, a
    file that is not Parquet or has no ``id`` column :class:`~ecomodal.errors.TableFormatError`.
    """
    return EmbeddingTable(path, modalities=modalities)


# --------------------------------------------------------------------------- writing


class _WriteAborted(Exception):
    """Thrown into the atomic-write context to discard the temporary file."""


class EmbeddingTableWriter:
    """Write an embedding table batch by batch; the file appears at ``path`` only on success.

    ``dims`` names the embedding columns, in order, with their dimensions; ``encoders`` their
    encoders. The extra columns follow ``extra_schema``, or the first batch's ``columns``.
    Use it as a context manager (or call :meth:`close`). Any error, in :meth:`write` or inside the
    ``with`` block, deletes the temporary file and leaves whatever was at ``path`` untouched.
    Rows are buffered into row groups of ``row_group_size``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        dims: Mapping[str, int],
        *,
        encoders: Mapping[str, str | None] | None = None,
        extra_schema: pa.Schema | None = None,
        row_group_size: int = 8192,
    ):
        self.path = Path(path)
        self.dims: dict[str, int] = {}
        for name, dim in dims.items():
            if name == ID_COLUMN or not isinstance(name, str) or not name:
                raise TableFormatError(f"{self.path}: {name!r} cannot name an embedding column.")
            if int(dim) < 1:
                raise InvalidEmbeddingsError(f"{self.path}: column {name!r} has dimension {dim}.")
            self.dims[name] = int(dim)
        self.encoders: dict[str, str | None] = {n: (encoders or {}).get(n) for n in self.dims}
        if row_group_size < 1:
            raise ValueError(f"row_group_size must be positive; got {row_group_size}.")
        self.row_group_size = row_group_size
        self.extra_schema: pa.Schema | None = None
        if extra_schema is not None:
            self._set_extra_schema(extra_schema)
        self._stack: contextlib.ExitStack | None = None
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._validator = _Validator()
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._rows = 0
        self._state = "new"  # new -> open -> closed | aborted

    # -- lifecycle

    def __enter__(self) -> EmbeddingTableWriter:
        self._open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc)

    def _open(self) -> None:
        if self._state == "open":
            return
        if self._state != "new":
            raise ValueError(f"The writer for {self.path} is {self._state}.")
        stack = contextlib.ExitStack()
        self._tmp = stack.enter_context(atomic_path(self.path))
        self._stack = stack
        self._state = "open"

    def _abort(self, exc: BaseException | None = None) -> None:
        if self._state != "open":
            self._state = "aborted" if self._state == "new" else self._state
            return
        self._state = "aborted"
        self._pending = []
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        error = exc if exc is not None else _WriteAborted()
        assert self._stack is not None
        with contextlib.suppress(BaseException):
            self._stack.__exit__(type(error), error, error.__traceback__)

    def abort(self) -> None:
        """Discard everything written so far; ``path`` is left as it was."""
        self._abort()

    def close(self) -> Path:
        """Flush, finish the file and move it to ``path``; returns ``path``.

        Calling it again is a no-op; closing a writer that failed raises ValueError.
        """
        if self._state == "closed":
            return self.path
        self._open()
        try:
            self._flush(final=True)
            if self._writer is None:
                self._start_file()
            assert self._writer is not None and self._stack is not None
            self._writer.close()
        except BaseException as err:
            self._abort(err)
            raise
        self._state = "closed"
        self._stack.close()  # renames the temporary file to `path`
        return self.path

    # -- schema

    def _set_extra_schema(self, schema: pa.Schema) -> None:
        clash = [n for n in schema.names if n == ID_COLUMN or n in self.dims]
        if clash or len(set(schema.names)) != len(schema.names):
            raise TableFormatError(
                f"{self.path}: extra columns {schema.names} clash with 'id', the embedding "
                f"columns {list(self.dims)} or each other."
            )
        self.extra_schema = schema.remove_metadata()

    def _file_schema(self) -> pa.Schema:
        fields = [pa.field(ID_COLUMN, pa.string(), nullable=False)]
        fields += [pa.field(name, _embedding_type(dim)) for name, dim in self.dims.items()]
        if self.extra_schema is not None:
            fields += list(self.extra_schema)
        meta = {
            "format_version": FORMAT_VERSION,
            "embeddings": {
                name: {"encoder": self.encoders.get(name), "dim": dim}
                for name, dim in self.dims.items()
            },
        }
        return pa.schema(fields, metadata={METADATA_KEY: json.dumps(meta).encode()})

    def _start_file(self) -> None:
        assert self._tmp is not None
        self._schema = self._file_schema()
        extra = [] if self.extra_schema is None else self.extra_schema.names
        self._writer = pq.ParquetWriter(
            self._tmp,
            self._schema,
            compression="zstd",
            use_dictionary=extra or False,
            use_byte_stream_split=[f"{n}.list.element" for n in self.dims] or False,
        )

    # -- writing

    def write(self, batch: EmbeddingBatch) -> None:
        """Validate ``batch`` and append it.

        Its embedding columns must be exactly those of ``dims``, with those dimensions; its extra
        columns those of the file. NaN/inf in a present embedding, a row with no embedding, a
        null id or an id already written (in this or an earlier batch) raise, and abort the
        writer: the temporary file is deleted and ``path`` is left as it was.
        """
        self._open()
        try:
            self._write(batch, source=str(self.path), offset=self._rows)
        except BaseException as err:
            self._abort(err)
            raise

    def _write(
        self,
        batch: EmbeddingBatch,
        *,
        source: str,
        offset: int,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        n = len(batch)
        missing = [name for name in self.dims if name not in batch.embeddings]
        unknown = [name for name in batch.embeddings if name not in self.dims]
        if missing or unknown:
            raise InvalidEmbeddingsError(
                f"{source}: the batch has embedding columns {list(batch.embeddings)}; the file has "
                f"{list(self.dims)}."
            )
        embeddings: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        for name, dim in self.dims.items():
            values = np.asarray(batch.embeddings[name])
            if values.ndim != 2 or values.shape[0] != n or values.shape[1] != dim:
                width = values.shape[1] if values.ndim == 2 else "?"
                raise InvalidEmbeddingsError(
                    f"{source}: column {name!r} has shape {list(values.shape)} "
                    f"(dimension {width}); expected [{n}, {dim}]."
                )
            mask = batch.present.get(name)
            if mask is None:
                raise InvalidEmbeddingsError(
                    f"{source}: the batch has no present mask for {name!r}."
                )
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (n,):
                raise InvalidEmbeddingsError(
                    f"{source}: present[{name!r}] has shape {list(mask.shape)}; expected [{n}]."
                )
            values = np.ascontiguousarray(values, dtype=np.float32)
            if not mask.all():
                values = np.where(mask[:, None], values, np.float32(0.0))
            embeddings[name], present[name] = values, mask
        id_array = _ids_to_arrow(batch.ids, source)
        ids = _ids_to_numpy(id_array)
        extras = self._extra_arrays(batch.columns, n, source)
        checked = EmbeddingBatch(ids, embeddings, present)
        self._validator.check(checked, source=source, offset=offset, labels=labels)

        arrays: list[pa.Array] = [id_array.cast(pa.string())]
        for name, dim in self.dims.items():
            flat = pa.array(embeddings[name].reshape(-1), type=pa.float32())
            mask = None if present[name].all() else pa.array(~present[name])
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, dim, mask=mask))
        arrays.extend(extras)
        if self._writer is None:
            self._start_file()
        assert self._schema is not None
        self._pending.append(pa.Table.from_arrays(arrays, schema=self._schema))
        self._pending_rows += n
        self._rows += n
        if self._pending_rows >= self.row_group_size:
            self._flush(final=False)
        else:
            # The table may share memory with the caller's arrays (Arrow wraps numpy without
            # copying); rows kept for a later row group must not change if the caller reuses them.
            self._pending[-1] = _copy_table(self._pending[-1])

    def _extra_arrays(self, columns: pa.Table | None, n: int, source: str) -> list[pa.Array]:
        columns = _as_table(columns)
        if self.extra_schema is None and self._writer is None:
            self._set_extra_schema(columns.schema if columns is not None else pa.schema([]))
        assert self.extra_schema is not None
        have = [] if columns is None else columns.column_names
        expected = self.extra_schema.names
        if sorted(have) != sorted(expected):
            raise TableFormatError(
                f"{source}: the batch has extra columns {have}; the file has {expected}."
            )
        if columns is None:
            return []
        if columns.num_rows != n:
            raise TableFormatError(
                f"{source}: the batch's extra columns have {columns.num_rows} rows; it has {n} ids."
            )
        arrays = []
        for fld in self.extra_schema:
            column = columns.column(fld.name)
            try:
                arrays.append(column.cast(fld.type).combine_chunks())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
                raise TableFormatError(
                    f"{source}: column {fld.name!r} of type {column.type} does not match the "
                    f"file's {fld.type}: {err}"
                ) from err
        return arrays

    def _flush(self, *, final: bool) -> None:
        if not self._pending or (not final and self._pending_rows < self.row_group_size):
            return
        assert self._writer is not None
        table = pa.concat_tables(self._pending)
        full = len(table) if final else len(table) - len(table) % self.row_group_size
        if full:
            self._writer.write_table(table.slice(0, full), row_group_size=self.row_group_size)
        rest = table.slice(full)
        self._pending = [_copy_table(rest)] if len(rest) else []
        self._pending_rows = len(rest)


def _copy_table(table: pa.Table) -> pa.Table:
    """A copy of ``table`` that owns its buffers."""
    return table.take(pa.array(np.arange(len(table), dtype=np.int64)))


def write_embeddings(
    path: str | os.PathLike[str],
    batch: EmbeddingBatch | None = None,
    *,
    ids: Any = None,
    embeddings: Mapping[str, Any] | None = None,
    present: Mapping[str, Any] | None = None,
    columns: pa.Table | Mapping[str, Any] | None = None,
    encoders: Mapping[str, str | None] | None = None,
    row_group_size: int = 8192,
) -> Path:
    """Write an embedding table atomically, from a ``batch`` or from ``ids`` + ``embeddings``.

    ``embeddings`` maps column -> [N, D] array-like; ``present`` optionally maps column -> bool
    [N]. Where ``present`` is not given for a column, a row that is entirely NaN in it is taken as
    missing (null); a row with only some NaN values is an error. ``columns`` are the extra
    columns: a pyarrow Table or a dict of arrays / lists. ``encoders`` (column -> name) override
    the batch's. Returns ``path``; on any error nothing is left there (an existing file stays).
    """
    if batch is None:
        if ids is None or embeddings is None:
            raise TypeError("write_embeddings needs a batch, or ids= and embeddings=.")
        values_by_name: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        for name, values in embeddings.items():
            values = np.asarray(values, dtype=np.float32)
            if values.ndim != 2:
                raise InvalidEmbeddingsError(
                    f"{path}: embeddings[{name!r}] must be [rows, dim]; got shape "
                    f"{list(values.shape)}."
                )
            if present is not None and name in present:
                mask = np.asarray(present[name], dtype=bool)
            else:
                mask = ~np.isnan(values).all(axis=1)
            values_by_name[name], masks[name] = values, mask
        batch = EmbeddingBatch(
            ids=np.asarray(ids, dtype=object),
            embeddings=values_by_name,
            present=masks,
            columns=_as_table(columns),
        )
    elif ids is not None or embeddings is not None or present is not None or columns is not None:
        raise TypeError("write_embeddings takes a batch or ids=/embeddings=/..., not both.")
    n = len(batch)
    for name, values in batch.embeddings.items():
        if len(values) != n:
            raise InvalidEmbeddingsError(
                f"{path}: embeddings[{name!r}] has {len(values)} rows; there are {n} ids."
            )
    extra = _as_table(batch.columns)
    if extra is not None and extra.num_rows != n:
        raise TableFormatError(
            f"{path}: the extra columns have {extra.num_rows} rows; ids has {n}."
        )
    names = {**batch.encoders, **(encoders or {})}
    dims = {}
    for name, values in batch.embeddings.items():
        if np.ndim(values) != 2:
            raise InvalidEmbeddingsError(
                f"{path}: embeddings[{name!r}] must be [rows, dim]; got shape "
                f"{list(np.shape(values))}."
            )
        dims[name] = int(np.shape(values)[1])
    with EmbeddingTableWriter(
        path,
        dims,
        encoders=names,
        extra_schema=None if extra is None else extra.schema,
        row_group_size=row_group_size,
    ) as writer:
        for start in range(0, n, row_group_size):
            writer.write(batch.select(slice(start, start + row_group_size)))
    return Path(path)


# --------------------------------------------------------------------------- MultiNat import

_SYNONYMS: dict[str, tuple[str, ...]] = {
    "image": ("image", "img", "ground", "photo"),
    "sat": ("sat", "satellite", "sentinel"),
    "loc": ("loc", "location", "gps", "geo"),
    "env": ("env", "climate", "environment", "bioclim"),
    "text": ("text", "taxonomy", "taxon", "name_emb"),
    "audio": ("audio", "sound"),
}
_ID_CANDIDATES = ("id", "key", "inat_id", "observation_id", "obs_id")
_PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


def _guess_modality(column: str) -> str | None:
    lowered = column.lower()
    for modality, words in _SYNONYMS.items():
        if any(lowered == w or lowered.startswith(w) for w in words):
            return modality
    return None


def _guess_column_map(path: Path, schema: pa.Schema) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for name in schema.names:
        if not _is_embedding_type(schema.field(name).type):
            continue
        modality = _guess_modality(name)
        if modality is None:
            continue
        taken = [src for src, m in mapping.items() if m == modality]
        if taken:
            raise TableFormatError(
                f"{path}: columns {taken[0]!r} and {name!r} both look like {modality!r} "
                "embeddings; pass column_map={'source_column': 'modality', ...}."
            )
        mapping[name] = modality
    return mapping


def _source_files(source: Path) -> list[Path]:
    if not source.exists():
        raise FileNotFoundError(f"MultiNat source {source} does not exist.")
    if not source.is_dir():
        return [source]
    files = sorted(
        p
        for p in source.iterdir()
        if p.is_file() and p.suffix.lower() in _PARQUET_SUFFIXES and p.name[0] not in "._"
    )
    if not files:
        raise FileNotFoundError(f"No Parquet files (*.parquet) in the folder {source}.")
    return files


def import_multinat(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    column_map: Mapping[str, str] | None = None,
    id_column: str | None = None,
    encoder: str = "taxabind",
    batch_size: int = 8192,
) -> Path:
    """Import ProM3E's published precomputed embeddings (MultiNat Parquet) into this format.

    ``source`` is a Parquet file or a folder of them (read in sorted name order; all must share
    the columns). ``column_map`` maps source columns to modalities, e.g. ``{"img_emb": "image"}``.
    Without it, each list-of-float column whose lowercased name equals or starts with a modality
    name or synonym is taken: image (img, ground, photo), sat (satellite, sentinel), loc
    (location, gps, geo), env (climate, environment, bioclim), text (taxonomy, taxon, name_emb),
    audio (sound). The ids come from ``id_column``, else the first of ``id``, ``key``,
    ``inat_id``, ``observation_id``, ``obs_id``, cast to strings. Values may be float16/32/64, in
    fixed or variable-size lists. As in :func:`write_embeddings`, a row that is entirely NaN in a
    column is taken as missing. Embedding columns are written in the canonical modality order
    (then any other names in source order), labelled with ``encoder``; unmapped columns are carried
    as extra columns. Streamed in ``batch_size`` rows and written atomically to ``out``.
    """
    files = _source_files(Path(source))
    schemas = []
    for file in files:
        try:
            schemas.append(pq.read_schema(file))
        except (pa.ArrowException, OSError) as err:
            raise TableFormatError(f"{file} is not a readable Parquet file: {err}") from err
    first, schema = files[0], schemas[0]
    mapping = dict(column_map) if column_map else _guess_column_map(first, schema)
    if not mapping:
        raise TableFormatError(
            f"No embedding columns recognised in {first} (columns: {', '.join(schema.names)}); "
            "pass column_map={'source_column': 'modality', ...}."
        )
    for src, modality in mapping.items():
        if src not in schema.names:
            raise TableFormatError(
                f"{first} has no column {src!r} (from the column map); columns: "
                f"{', '.join(schema.names)}."
            )
        if not _is_embedding_type(schema.field(src).type):
            raise TableFormatError(
                f"{first}: column {src!r} has type {schema.field(src).type}, not a list of floats."
            )
        if not isinstance(modality, str) or not modality or modality == ID_COLUMN:
            raise TableFormatError(f"{first}: {modality!r} cannot name an embedding column.")
    if len(set(mapping.values())) != len(mapping):
        raise TableFormatError(f"The column map {mapping} sends two columns to one modality.")
    if id_column is not None:
        if id_column not in schema.names:
            raise TableFormatError(
                f"{first} has no id column {id_column!r}; columns: {', '.join(schema.names)}."
            )
        id_col = id_column
    else:
        id_col = next((c for c in _ID_CANDIDATES if c in schema.names), None)
        if id_col is None:
            raise TableFormatError(
                f"{first}: no id column found (tried {', '.join(_ID_CANDIDATES)}; columns: "
                f"{', '.join(schema.names)}); pass id_column=."
            )
    extra = [n for n in schema.names if n not in mapping and n != id_col]
    clash = [n for n in extra if n == ID_COLUMN or n in mapping.values()]
    if clash:
        raise TableFormatError(
            f"{first}: columns {clash} would clash with the output's 'id' or embedding columns; "
            "map or rename them."
        )
    for file, other in zip(files[1:], schemas[1:], strict=True):
        if set(other.names) != set(schema.names):
            raise TableFormatError(
                f"{file} has columns {other.names}; {first} has {schema.names}. All files of a "
                "MultiNat folder must share their columns."
            )
    order = {m: i for i, m in enumerate(MODALITIES)}
    ranked = sorted(mapping.items(), key=lambda kv: order.get(kv[1], len(order)))
    dims: dict[str, int] = {}
    for src, modality in ranked:
        arrow_type = schema.field(src).type
        if pa.types.is_fixed_size_list(arrow_type):
            dims[modality] = arrow_type.list_size
        else:
            dims[modality] = _infer_list_dim(files, src)
    labels = {modality: f"{src!r} (-> {modality})" for src, modality in ranked}
    extra_schema = pa.schema([schema.field(n) for n in extra])
    out = Path(out)
    with EmbeddingTableWriter(
        out,
        dims,
        encoders=dict.fromkeys(dims, encoder),
        extra_schema=extra_schema,
        row_group_size=batch_size,
    ) as writer:
        for file in files:
            with _open_parquet(file) as parquet:
                offset = 0
                try:
                    records = parquet.iter_batches(
                        batch_size=batch_size, columns=[id_col, *(s for s, _ in ranked), *extra]
                    )
                    for record in records:
                        batch = _multinat_batch(record, file, id_col, ranked, dims, extra, offset)
                        batch.encoders = dict.fromkeys(dims, encoder)
                        writer._write(batch, source=str(file), offset=offset, labels=labels)
                        offset += len(batch)
                except (pa.ArrowException, OSError) as err:
                    raise TableFormatError(
                        f"{file} could not be read (after row {offset}): {err}"
                    ) from err
    return out


def _multinat_batch(
    record: pa.RecordBatch,
    file: Path,
    id_col: str,
    ranked: list[tuple[str, str]],
    dims: dict[str, int],
    extra: list[str],
    offset: int,
) -> EmbeddingBatch:
    raw_ids = record.column(id_col)
    if raw_ids.null_count:
        row = int(np.flatnonzero(raw_ids.is_null().to_numpy(zero_copy_only=False))[0])
        raise TableFormatError(f"{file}: row {offset + row} has a null id ({id_col!r}).")
    ids = _ids_to_numpy(_ids_to_arrow(raw_ids, str(file)))
    embeddings, present = {}, {}
    for src, modality in ranked:
        values, mask = _column_to_numpy(
            record.column(src), dims[modality], source=str(file), column=src, ids=ids, offset=offset
        )
        missing = mask & np.isnan(values).all(axis=1)
        if missing.any():
            mask = mask & ~missing
            values[missing] = 0.0
        embeddings[modality], present[modality] = values, mask
    columns = pa.Table.from_batches([record.select(extra)]) if extra else None
    return EmbeddingBatch(ids=ids, embeddings=embeddings, present=present, columns=columns)
