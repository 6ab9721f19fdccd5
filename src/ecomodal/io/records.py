"""Observation tables ("records"): CSV or Parquet with an id, coordinates, taxon ranks and media.

:func:`read_records` reads one and renames its columns to ecomodal's canonical names: ``id``,
``lat``, ``lon``, ``image`` / ``sat`` / ``audio`` (paths or URLs of the media), ``text`` (a
taxonomic string) and the rank columns ``kingdom`` ... ``species``. The column names of the
iNaturalist, GBIF (Darwin Core) and TaxaBench-8k exports are understood without options; any other
name is mapped with ``column_map={"my_latitude": "lat", ...}`` (column -> canonical name).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ecomodal.errors import TableFormatError
from ecomodal.options import parse_key_values

RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "species")

#: Canonical column -> names it is found under (first match wins, case-insensitive).
ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "observation_id", "obs_id", "gbifid", "occurrenceid", "uuid"),
    "lat": ("lat", "latitude", "decimallatitude"),
    "lon": ("lon", "lng", "long", "longitude", "decimallongitude"),
    "image": (
        "image", "image_path", "image_url", "photo", "photo_path", "photo_url", "img_path",
        "file_name", "filename",
    ),
    "sat": ("sat", "sat_path", "sat_url", "sat_image", "satellite", "sentinel_path", "sat_file"),
    "audio": (
        "audio", "audio_path", "audio_url", "sound", "sound_path", "sound_url", "sound_file",
    ),
    "text": ("text", "taxonomy", "taxonomic_name", "taxon_string"),
    "scientific_name": ("scientific_name", "scientificname", "taxon_name"),
    **{rank: (rank, f"taxon_{rank}_name", f"{rank}_name") for rank in RANKS},
}  # fmt: skip


def failure_schema(*fields: str) -> pa.Schema:
    """Schema of a per-row failure report on a records table: ``row``, ``id``, the string
    ``fields`` (e.g. ``"column", "url"``), then ``reason``."""
    middle = [(name, pa.string()) for name in fields]
    return pa.schema([("row", pa.int64()), ("id", pa.string()), *middle, ("reason", pa.string())])


def parse_column_map(items: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["decimalLatitude=lat", ...]`` (or a mapping) -> ``{"decimalLatitude": "lat"}``.

    A malformed pair raises :class:`~ecomodal.errors.OptionFormatError`.
    """
    return parse_key_values(items, option="--column-map", key="COLUMN", value="NAME")


def read_records(
    path: str | Path,
    *,
    column_map: Mapping[str, str] | Sequence[str] | None = None,
) -> pa.Table:
    """Read a CSV or Parquet observation table with canonical column names.

    Columns matched by :data:`ALIASES` (or ``column_map``) are renamed; the others are kept as
    they are. Without an ``id`` column, ids are the row numbers. Ids must be unique.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Records file {path} does not exist.")
    table = _read_table(path)
    names = table.column_names
    lower = {name.lower(): name for name in names}
    renames: dict[str, str] = {}
    for canonical, source in _orient(parse_column_map(column_map), names, path).items():
        renames[source] = canonical
    for canonical, aliases in ALIASES.items():
        if canonical in renames.values():
            continue
        if canonical in names:
            continue
        for alias in aliases:
            source = lower.get(alias)
            if source is not None and source not in renames:
                renames[source] = canonical
                break
    taken = set()
    new_names = []
    for name in names:
        new = renames.get(name, name)
        if new in taken:  # a canonical name also present verbatim: keep the original name
            new = name
        taken.add(new)
        new_names.append(new)
    table = table.rename_columns(new_names)
    if "id" not in table.column_names:
        ids = pa.array([str(i) for i in range(table.num_rows)])
        table = table.append_column("id", ids)
    else:
        index = table.column_names.index("id")
        try:
            ids = pc.cast(table.column("id"), pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise TableFormatError(
                f"{path}: column 'id' holds {table.schema.field('id').type} values; expected "
                "strings or numbers, one per row."
            ) from None
        if ids.null_count:
            row = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
            raise TableFormatError(f"{path}: row {row} has no id.")
        table = table.set_column(index, "id", ids)
    _check_unique(table.column("id"), path)
    sources = dict(zip(new_names, names, strict=True))
    for name in ("lat", "lon"):
        if name not in table.column_names:
            continue
        kind = table.schema.field(name).type
        if not _coordinate_type(kind):
            source = sources.get(name, name)
            label = repr(name) if source == name else f"{source!r} (used as {name!r})"
            raise TableFormatError(
                f"{path}: column {label} holds {kind} values; expected numbers in degrees "
                "(floats, integers or numeric strings)."
            )
        if not pa.types.is_floating(kind):
            index = table.column_names.index(name)
            table = table.set_column(index, name, _to_float(table.column(name), path, name))
    return table


def _coordinate_type(kind: pa.DataType) -> bool:
    """Types a coordinate column may have: numbers, numeric strings, or all null (not booleans,
    whose True would silently read as 1.0 degree, nor dates, lists or binary)."""
    return (
        pa.types.is_floating(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_null(kind)
        or (pa.types.is_dictionary(kind) and _coordinate_type(kind.value_type))
    )


def _orient(mapping: Mapping[str, str], names: Sequence[str], path: Path) -> dict[str, str]:
    """Pairs are ``COLUMN=NAME`` (as in ``import-multinat``); ``NAME=COLUMN`` is accepted too when
    only its right side is a column. Returns canonical name -> records column."""
    out = {}
    for left, right in mapping.items():
        if left in names:
            out[right] = left
        elif right in names and left in ALIASES:
            out[left] = right
        elif right in names:
            raise TableFormatError(
                f"{path}: column map {left}={right}: the records have no column {left!r}, and "
                f"{left!r} is not a name ecomodal knows ({', '.join(ALIASES)}); expected "
                "COLUMN=NAME, e.g. decimalLatitude=lat."
            )
        else:
            raise TableFormatError(
                f"{path}: column map {left}={right} names no column; the columns are {list(names)}."
            )
    return out


def _read_table(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix in (".csv", ".tsv", ".txt", ".gz"):
            from pyarrow import csv

            delimiter = "\t" if ".tsv" in path.name.lower() else ","
            return csv.read_csv(
                path,
                parse_options=csv.ParseOptions(delimiter=delimiter),
                convert_options=csv.ConvertOptions(strings_can_be_null=True),
            )
    except (pa.ArrowInvalid, OSError) as err:
        raise TableFormatError(f"{path} is not a readable {suffix[1:]} table: {err}") from err
    raise TableFormatError(f"{path}: unknown records format {suffix!r}; expected .csv or .parquet.")


def _check_unique(ids: pa.ChunkedArray, path: Path) -> None:
    values = ids.to_numpy(zero_copy_only=False)
    seen: dict[str, int] = {}
    if len(pc.unique(ids)) == len(values):
        return
    for row, value in enumerate(values):
        if value in seen:
            raise TableFormatError(
                f"{path}: duplicate id {value!r} at rows {seen[value]} and {row}."
            )
        seen[value] = row


def _to_float(column: pa.ChunkedArray, path: Path, name: str) -> pa.Array:
    """Numbers as float64; unparsable entries become NaN (reported per row by the encoders)."""
    out = np.full(len(column), np.nan)
    for row, value in enumerate(column.to_pylist()):
        with contextlib.suppress(TypeError, ValueError):
            out[row] = float(value) if value is not None else np.nan
    return pa.array(out)


def taxonomic_strings(table: pa.Table) -> list[str | None]:
    """TaxaBind's text input per row: "Kingdom Phylum Class Order Family Genus species" from the
    rank columns present (the ``species`` rank may hold the epithet or the binomial), else the
    ``text`` or ``scientific_name`` column. Rows with nothing are None."""
    if "text" in table.column_names:
        return table.column("text").to_pylist()
    ranks = [rank for rank in RANKS if rank in table.column_names]
    columns = {rank: table.column(rank).to_pylist() for rank in ranks}
    names = (
        table.column("scientific_name").to_pylist()
        if "scientific_name" in table.column_names
        else [None] * table.num_rows
    )
    out: list[str | None] = []
    for row in range(table.num_rows):
        parts = []
        for rank in ranks:
            value = columns[rank][row]
            if value is None or not str(value).strip():
                continue
            value = str(value).strip()
            genus = columns.get("genus", [None] * table.num_rows)[row]
            if rank == "species" and genus and value.startswith(f"{genus} "):
                value = value[len(genus) + 1 :]  # "Quercus alba" after genus "Quercus" -> "alba"
            parts.append(value)
        if not parts and names[row]:
            parts = [str(names[row]).strip()]
        out.append(" ".join(parts) if parts else None)
    return out
