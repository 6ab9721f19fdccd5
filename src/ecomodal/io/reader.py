"""Reading embedding tables: :func:`read_embeddings` opens a lazy :class:`EmbeddingTable`.

Tables are read lazily and in streamed batches, and every batch is validated: finite values,
consistent dimensions, unique ids and at least one embedding per row. :func:`as_batch` takes
whatever the Python API accepts as a table (a path, an :class:`EmbeddingTable` or an
:class:`~ecomodal.io.batch.EmbeddingBatch`) and returns its rows in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from ecomodal.errors import InvalidArgumentError, TableFormatError, UnknownModalityError
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.format import (
    ID_COLUMN,
    column_to_numpy,
    ids_to_arrow,
    ids_to_numpy,
    infer_list_dim,
    is_embedding_type,
    open_parquet,
    parse_metadata,
)
from ecomodal.io.validate import BatchOrigin, Validator
from ecomodal.modalities import MODALITIES

__all__ = ["EmbeddingTable", "TableLike", "as_batch", "read_embeddings"]


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
        with open_parquet(self.path) as parquet:
            self.schema: pa.Schema = parquet.schema_arrow
            self.num_rows: int = parquet.metadata.num_rows
        names = self.schema.names
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise TableFormatError(
                f"{self.path} has several columns named {', '.join(map(repr, repeated))}; "
                "column names must be unique."
            )
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
        described = parse_metadata(self.path, self.schema)
        if described is None:
            embedding = [n for n in names if n != ID_COLUMN and is_embedding_type(self._type(n))]
            described = {}
        else:
            unknown = [n for n in described if n not in names or n == ID_COLUMN]
            if unknown:
                raise TableFormatError(
                    f"{self.path}: the metadata describes embedding columns {unknown} that the "
                    f"file does not have (columns: {', '.join(names)})."
                )
            embedding = [n for n in names if n in described]
        self._check_modality_columns(embedding)
        self._described = described
        self._embedding: list[str] = embedding
        self._all_encoders = {n: described.get(n, {}).get("encoder") for n in embedding}
        self._dims: dict[str, int] = {}
        for name in embedding:
            arrow_type = self._type(name)
            if not is_embedding_type(arrow_type):
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
                if not arrow_type.list_size:
                    raise TableFormatError(
                        f"{self.path}: embedding column {name!r} has dimension 0 ({arrow_type})."
                    )
            elif meta_dim is not None:
                self._dims[name] = int(meta_dim)
        self.extra_columns: list[str] = [n for n in names if n != ID_COLUMN and n not in embedding]
        selected = list(embedding if modalities is None else modalities)
        self._check_modalities(selected)
        self.modalities: list[str] = selected
        self.dims: dict[str, int] = {m: self._dim(m) for m in selected}
        self.encoders: dict[str, str | None] = {m: self._all_encoders[m] for m in selected}

    def _check_modality_columns(self, embedding: Sequence[str]) -> None:
        """A column named like a modality must be an embedding column, never carried as an
        ordinary one (the completion would silently run without it)."""
        for name in self.schema.names:
            if name not in MODALITIES or name in embedding:
                continue
            arrow_type = self._type(name)
            if is_embedding_type(arrow_type):
                why = "the ecomodal metadata does not describe it"
            else:
                why = f"it has type {arrow_type}"
            raise TableFormatError(
                f"{self.path}: column {name!r} is named like a modality but {why}; a modality "
                "column must hold embeddings of type fixed_size_list<float32>[dim] (cast it to "
                "float32 lists, or rename it to carry it as an ordinary column)."
            )

    def _type(self, name: str) -> pa.DataType:
        return self.schema.field(name).type

    def _dim(self, name: str) -> int:
        if name not in self._dims:
            self._dims[name] = infer_list_dim([self.path], name)
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
            raise InvalidArgumentError(f"batch_size must be positive; got {batch_size}.")
        wanted, extra = self._resolve(modalities, columns)
        dims = {m: self._dim(m) for m in wanted}
        return self._stream(batch_size, wanted, dims, extra)

    def _stream(
        self, batch_size: int, wanted: list[str], dims: dict[str, int], extra: list[str]
    ) -> Iterator[EmbeddingBatch]:
        validator = Validator(require_any=bool(wanted) and set(wanted) == set(self._embedding))
        source = str(self.path)
        offset = 0
        with open_parquet(self.path) as parquet:
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
                    batch = batch_from_record(
                        record,
                        source=source,
                        offset=offset,
                        id_column=ID_COLUMN,
                        embeddings={m: m for m in wanted},
                        dims=dims,
                        extra=extra,
                    )
                    batch.encoders = {m: self._all_encoders[m] for m in wanted}
                    validator.check(batch, BatchOrigin(source, offset))
                    offset += len(batch)
                    yield batch
            except (pa.ArrowException, OSError) as err:
                raise TableFormatError(
                    f"{self.path} could not be read (after row {offset}): {err}"
                ) from err

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


def batch_from_record(
    record: pa.RecordBatch,
    *,
    source: str,
    offset: int,
    id_column: str,
    embeddings: Mapping[str, str],
    dims: Mapping[str, int],
    extra: Sequence[str],
    id_note: str = "",
) -> EmbeddingBatch:
    """One Arrow record batch as an :class:`EmbeddingBatch` (not yet validated).

    ``embeddings`` maps each output embedding column to the record's column holding it, ``dims``
    gives their dimensions, ``extra`` the record's columns carried as extra columns. A null id
    raises :class:`~ecomodal.errors.TableFormatError` naming ``source``, the row (counted from
    ``offset``) and ``id_note``.
    """
    raw_ids = record.column(id_column)
    if raw_ids.null_count:
        row = int(np.flatnonzero(raw_ids.is_null().to_numpy(zero_copy_only=False))[0])
        raise TableFormatError(f"{source}: row {offset + row} has a null id{id_note}.")
    ids = ids_to_numpy(ids_to_arrow(raw_ids, source))
    values, present = {}, {}
    for name, src in embeddings.items():
        values[name], present[name] = column_to_numpy(
            record.column(src), dims[name], source=source, column=src, ids=ids, offset=offset
        )
    columns = pa.Table.from_batches([record.select(extra)]) if extra else None
    return EmbeddingBatch(ids=ids, embeddings=values, present=present, columns=columns)


#: What the Python API accepts as a table: a path, a lazy table or rows in memory.
TableLike = str | os.PathLike[str] | EmbeddingTable | EmbeddingBatch


def as_batch(data: TableLike) -> EmbeddingBatch:
    """All rows of a table path, an :class:`EmbeddingTable` or an :class:`EmbeddingBatch`."""
    if isinstance(data, EmbeddingBatch):
        return data
    if isinstance(data, EmbeddingTable):
        return data.load()
    return read_embeddings(data).load()
