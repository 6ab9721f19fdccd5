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

This module holds the layout's constants and the Arrow <-> numpy conversions shared by the reader
(:mod:`ecomodal.io.reader`), the writer (:mod:`ecomodal.io.writer`) and the MultiNat importer
(:mod:`ecomodal.data.multinat`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecomodal.errors import InvalidEmbeddingsError, TableFormatError

__all__ = ["FORMAT_VERSION", "ID_COLUMN", "METADATA_KEY"]

#: Schema metadata key holding the JSON description of the embedding columns.
METADATA_KEY = b"ecomodal"
#: Version of the layout written by this package.
FORMAT_VERSION = 1
#: Name of the unique string id column.
ID_COLUMN = "id"

# Streamed reads go through a buffered stream, so a file with huge row groups (foreign files)
# still reads in bounded memory.
_READ_BUFFER = 4 << 20


def ids_to_arrow(ids: Any, source: str) -> pa.Array:
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


def ids_to_numpy(array: pa.Array) -> np.ndarray:
    """An Arrow id array as a numpy object array."""
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=object)


def as_arrow_table(columns: pa.Table | Mapping[str, Any] | None) -> pa.Table | None:
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


def is_embedding_type(arrow_type: pa.DataType) -> bool:
    """Whether a column of this type holds embeddings: a list of floating values."""
    if (
        pa.types.is_fixed_size_list(arrow_type)
        or pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
    ):
        return pa.types.is_floating(arrow_type.value_type)
    return False


def embedding_type(dim: int) -> pa.DataType:
    """The Arrow type of an embedding column of dimension ``dim``."""
    return pa.list_(pa.float32(), dim)


@contextlib.contextmanager
def open_parquet(path: Path) -> Iterator[pq.ParquetFile]:
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


def infer_list_dim(files: Sequence[Path], column: str) -> int:
    """The length of the first non-null value of a variable-length list column (reads little)."""
    for file in files:
        with open_parquet(file) as parquet:
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


def column_to_numpy(
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
        with np.errstate(over="ignore"):  # float64 beyond float32: inf, refused later
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
    with np.errstate(over="ignore"):  # float64 beyond float32: inf, refused later
        if present.all():
            values = flat.astype(np.float32, copy=True).reshape(n, dim)
        else:
            values = np.zeros((n, dim), dtype=np.float32)
            values[present] = flat.reshape(-1, dim)
    return values, present


def parse_metadata(path: Path, schema: pa.Schema) -> dict[str, dict[str, Any]] | None:
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
    for column, entry in described.items():
        dim, encoder = entry.get("dim"), entry.get("encoder")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise TableFormatError(
                f"{path}: the {METADATA_KEY.decode()} metadata gives column {column!r} dimension "
                f"{dim!r}; expected a whole number >= 1."
            )
        if encoder is not None and not isinstance(encoder, str):
            raise TableFormatError(
                f"{path}: the {METADATA_KEY.decode()} metadata gives column {column!r} encoder "
                f"{encoder!r}; expected a name (a string) or null."
            )
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise TableFormatError(
            f"{path}: format_version {version!r} is not supported (this ecomodal reads up to "
            f"{FORMAT_VERSION}); upgrade ecomodal."
        )
    return described
