"""The embedding-table format: one Parquet layout for every table of embeddings.

A table has a unique string ``id`` column; one column per modality (``image``, ``sat``, ``loc``,
``env``, ``text``, ``audio``, or any user name such as ``image_hat``) of type
``fixed_size_list<float32>[dim]``, null where the modality is missing; any other columns carried
through untouched; and schema metadata under the key ``ecomodal`` naming each embedding column's
encoder and dimension. Tables are read in streamed batches and written atomically.
"""

from __future__ import annotations

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

METADATA_KEY = b"ecomodal"
FORMAT_VERSION = 1
ID_COLUMN = "id"


@dataclass
class EmbeddingBatch:
    """Rows of an embedding table in memory.

    ``embeddings[column]`` is float32 [N, D] (zeros where absent), ``present[column]`` is bool [N];
    ``columns`` holds the other columns, untouched; ``encoders`` names each column's encoder.
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
        """Embeddings [N, M, D] and present mask [N, M] in the order of ``modalities``.

        A requested modality the batch lacks is all-absent (zeros, False).
        """
        dims = {self.embeddings[m].shape[1] for m in modalities if m in self.embeddings}
        if dim is not None:
            dims.add(dim)
        if len(dims) > 1:
            found = {m: self.embeddings[m].shape[1] for m in modalities if m in self.embeddings}
            raise InvalidEmbeddingsError(
                f"Cannot stack embeddings of different dimensions: {found}"
                + (f" (expected {dim})" if dim is not None else "")
                + "."
            )
        if not dims:
            raise InvalidEmbeddingsError(
                f"None of {list(modalities)} is in the batch and no dim was given."
            )
        width = dims.pop()
        out = np.zeros((len(self), len(modalities), width), dtype=np.float32)
        mask = np.zeros((len(self), len(modalities)), dtype=bool)
        for i, name in enumerate(modalities):
            if name in self.embeddings:
                out[:, i] = self.embeddings[name]
                mask[:, i] = self.present[name]
        return out, mask

    def select(self, index) -> EmbeddingBatch:
        """Rows by integer array, boolean mask or slice."""
        if isinstance(index, slice):
            rows = np.arange(len(self))[index]
        else:
            rows = np.asarray(index)
            if rows.dtype == bool:
                rows = np.flatnonzero(rows)
        return EmbeddingBatch(
            ids=self.ids[rows],
            embeddings={k: v[rows] for k, v in self.embeddings.items()},
            present={k: v[rows] for k, v in self.present.items()},
            columns=None if self.columns is None else self.columns.take(pa.array(rows)),
            encoders=dict(self.encoders),
        )

    @classmethod
    def concat(cls, batches: Sequence[EmbeddingBatch]) -> EmbeddingBatch:
        """One batch from several with the same columns."""
        if not batches:
            raise InvalidEmbeddingsError("Cannot concatenate an empty list of batches.")
        first = batches[0]
        columns = None
        if first.columns is not None:
            columns = pa.concat_tables([b.columns for b in batches])
        return cls(
            ids=np.concatenate([b.ids for b in batches]),
            embeddings={
                k: np.concatenate([b.embeddings[k] for b in batches]) for k in first.embeddings
            },
            present={k: np.concatenate([b.present[k] for b in batches]) for k in first.present},
            columns=columns,
            encoders=dict(first.encoders),
        )

    @classmethod
    def from_stacked(
        cls,
        ids,
        embeddings: np.ndarray,
        present: np.ndarray | None,
        modalities: Sequence[str],
        columns: pa.Table | Mapping[str, Any] | None = None,
        encoders: Mapping[str, str | None] | None = None,
    ) -> EmbeddingBatch:
        """A batch from stacked [N, M, D] embeddings and an optional [N, M] present mask."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if present is None:
            present = np.isfinite(embeddings).all(-1) & (embeddings != 0).any(-1)
        present = np.asarray(present, dtype=bool)
        return cls(
            ids=np.asarray(ids, dtype=object),
            embeddings={
                m: np.ascontiguousarray(embeddings[:, i]) for i, m in enumerate(modalities)
            },
            present={m: present[:, i].copy() for i, m in enumerate(modalities)},
            columns=_as_table(columns),
            encoders=dict(encoders or {}),
        )


def _as_table(columns: pa.Table | Mapping[str, Any] | None) -> pa.Table | None:
    if columns is None or isinstance(columns, pa.Table):
        return columns
    return pa.table(
        {k: pa.array(np.asarray(v)) if isinstance(v, np.ndarray) else v for k, v in columns.items()}
    )


# --------------------------------------------------------------------------- reading


def _is_embedding_type(arrow_type: pa.DataType) -> bool:
    if (
        pa.types.is_fixed_size_list(arrow_type)
        or pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
    ):
        return pa.types.is_floating(arrow_type.value_type)
    return False


def _metadata(schema: pa.Schema) -> dict[str, Any] | None:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return None


class EmbeddingTable:
    """A lazy handle on an embedding table; :func:`read_embeddings` returns one.

    Nothing but the Parquet footer is read until :meth:`iter_batches` or :meth:`load`.
    """

    def __init__(self, path: str | os.PathLike[str], *, modalities: Sequence[str] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"Embedding table {self.path} does not exist.")
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as err:
            raise TableFormatError(f"{self.path} is not a readable Parquet file: {err}") from err
        self.schema: pa.Schema = self._file.schema_arrow
        if ID_COLUMN not in self.schema.names:
            raise TableFormatError(
                f"{self.path} has no '{ID_COLUMN}' column; an embedding table needs unique string "
                f"ids (columns: {', '.join(self.schema.names)})."
            )
        meta = _metadata(self.schema)
        described = (meta or {}).get("embeddings", {})
        names = [n for n in self.schema.names if n != ID_COLUMN]
        if described:
            embedding_columns = [n for n in names if n in described]
        else:
            embedding_columns = [n for n in names if _is_embedding_type(self.schema.field(n).type)]
        self.encoders: dict[str, str | None] = {
            n: described.get(n, {}).get("encoder") for n in embedding_columns
        }
        self.dims: dict[str, int] = {}
        for name in embedding_columns:
            arrow_type = self.schema.field(name).type
            if not _is_embedding_type(arrow_type):
                raise TableFormatError(
                    f"{self.path}: column '{name}' is described as an embedding but has type "
                    f"{arrow_type}."
                )
            if pa.types.is_fixed_size_list(arrow_type):
                self.dims[name] = arrow_type.list_size
            elif name in described and "dim" in described[name]:
                self.dims[name] = int(described[name]["dim"])
        self.modalities: list[str] = embedding_columns
        self.extra_columns: list[str] = [n for n in names if n not in embedding_columns]
        if modalities is not None:
            self._check_modalities(modalities)
            self.modalities = list(modalities)
        self.num_rows: int = self._file.metadata.num_rows

    def _check_modalities(self, modalities: Sequence[str]) -> None:
        known = [n for n in self.schema.names if n in self.encoders]
        for name in modalities:
            if name not in known:
                raise UnknownModalityError(
                    f"{self.path} has no embedding column {name!r}; available: "
                    f"{', '.join(known) or 'none'}."
                )

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
        """Stream validated batches of ``batch_size`` rows; only the needed columns are read."""
        wanted = list(self.modalities if modalities is None else modalities)
        self._check_modalities(wanted)
        extra = list(self.extra_columns if columns is None else columns)
        for name in extra:
            if name not in self.extra_columns:
                raise TableFormatError(
                    f"{self.path} has no column {name!r}; columns: {', '.join(self.schema.names)}."
                )
        validator = _Validator(str(self.path))
        offset = 0
        try:
            record_batches = self._file.iter_batches(
                batch_size=batch_size, columns=[ID_COLUMN, *wanted, *extra]
            )
            for record in record_batches:
                batch = self._convert(record, wanted, extra, offset)
                validator.check(batch, offset, require_any=set(wanted) == set(self.encoders))
                offset += len(batch)
                yield batch
        except (pa.ArrowException, OSError) as err:
            raise TableFormatError(
                f"{self.path} could not be read after row {offset}: {err}"
            ) from err

    def load(
        self, modalities: Sequence[str] | None = None, columns: Sequence[str] | None = None
    ) -> EmbeddingBatch:
        """All rows in memory (a concatenation of :meth:`iter_batches`)."""
        batches = list(self.iter_batches(65536, modalities=modalities, columns=columns))
        if not batches:
            wanted = list(self.modalities if modalities is None else modalities)
            return EmbeddingBatch(
                ids=np.array([], dtype=object),
                embeddings={m: np.zeros((0, self.dims.get(m, 0)), np.float32) for m in wanted},
                present={m: np.zeros(0, bool) for m in wanted},
                columns=None,
                encoders={m: self.encoders.get(m) for m in wanted},
            )
        return EmbeddingBatch.concat(batches)

    def _convert(
        self, record: pa.RecordBatch, wanted: list[str], extra: list[str], offset: int
    ) -> EmbeddingBatch:
        ids_array = record.column(ID_COLUMN)
        if ids_array.null_count:
            row = offset + int(
                np.flatnonzero(ids_array.is_null().to_numpy(zero_copy_only=False))[0]
            )
            raise TableFormatError(f"{self.path}: row {row} has a null id.")
        ids = np.asarray(ids_array.cast(pa.string()).to_pylist(), dtype=object)
        embeddings, present = {}, {}
        for name in wanted:
            values, mask = _column_to_numpy(
                record.column(name), self.dims.get(name), str(self.path), name, ids, offset
            )
            self.dims.setdefault(name, values.shape[1])
            embeddings[name], present[name] = values, mask
        columns = pa.Table.from_batches([record.select(extra)]) if extra else None
        return EmbeddingBatch(
            ids=ids,
            embeddings=embeddings,
            present=present,
            columns=columns,
            encoders={m: self.encoders.get(m) for m in wanted},
        )


def _column_to_numpy(
    array: pa.Array, dim: int | None, path: str, name: str, ids: np.ndarray, offset: int
) -> tuple[np.ndarray, np.ndarray]:
    """An embedding column as float32 [N, D] (zeros where null) and its present mask."""
    n = len(array)
    present = (
        ~array.is_null().to_numpy(zero_copy_only=False) if array.null_count else np.ones(n, bool)
    )
    if pa.types.is_fixed_size_list(array.type):
        width = array.type.list_size
        # The child array holds a slot for every row, null rows included.
        child = array.values.slice(array.offset * width, n * width)
        values = child.to_numpy(zero_copy_only=False).astype(np.float32, copy=True)
        values = values.reshape(n, width)
    else:
        lengths = array.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        valid = lengths[present]
        width = dim if dim is not None else (int(valid[0]) if len(valid) else 0)
        wrong = present & (lengths != width)
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise InvalidEmbeddingsError(
                f"{path}: column '{name}', row {offset + row} (id {ids[row]!r}) has "
                f"{int(lengths[row])} values; expected {width}."
            )
        flat = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=True)
        values = np.zeros((n, width), dtype=np.float32)
        values[present] = flat.reshape(-1, width) if width else flat.reshape(0, 0)
    if dim is not None and width != dim:
        raise InvalidEmbeddingsError(
            f"{path}: column '{name}' has dimension {width}; expected {dim}."
        )
    if not present.all():
        values[~present] = 0.0
    return values, present


class _Validator:
    """Checks rows as they stream: finite values, a modality per row, ids unique in the file."""

    def __init__(self, source: str):
        self.source = source
        self.seen: dict[str, int] = {}

    def check(self, batch: EmbeddingBatch, offset: int, *, require_any: bool = True) -> None:
        for name, values in batch.embeddings.items():
            bad = ~np.isfinite(values).all(axis=1) & batch.present[name]
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise InvalidEmbeddingsError(
                    f"{self.source}: column '{name}', row {offset + row} (id {batch.ids[row]!r}) "
                    "has NaN or inf values."
                )
        if require_any and batch.present:
            any_present = np.logical_or.reduce(list(batch.present.values()))
            if not any_present.all():
                row = int(np.flatnonzero(~any_present)[0])
                raise InvalidEmbeddingsError(
                    f"{self.source}: row {offset + row} (id {batch.ids[row]!r}) has no embedding "
                    "at all."
                )
        for i, identifier in enumerate(batch.ids):
            previous = self.seen.setdefault(identifier, offset + i)
            if previous != offset + i:
                raise InvalidEmbeddingsError(
                    f"{self.source}: duplicate id {identifier!r} at rows {previous} and {offset + i}."
                )


def read_embeddings(
    path: str | os.PathLike[str], *, modalities: Sequence[str] | None = None
) -> EmbeddingTable:
    """Open an embedding table lazily. See :class:`EmbeddingTable`."""
    return EmbeddingTable(path, modalities=modalities)


# --------------------------------------------------------------------------- writing


def _embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


class EmbeddingTableWriter:
    """Write an embedding table batch by batch; the file appears at ``path`` only on success.

    Use as a context manager. On an error the temporary file is removed and anything already at
    ``path`` is left as it was.
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
        self.dims = dict(dims)
        self.encoders = {name: (encoders or {}).get(name) for name in self.dims}
        self.extra_schema = extra_schema
        self.row_group_size = row_group_size
        self._atomic = atomic_path(self.path)
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._validator = _Validator(str(self.path))
        self._rows = 0

    def __enter__(self) -> EmbeddingTableWriter:
        self._tmp = self._atomic.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            if self._writer is not None:
                self._writer.close()
            self._atomic.__exit__(exc_type, exc, tb)

    def _schema(self) -> pa.Schema:
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

    def write(self, batch: EmbeddingBatch) -> None:
        """Validate and append a batch (its embedding columns must match ``dims``)."""
        if self._tmp is None:
            self.__enter__()
        for name, dim in self.dims.items():
            if name not in batch.embeddings:
                raise InvalidEmbeddingsError(f"{self.path}: batch lacks embedding column '{name}'.")
            values = batch.embeddings[name]
            if values.ndim != 2 or values.shape[1] != dim or values.shape[0] != len(batch):
                raise InvalidEmbeddingsError(
                    f"{self.path}: column '{name}' has shape {list(values.shape)}; expected "
                    f"[{len(batch)}, {dim}]."
                )
        unknown = [n for n in batch.embeddings if n not in self.dims]
        if unknown:
            raise InvalidEmbeddingsError(
                f"{self.path}: batch has embedding columns {unknown} not declared in dims "
                f"{list(self.dims)}."
            )
        self._validator.check(batch, self._rows)
        if self._writer is None:
            if self.extra_schema is None and batch.columns is not None:
                self.extra_schema = batch.columns.schema.remove_metadata()
            self._writer = pq.ParquetWriter(self._tmp, self._schema(), compression="zstd")
        arrays = [pa.array(np.asarray(batch.ids).astype(str), type=pa.string())]
        for name, dim in self.dims.items():
            values = np.ascontiguousarray(batch.embeddings[name], dtype=np.float32)
            flat = pa.array(values.reshape(-1), type=pa.float32())
            mask = pa.array(~batch.present[name]) if not batch.present[name].all() else None
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, dim, mask=mask))
        if self.extra_schema is not None:
            if batch.columns is None:
                raise InvalidEmbeddingsError(
                    f"{self.path}: batch lacks the columns {self.extra_schema.names}."
                )
            for fld in self.extra_schema:
                if fld.name not in batch.columns.column_names:
                    raise InvalidEmbeddingsError(f"{self.path}: batch lacks column '{fld.name}'.")
                arrays.append(batch.columns.column(fld.name).cast(fld.type).combine_chunks())
        table = pa.Table.from_arrays(arrays, schema=self._schema())
        self._writer.write_table(table, row_group_size=self.row_group_size)
        self._rows += len(batch)

    def close(self) -> Path:
        """Finish the file and move it into place."""
        if self._tmp is None:
            self.__enter__()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, self._schema(), compression="zstd")
        self._writer.close()
        self._atomic.__exit__(None, None, None)
        return self.path


def write_embeddings(
    path: str | os.PathLike[str],
    batch: EmbeddingBatch | None = None,
    *,
    ids=None,
    embeddings: Mapping[str, Any] | None = None,
    present: Mapping[str, Any] | None = None,
    columns: pa.Table | Mapping[str, Any] | None = None,
    encoders: Mapping[str, str | None] | None = None,
    row_group_size: int = 8192,
) -> Path:
    """Write an embedding table atomically, from a batch or from ``ids`` + ``embeddings``.

    Without ``present``, a row that is entirely NaN in a column is taken as missing (null); a row
    with only some NaN values is an error.
    """
    if batch is None:
        if ids is None or embeddings is None:
            raise TypeError("write_embeddings needs a batch, or ids= and embeddings=.")
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in embeddings.items()}
        masks = {}
        for name, values in arrays.items():
            if values.ndim != 2:
                raise InvalidEmbeddingsError(
                    f"embeddings[{name!r}] must be [rows, dim]; got shape {list(values.shape)}."
                )
            if present is not None and name in present:
                masks[name] = np.asarray(present[name], dtype=bool)
            else:
                masks[name] = ~np.isnan(values).all(axis=1)
            arrays[name] = np.where(masks[name][:, None], values, 0.0).astype(np.float32)
        batch = EmbeddingBatch(
            ids=np.asarray(ids, dtype=object),
            embeddings=arrays,
            present=masks,
            columns=_as_table(columns),
            encoders=dict(encoders or {}),
        )
    dims = {name: values.shape[1] for name, values in batch.embeddings.items()}
    for name, values in batch.embeddings.items():
        if len(values) != len(batch) or len(batch.present[name]) != len(batch):
            raise InvalidEmbeddingsError(
                f"embeddings[{name!r}] has {len(values)} rows; ids has {len(batch)}."
            )
    if batch.columns is not None and batch.columns.num_rows != len(batch):
        raise InvalidEmbeddingsError(
            f"columns have {batch.columns.num_rows} rows; ids has {len(batch)}."
        )
    with EmbeddingTableWriter(
        path, dims, encoders=encoders or batch.encoders, row_group_size=row_group_size
    ) as writer:
        for start in range(0, max(len(batch), 1), row_group_size):
            writer.write(batch.select(slice(start, start + row_group_size)))
    return Path(path)


# --------------------------------------------------------------------------- MultiNat import

_SYNONYMS = {
    "image": ("image", "img", "ground", "photo"),
    "sat": ("sat", "satellite", "sentinel"),
    "loc": ("loc", "location", "gps", "geo"),
    "env": ("env", "climate", "environment", "bioclim"),
    "text": ("text", "taxonomy", "taxon", "name_emb"),
    "audio": ("audio", "sound"),
}
_ID_CANDIDATES = ("id", "key", "inat_id", "observation_id", "obs_id")


def _guess_column_map(schema: pa.Schema) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for name in schema.names:
        if not _is_embedding_type(schema.field(name).type):
            continue
        lowered = name.lower()
        for modality, words in _SYNONYMS.items():
            if modality in mapping.values():
                continue
            if any(lowered == w or lowered.startswith(w) for w in words):
                mapping[name] = modality
                break
    return mapping


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

    ``column_map`` maps source columns to modalities (``{"img_emb": "image"}``); without it,
    columns are matched by name (``image``/``img``/``ground``..., ``sat``/``satellite``...,
    ``loc``/``location``/``gps``..., ``env``/``climate``..., ``text``/``taxon``..., ``audio``/
    ``sound``). ``source`` may be a file or a folder of Parquet files (read in sorted order).
    Unmapped columns are carried through. Streamed and atomic.
    """
    source = Path(source)
    files = sorted(source.glob("*.parquet")) if source.is_dir() else [source]
    if not files:
        raise FileNotFoundError(f"No Parquet files in {source}.")
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"MultiNat file {file} does not exist.")
    try:
        schema = pq.read_schema(files[0])
    except (pa.ArrowException, OSError) as err:
        raise TableFormatError(f"{files[0]} is not a readable Parquet file: {err}") from err
    mapping = dict(column_map) if column_map else _guess_column_map(schema)
    for src in mapping:
        if src not in schema.names:
            raise TableFormatError(
                f"{files[0]} has no column {src!r} (from the column map); columns: "
                f"{', '.join(schema.names)}."
            )
    if not mapping:
        raise TableFormatError(
            f"No embedding columns recognised in {files[0]} (columns: {', '.join(schema.names)}); "
            "pass column_map={'source_column': 'modality', ...}."
        )
    id_col = id_column or next((c for c in _ID_CANDIDATES if c in schema.names), None)
    if id_col is None or id_col not in schema.names:
        raise TableFormatError(
            f"{files[0]}: no id column found (tried {id_column or ', '.join(_ID_CANDIDATES)}); "
            "pass id_column=."
        )
    extra = [n for n in schema.names if n not in mapping and n != id_col]
    dims: dict[str, int] = {}
    with EmbeddingTableWriter(out, {}, encoders={}) as writer:
        offset = 0
        for file in files:
            parquet = pq.ParquetFile(file)
            for record in parquet.iter_batches(batch_size=batch_size):
                ids = np.asarray(record.column(id_col).cast(pa.string()).to_pylist(), dtype=object)
                embeddings, present = {}, {}
                for src, modality in mapping.items():
                    values, mask = _column_to_numpy(
                        record.column(src), dims.get(modality), str(file), src, ids, offset
                    )
                    dims.setdefault(modality, values.shape[1])
                    embeddings[modality], present[modality] = values, mask
                if not writer.dims:
                    writer.dims = dict(dims)
                    writer.encoders = {m: encoder for m in dims}
                columns = pa.Table.from_batches([record.select(extra)]) if extra else None
                writer.write(
                    EmbeddingBatch(ids, embeddings, present, columns, {m: encoder for m in dims})
                )
                offset += len(ids)
    return Path(out)
