"""Import ProM3E's published precomputed embeddings (MultiNat Parquet) into the ecomodal format.

:func:`import_multinat` is behind ``ecomodal data import-multinat``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecomodal.errors import TableFormatError
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.format import ID_COLUMN, infer_list_dim, is_embedding_type, open_parquet
from ecomodal.io.reader import batch_from_record
from ecomodal.io.validate import BatchOrigin
from ecomodal.io.writer import EmbeddingTableWriter
from ecomodal.modalities import MODALITIES

__all__ = ["import_multinat"]

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
        if not is_embedding_type(schema.field(name).type):
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
        if not is_embedding_type(schema.field(src).type):
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
            dims[modality] = infer_list_dim(files, src)
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
            with open_parquet(file) as parquet:
                offset = 0
                try:
                    records = parquet.iter_batches(
                        batch_size=batch_size, columns=[id_col, *(s for s, _ in ranked), *extra]
                    )
                    for record in records:
                        batch = _multinat_batch(record, file, id_col, ranked, dims, extra, offset)
                        batch.encoders = dict.fromkeys(dims, encoder)
                        writer.write(batch, origin=BatchOrigin(str(file), offset, labels))
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
    batch = batch_from_record(
        record,
        source=str(file),
        offset=offset,
        id_column=id_col,
        embeddings={modality: src for src, modality in ranked},
        dims=dims,
        extra=extra,
        id_note=f" ({id_col!r})",
    )
    for modality, values in batch.embeddings.items():  # an all-NaN row is a missing modality
        missing = batch.present[modality] & np.isnan(values).all(axis=1)
        if missing.any():
            batch.present[modality] = batch.present[modality] & ~missing
            values[missing] = 0.0
    return batch
