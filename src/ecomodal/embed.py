"""Embed an observation table: every requested modality, in batches, resumable, sharded.

:func:`embed_records` reads a records table (CSV/Parquet, see :mod:`ecomodal.io.records`), encodes
each modality with its encoder and writes an embedding table. Work is done in chunks of rows, each
saved under ``OUT.parts/`` as it completes, so a killed run continues where it stopped; the final
table (every row exactly once) replaces the parts at the end. Rows an encoder cannot encode get a
null in that modality and a line in the errors table ``OUT.errors.parquet`` (row, id, modality,
column, reason); rows where every modality failed are only in the errors table.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecomodal.encoders.base import Encoder
from ecomodal.errors import (
    InvalidArgumentError,
    InvalidEmbeddingsError,
    MissingColumnError,
    OptionFormatError,
    ResumeMismatchError,
)
from ecomodal.io.atomic import atomic_path, check_output_path
from ecomodal.io.reader import read_embeddings
from ecomodal.io.records import failure_schema, parse_column_map, read_records, taxonomic_strings
from ecomodal.io.writer import EmbeddingTableWriter, write_embeddings
from ecomodal.modalities import parse_modalities
from ecomodal.options import check_range, parse_key_values
from ecomodal.progress import progress_bars

MEDIA_MODALITIES = ("image", "sat", "audio")
ERROR_SCHEMA = failure_schema("modality", "column")
DEFAULT_CHUNK_ROWS = 16384


@dataclass
class EmbedSummary:
    """What an embed run did: rows in and out, and per modality the rows encoded and failed."""

    out: str
    errors: str | None
    rows: int
    written: int
    encoded: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    rows_without_embedding: int = 0
    resumed_chunks: int = 0
    shard: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def errors_path(out: str | Path) -> Path:
    """Where the errors table of output ``out`` goes: ``NAME.errors.parquet`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.errors.parquet")


def shard_path(out: str | Path, index: int, count: int) -> Path:
    """The output of shard ``index`` of ``count``: ``NAME.shard-00001-of-00004.parquet``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{index:05d}-of-{count:05d}{out.suffix or '.parquet'}")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> (i, n); None -> torchrun's (RANK, WORLD_SIZE) when set, else None."""
    if text is None:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world > 1 and "RANK" in os.environ:
            return int(os.environ["RANK"]), world
        return None
    index, sep, count = str(text).partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = None
    if not sep or shard is None or not 0 <= shard[0] < shard[1]:
        raise OptionFormatError(f"Bad shard {text!r}; expected I/N with 0 <= I < N, e.g. 0/4.")
    return shard


def encoder_inputs(
    encoder: Encoder,
    records: pa.Table,
    root: Path | None,
    media: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """The input columns ``encoder`` takes, from a records table (media paths joined to ``root``).

    ``media`` maps an input column to a path template filled from each row, e.g.
    ``{"image": "taxabench_images/{id}.jpg", "audio": "taxabench_sound/{id}.*"}``; a glob pattern
    takes the first matching file.
    """
    columns: dict[str, np.ndarray] = {}
    for name in encoder.input_columns:
        if media and name in media:
            values = np.asarray(_fill_template(media[name], records, root), dtype=object)
        elif name == "text" and "text" not in records.column_names:
            values = np.asarray(taxonomic_strings(records), dtype=object)
        elif name in records.column_names:
            values = records.column(name).to_numpy(zero_copy_only=False)
        else:
            raise MissingColumnError(
                f"Encoding {encoder.modality!r} needs a {name!r} column; the records have "
                f"{records.column_names}. Map one with --column-map COLUMN={name}."
            )
        if name in MEDIA_MODALITIES and root is not None and not (media and name in media):
            values = np.asarray([_join_root(root, v) for v in values], dtype=object)
        columns[name] = values
    return columns


def parse_media_templates(items: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["image=photos/{id}.jpg"]`` (or a mapping) -> ``{"image": "photos/{id}.jpg"}``."""
    if isinstance(items, Mapping):
        return dict(items)
    return parse_key_values(items, option="--media", key="NAME", value="TEMPLATE")


def _fill_template(template: str, records: pa.Table, root: Path | None) -> list[str | None]:
    import glob
    import string

    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    missing = [f for f in fields if f not in records.column_names]
    if missing:
        raise MissingColumnError(
            f"Media template {template!r} names columns {missing} that the records lack; they "
            f"have {records.column_names}."
        )
    values = {f: records.column(f).to_pylist() for f in fields}
    out: list[str | None] = []
    for row in range(records.num_rows):
        row_values = {f: values[f][row] for f in fields}
        if any(v is None for v in row_values.values()):
            out.append(None)
            continue
        path = template.format(**row_values)
        if root is not None and not Path(path).is_absolute():
            path = str(root / path)
        if any(c in path for c in "*?["):
            matches = sorted(glob.glob(path))
            path = matches[0] if matches else path
        out.append(path)
    return out


def _join_root(root: Path, value: Any) -> Any:
    if value is None or not isinstance(value, str) or "://" in value:
        return value
    path = Path(value)
    return str(path if path.is_absolute() else root / path)


def _carried(records: pa.Table, modalities: Sequence[str]) -> pa.Table:
    """Records columns carried into the output; inputs named like a modality become NAME_source."""
    names = []
    for name in records.column_names:
        if name == "id":
            continue
        names.append(f"{name}_source" if name in modalities or name in MEDIA_MODALITIES else name)
    table = records.drop(["id"])
    return table.rename_columns(names)


def embed_records(
    records: str | Path,
    out: str | Path,
    *,
    modalities: Sequence[str] | str | None = None,
    encoders: Mapping[str, str | Encoder] | None = None,
    run: str | Path | None = None,
    root: str | Path | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    precision: str = "fp32",
    column_map: Mapping[str, str] | Sequence[str] | None = None,
    shard: tuple[int, int] | str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    encoder_options: Mapping[str, Mapping[str, Any]] | None = None,
    media: Mapping[str, str] | Sequence[str] | None = None,
    show_progress: bool = False,
) -> EmbedSummary:
    """Embed the ``modalities`` of every row of ``records`` into the embedding table ``out``.

    Args:
        encoders: modality -> encoder spec (see :func:`ecomodal.load_encoder`) or a loaded
            :class:`Encoder`; modalities not named use the registry's default.
        run: a run folder (``ecomodal quickstart --out``, ``ecomodal train bind --out``): embed
            with the encoders that produced its table (:func:`ecomodal.load_encoders`);
            ``modalities`` defaults to all of the run's. Not together with ``encoders``.
        root: folder that relative media paths are relative to.
        column_map: records column -> canonical name (``{"decimalLatitude": "lat"}`` or
            ``["decimalLatitude=lat"]``).
        shard: ``(i, n)`` or ``"i/n"``: encode only the i-th of n contiguous slices of the rows
            into ``NAME.shard-i-of-n.parquet`` (join them with :func:`merge_embeddings`).
            torchrun's RANK/WORLD_SIZE are used when no shard is given.
        encoder_options: per-modality options for :func:`ecomodal.load_encoder`
            (``{"env": {"covariates": "default"}}``).
        media: path templates of media files per input column, filled from each row
            (``{"image": "taxabench_images/{id}.jpg", "audio": "taxabench_sound/{id}.*"}``).
    """
    from ecomodal.encoders.registry import load_encoder
    from ecomodal.encoders.runs import load_run_encoder, selected_run_entries

    records = Path(records)
    run_entries: dict[str, dict[str, Any]] = {}
    if run is not None:  # checked now, loaded with the other encoders below
        if encoders:
            raise InvalidArgumentError(
                "Pass either run= (the run folder's encoders) or encoders=, not both."
            )
        run_entries = selected_run_entries(run, modalities)
        modalities = list(run_entries)
    elif modalities is None:
        raise InvalidArgumentError("Name the modalities to embed, e.g. modalities=['loc'].")
    modalities = parse_modalities(modalities)
    if not modalities:
        raise InvalidArgumentError("Name at least one modality to embed, e.g. modalities=['loc'].")
    shard = parse_shard(shard) if not isinstance(shard, tuple) else shard
    out = Path(out)
    check_output_path(out, expected="the path of a Parquet file to write")
    target = shard_path(out, *shard) if shard else out
    check_range(chunk_rows, "chunk_rows", minimum=1, integer=True)
    if batch_size is not None:
        check_range(batch_size, "batch_size", minimum=1, integer=True)
    table = read_records(records, column_map=column_map)
    start, stop = 0, table.num_rows
    if shard:
        start = shard[0] * table.num_rows // shard[1]
        stop = (shard[0] + 1) * table.num_rows // shard[1]
    loaded: dict[str, Encoder] = {}
    for modality in modalities:
        given = (encoders or {}).get(modality)
        if isinstance(given, Encoder):
            loaded[modality] = given
        elif modality in run_entries:
            loaded[modality] = load_run_encoder(
                modality, run_entries[modality], device=device, precision=precision
            )
        else:
            options = dict((encoder_options or {}).get(modality, {}))
            loaded[modality] = load_encoder(
                modality, given, device=device, precision=precision, **options
            )
    root_path = Path(root) if root is not None else records.parent
    templates = parse_media_templates(media)
    for encoder in loaded.values():  # a missing input column fails now, before any work is saved
        encoder_inputs(encoder, table.slice(0, 0), root_path, templates)
    remove_stale_temporaries(target)

    parts = target.with_name(target.name + ".parts")
    manifest = {
        "records": str(records.resolve()),
        "records_size": records.stat().st_size,
        "records_mtime_ns": records.stat().st_mtime_ns,
        "column_map": dict(sorted(parse_column_map(column_map).items())),
        "modalities": list(modalities),
        "encoders": {m: e.id for m, e in loaded.items()},
        "chunk_rows": chunk_rows,
        "rows": [start, stop],
        "media": dict(sorted(templates.items())),
    }
    _open_parts(parts, manifest)

    dims = {m: e.dim for m, e in loaded.items()}
    encoder_names = {m: e.id for m, e in loaded.items()}
    carried = _carried(table, modalities)
    chunks = list(range(start, stop, chunk_rows))
    done = {c for c in chunks if _part(parts, c).is_file()}
    try:
        with progress_bars(
            {f"{m} ({loaded[m].id})": stop - start for m in modalities},
            enabled=show_progress,
            completed={
                f"{m} ({loaded[m].id})": sum(min(chunk_rows, stop - c) for c in done)
                for m in modalities
            },
        ) as advance:
            for chunk_start in chunks:
                if chunk_start in done:
                    continue
                chunk_stop = min(chunk_start + chunk_rows, stop)
                _embed_chunk(
                    table.slice(chunk_start, chunk_stop - chunk_start),
                    carried.slice(chunk_start, chunk_stop - chunk_start),
                    chunk_start,
                    loaded,
                    parts,
                    dims,
                    encoder_names,
                    root_path,
                    templates,
                    batch_size,
                    advance,
                )
    except BaseException:
        if not any(parts.glob("part-*.parquet")):  # nothing saved: nothing to resume
            shutil.rmtree(parts, ignore_errors=True)
        raise
    summary = _finish(parts, chunks, target, dims, encoder_names, stop - start)
    summary.resumed_chunks = len(done)
    summary.shard = shard
    if shard:
        with atomic_path(target.with_suffix(".json")) as tmp:
            tmp.write_text(
                json.dumps({**summary.to_dict(), "shard": list(shard), "row_range": [start, stop]})
            )
    shutil.rmtree(parts, ignore_errors=True)
    return summary


def _part(parts: Path, chunk_start: int) -> Path:
    return parts / f"part-{chunk_start:012d}.parquet"


def _errors_part(parts: Path, chunk_start: int) -> Path:
    return parts / f"errors-{chunk_start:012d}.parquet"


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Delete the temporary files that killed runs left beside ``target`` (its table, errors
    table and shard sidecar: ``.NAME.PID.N.tmp``, see :func:`~ecomodal.io.atomic.atomic_path`)
    whose process is gone; a live process's temporaries are left alone. Returns those deleted."""
    target = Path(target)
    names = {target.name, errors_path(target).name, target.with_suffix(".json").name}
    removed = []
    for name in names:
        for path in target.parent.glob(f".{glob_escape(name)}.*.tmp"):
            pid_text = path.name[len(name) + 2 :].split(".")[0]
            if not pid_text.isdigit() or _process_alive(int(pid_text)):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or a number no process has): leave it
    return True


def _open_parts(parts: Path, manifest: dict[str, Any]) -> None:
    path = parts / "manifest.json"
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != manifest and any(parts.glob("part-*.parquet")):
            changed = sorted(k for k in manifest if previous.get(k) != manifest[k])
            raise ResumeMismatchError(
                f"{parts} holds unfinished work of a different run (it differs in: "
                f"{', '.join(changed)}). Delete that folder to start again, or rerun with the "
                "same records and options to resume."
            )
        if previous == manifest:
            return
    parts.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))


def _embed_chunk(
    records: pa.Table,
    carried: pa.Table,
    chunk_start: int,
    encoders: Mapping[str, Encoder],
    parts: Path,
    dims: Mapping[str, int],
    encoder_names: Mapping[str, str],
    root: Path,
    media: Mapping[str, str],
    batch_size: int | None,
    advance: Mapping[str, Any],
) -> None:
    ids = records.column("id").to_numpy(zero_copy_only=False).astype(str)
    embeddings, present = {}, {}
    errors: list[dict[str, Any]] = []
    for modality, encoder in encoders.items():
        inputs = encoder_inputs(encoder, records, root, media)
        result = encoder.encode_rows(inputs, batch_size=batch_size)
        embeddings[modality] = result.embeddings
        present[modality] = result.valid
        for error in result.errors:
            errors.append(
                {
                    "row": chunk_start + error.row,
                    "id": str(ids[error.row]),
                    "modality": modality,
                    "column": error.column,
                    "reason": error.reason,
                }
            )
        advance[f"{modality} ({encoder.id})"](records.num_rows)
    keep = np.logical_or.reduce([present[m] for m in encoders])
    index = np.flatnonzero(keep)
    with atomic_path(_errors_part(parts, chunk_start)) as tmp:
        pq.write_table(pa.Table.from_pylist(errors, schema=ERROR_SCHEMA), tmp)
    write_embeddings(
        _part(parts, chunk_start),
        ids=ids[index],
        embeddings={m: embeddings[m][index].reshape(len(index), dims[m]) for m in encoders},
        present={m: present[m][index] for m in encoders},
        columns=carried.take(pa.array(index, type=pa.int64())),
        encoders=encoder_names,
    )


def _finish(
    parts: Path,
    chunks: Sequence[int],
    target: Path,
    dims: Mapping[str, int],
    encoder_names: Mapping[str, str],
    n_rows: int,
) -> EmbedSummary:
    """Join the parts into ``target`` and the errors into ``NAME.errors.parquet``, atomically."""
    error_tables = [pq.read_table(_errors_part(parts, c)) for c in chunks]
    errors = pa.concat_tables(error_tables) if error_tables else ERROR_SCHEMA.empty_table()
    written = _concat_embeddings([_part(parts, c) for c in chunks], target, dims, encoder_names)
    errors_file = errors_path(target)
    with atomic_path(errors_file) as tmp:
        pq.write_table(errors, tmp)
    failed = _failed_counts(errors, dims)
    return EmbedSummary(
        out=str(target),
        errors=str(errors_file),
        rows=n_rows,
        written=written,
        encoded={m: n_rows - failed[m] for m in dims},
        failed=failed,
        rows_without_embedding=n_rows - written,
    )


def _failed_counts(errors: pa.Table, dims: Mapping[str, int]) -> dict[str, int]:
    """Rows that failed, per modality, from an errors table."""
    failed = {m: 0 for m in dims}
    for modality in errors.column("modality").to_pylist():
        failed[modality] = failed.get(modality, 0) + 1
    return failed


def _concat_embeddings(
    inputs: Sequence[Path],
    target: Path,
    dims: Mapping[str, int],
    encoder_names: Mapping[str, str | None],
) -> int:
    written = 0
    with EmbeddingTableWriter(target, dims, encoders=encoder_names) as writer:
        for path in inputs:
            for batch in read_embeddings(path).iter_batches():
                writer.write(batch)
                written += len(batch)
    return written


def merge_embeddings(inputs: Sequence[str | Path], out: str | Path) -> EmbedSummary:
    """Join the shard outputs of ``embed_records(..., shard=...)`` (or any embedding tables with
    the same columns and distinct ids) into one table, and their errors tables likewise.

    Shards are ordered by their index; a missing or repeated shard is an error.
    """
    out = Path(out)
    check_output_path(out, expected="the path of a Parquet file to write")
    # A shell glob such as NAME.shard-*.parquet also matches the shards' errors tables.
    paths = [Path(p) for p in inputs if not str(p).endswith(".errors.parquet")]
    if not paths:
        raise InvalidArgumentError("Give at least one embedding table to merge.")
    sidecars = [p.with_suffix(".json") for p in paths]
    infos = (
        [json.loads(s.read_text()) for s in sidecars]
        if all(s.is_file() for s in sidecars)
        else None
    )
    if infos:
        counts = {info["shard"][1] for info in infos}
        indices = sorted(info["shard"][0] for info in infos)
        if len(counts) != 1 or indices != list(range(next(iter(counts)))):
            raise InvalidArgumentError(
                f"The shards given are not one complete set: indices {indices} of "
                f"{sorted(counts)}; expected 0..N-1 of one N."
            )
        order = sorted(range(len(paths)), key=lambda i: infos[i]["shard"][0])
        paths = [paths[i] for i in order]
    first = read_embeddings(paths[0])
    dims = first.dims
    encoder_names = first.encoders
    for path in paths[1:]:
        table = read_embeddings(path)
        if table.dims != dims:
            raise InvalidEmbeddingsError(
                f"{path} has embedding columns {table.dims}; {paths[0]} has {dims}."
            )
    remove_stale_temporaries(out)
    written = _concat_embeddings(paths, out, dims, encoder_names)
    error_tables = [pq.read_table(errors_path(p)) for p in paths if errors_path(p).is_file()]
    errors = pa.concat_tables(error_tables) if error_tables else ERROR_SCHEMA.empty_table()
    with atomic_path(errors_path(out)) as tmp:
        pq.write_table(errors, tmp)
    failed = _failed_counts(errors, dims)
    rows = sum(info["rows"] for info in infos) if infos else written
    return EmbedSummary(
        out=str(out),
        errors=str(errors_path(out)),
        rows=rows,
        written=written,
        encoded={m: rows - failed[m] for m in dims},
        failed=failed,
        rows_without_embedding=rows - written,
    )
