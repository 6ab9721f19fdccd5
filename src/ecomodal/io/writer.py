"""Writing embedding tables, atomically: :class:`EmbeddingTableWriter` and :func:`write_embeddings`.

Every batch written is validated (:mod:`ecomodal.io.validate`); the file appears at its path only
once complete, so a failed write leaves whatever was there untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecomodal.errors import (
    InputTypeError,
    InvalidArgumentError,
    InvalidEmbeddingsError,
    TableFormatError,
)
from ecomodal.io.atomic import atomic_path
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.format import (
    FORMAT_VERSION,
    ID_COLUMN,
    METADATA_KEY,
    as_arrow_table,
    embedding_type,
    ids_to_arrow,
    ids_to_numpy,
)
from ecomodal.io.validate import BatchOrigin, Validator

__all__ = ["EmbeddingTableWriter", "write_embeddings"]


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
            raise InvalidArgumentError(f"row_group_size must be positive; got {row_group_size}.")
        self.row_group_size = row_group_size
        self.extra_schema: pa.Schema | None = None
        if extra_schema is not None:
            self._set_extra_schema(extra_schema)
        self._stack: contextlib.ExitStack | None = None
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._validator = Validator()
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
            raise InvalidArgumentError(f"The writer for {self.path} is {self._state}.")
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
        fields += [pa.field(name, embedding_type(dim)) for name, dim in self.dims.items()]
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

    def write(self, batch: EmbeddingBatch, *, origin: BatchOrigin | None = None) -> None:
        """Validate ``batch`` and append it.

        Its embedding columns must be exactly those of ``dims``, with those dimensions; its extra
        columns those of the file. NaN/inf in a present embedding, a row with no embedding, a
        null id or an id already written (in this or an earlier batch) raise, and abort the
        writer: the temporary file is deleted and ``path`` is left as it was. Error messages name
        ``path`` and the row in it, or, when given, the ``origin`` the rows were read from.
        """
        self._open()
        if origin is None:
            origin = BatchOrigin(str(self.path), self._rows)
        try:
            self._write(batch, origin)
        except BaseException as err:
            self._abort(err)
            raise

    def _write(self, batch: EmbeddingBatch, origin: BatchOrigin) -> None:
        source = origin.source
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
        id_array = ids_to_arrow(batch.ids, source)
        ids = ids_to_numpy(id_array)
        extras = self._extra_arrays(batch.columns, n, source)
        checked = EmbeddingBatch(ids, embeddings, present)
        self._validator.check(checked, origin)

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
        columns = as_arrow_table(columns)
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
            raise InputTypeError("write_embeddings needs a batch, or ids= and embeddings=.")
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
            columns=as_arrow_table(columns),
        )
    elif ids is not None or embeddings is not None or present is not None or columns is not None:
        raise InputTypeError("write_embeddings takes a batch or ids=/embeddings=/..., not both.")
    n = len(batch)
    for name, values in batch.embeddings.items():
        if len(values) != n:
            raise InvalidEmbeddingsError(
                f"{path}: embeddings[{name!r}] has {len(values)} rows; there are {n} ids."
            )
    extra = as_arrow_table(batch.columns)
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
