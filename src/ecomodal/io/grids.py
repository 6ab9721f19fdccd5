"""Chunked, resumable on-disk stores of per-cell embeddings (zarr).

A store is a zarr group holding ``embeddings`` [rows, dim] float32 in chunks of ``chunk_rows`` rows,
its ``key`` (what the rows are: grid + encoder fingerprint) in the group attributes, and a
``done.json`` beside the arrays listing the chunks already written. Chunks are marked done only
after they are written, so a killed first pass restarts at the first chunk not done.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.errors import GridStoreError, InvalidArgumentError, InvalidEmbeddingsError
from ecomodal.io.atomic import atomic_path

DONE_NAME = "done.json"


class EmbeddingStore:
    """Per-row embeddings [rows, dim] in a zarr group, written and read chunk by chunk."""

    def __init__(self, path: Path, array: Any, key: Mapping[str, Any], done: set[int]) -> None:
        self.path = path
        self.array = array
        self.key = dict(key)
        self._done = done

    # ------------------------------------------------------------------ opening
    @classmethod
    def open_or_create(
        cls, path: str | Path, *, rows: int, dim: int, chunk_rows: int, key: Mapping[str, Any]
    ) -> EmbeddingStore:
        """Open the store at ``path`` if it was made for ``key`` (resuming it), else create it.

        A store at ``path`` made for another key is an error (the caller picks the path from the
        key, so this means two different things were cached under one name).
        """
        import zarr

        path = Path(path)
        key = json.loads(json.dumps(dict(key)))  # as stored: plain JSON types
        if (path / "zarr.json").is_file():
            store = cls.open(path)
            if store.key != key:
                raise GridStoreError(
                    f"{path} caches {store.key} but {key} was asked for; delete it or use "
                    "another cache folder."
                )
            return store
        if chunk_rows < 1 or rows < 0 or dim < 1:
            raise InvalidArgumentError(
                f"rows={rows}, dim={dim}, chunk_rows={chunk_rows} must be positive."
            )
        group = zarr.open_group(str(path), mode="w", attributes={"key": key})
        array = group.create_array(
            "embeddings",
            shape=(rows, dim),
            chunks=(max(1, min(chunk_rows, rows)), dim),
            dtype="float32",
            fill_value=np.nan,
        )
        store = cls(path, array, key, set())
        store._save_done()
        return store

    @classmethod
    def open(cls, path: str | Path) -> EmbeddingStore:
        """Open an existing store (errors name the folder)."""
        import zarr

        path = Path(path)
        try:
            group = zarr.open_group(str(path), mode="r+")
            array = group["embeddings"]
            key = dict(group.attrs["key"])
        except (FileNotFoundError, KeyError, ValueError) as err:
            raise GridStoreError(f"{path} is not a readable grid embedding store: {err}") from err
        done_path = path / DONE_NAME
        done = set(json.loads(done_path.read_text())["chunks"]) if done_path.is_file() else set()
        return cls(path, array, key, done)

    # ------------------------------------------------------------------ layout
    @property
    def rows(self) -> int:
        return int(self.array.shape[0])

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])

    @property
    def chunk_rows(self) -> int:
        return int(self.array.chunks[0])

    @property
    def num_chunks(self) -> int:
        return -(-self.rows // self.chunk_rows)

    def chunk_range(self, index: int) -> tuple[int, int]:
        """Rows [start, stop) of chunk ``index``."""
        start = index * self.chunk_rows
        return start, min(start + self.chunk_rows, self.rows)

    @property
    def missing_chunks(self) -> list[int]:
        """Chunks not yet written, in order."""
        return [i for i in range(self.num_chunks) if i not in self._done]

    @property
    def complete(self) -> bool:
        return not self.missing_chunks

    # ------------------------------------------------------------------ writing / reading
    def write_chunk(self, index: int, values: np.ndarray) -> None:
        """Write chunk ``index`` (its rows x dim), then mark it done."""
        start, stop = self.chunk_range(index)
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (stop - start, self.dim):
            raise InvalidEmbeddingsError(
                f"chunk {index} of {self.path} takes shape {(stop - start, self.dim)}, "
                f"got {values.shape}."
            )
        self.array[start:stop] = values
        self._done.add(index)
        self._save_done()

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as float32 [n, dim]."""
        return np.asarray(self.array[start : self.rows if stop is None else stop])

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows at the (sorted) indices ``rows`` as float32 [len(rows), dim]."""
        return np.asarray(self.array.oindex[np.asarray(rows, dtype=np.int64), :])

    def iter_chunks(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, stop, rows) for each chunk in order; the store must be complete."""
        self.check_complete()
        for index in range(self.num_chunks):
            start, stop = self.chunk_range(index)
            yield start, stop, self.read(start, stop)

    def check_complete(self) -> None:
        """Raise :class:`GridStoreError` if some chunks were never written."""
        if not self.complete:
            raise GridStoreError(
                f"{self.path} is incomplete ({len(self.missing_chunks)} of {self.num_chunks} "
                "chunks missing); run the embedding pass again to finish it."
            )

    def _save_done(self) -> None:
        with atomic_path(self.path / DONE_NAME) as tmp:
            tmp.write_text(json.dumps({"chunks": sorted(self._done)}))
