"""Search-index folders (:mod:`ecomodal.index`): written whole or not at all, read back checked.

A folder holds ``index.faiss`` (the FAISS index; its label i is row i), ``rows.parquet`` (the
``id`` of each row and the filter columns, row i = label i) and ``index.json`` (modality, dim,
kind, count, the table it came from, the filter columns and the search settings).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ecomodal.errors import OutputPathError, TableFormatError
from ecomodal.io.atomic import check_output_path

__all__ = ["INDEX_FILE", "META_FILE", "ROWS_FILE", "atomic_folder", "read_index_folder"]

INDEX_FILE = "index.faiss"
ROWS_FILE = "rows.parquet"
META_FILE = "index.json"
INDEX_FORMAT = 1


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path``.

    ``path`` may be missing or an earlier index folder (replaced only once the new one is
    complete); any other existing file or non-empty folder is an
    :class:`~ecomodal.errors.OutputPathError`, raised before any work. On error the temporary
    folder is removed and ``path`` is left as it was.
    """
    target = Path(path)
    if target.is_dir():
        if any(target.iterdir()) and not (target / META_FILE).is_file():
            raise OutputPathError(
                f"Index folder {target} exists and is not an ecomodal index; choose another --out."
            )
    else:
        check_output_path(target, what="Index folder", expected="a folder path")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    (folder / META_FILE).write_text(json.dumps({"format": INDEX_FORMAT, **meta}, indent=2) + "\n")


def write_rows(folder: Path, rows: pa.Table) -> None:
    pq.write_table(rows, folder / ROWS_FILE)


def read_index_folder(path: str | os.PathLike[str]) -> tuple[dict[str, Any], pa.Table, Path]:
    """The metadata, the rows table and the FAISS file of the index folder ``path``.

    A missing folder is a FileNotFoundError naming it; a folder that is not an index, or one with a
    file missing or unreadable, a :class:`~ecomodal.errors.TableFormatError` naming the file.
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(2, "No such index folder", str(folder))
    if not folder.is_dir():
        raise TableFormatError(f"{folder} is a file; an index is a folder made by 'index build'.")
    for name in (META_FILE, ROWS_FILE, INDEX_FILE):
        if not (folder / name).is_file():
            raise TableFormatError(
                f"{folder} is not an ecomodal index: {name} is missing (build one with "
                "'ecomodal index build')."
            )
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise TableFormatError(f"{folder / META_FILE} cannot be read: {err}") from err
    needed = {"modality", "dim", "kind", "count", "filter_columns"}
    if not isinstance(meta, dict) or not needed <= set(meta):
        raise TableFormatError(
            f"{folder / META_FILE} lacks {sorted(needed - set(meta or {}))}; rebuild the index."
        )
    try:
        rows = pq.read_table(folder / ROWS_FILE)
    except (OSError, pa.ArrowException) as err:
        raise TableFormatError(f"{folder / ROWS_FILE} cannot be read: {err}") from err
    if rows.num_rows != meta["count"] or "id" not in rows.column_names:
        raise TableFormatError(
            f"{folder / ROWS_FILE} holds {rows.num_rows} rows (index.json says {meta['count']}) "
            "or no 'id' column; rebuild the index."
        )
    return meta, rows, folder / INDEX_FILE
