"""Searching a built index: :func:`load_index`, :class:`SearchIndex` and :class:`SearchResult`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ecomodal.errors import (
    InvalidArgumentError,
    InvalidEmbeddingsError,
    MissingColumnError,
    MissingDependencyError,
    TableFormatError,
    UnknownModalityError,
)
from ecomodal.io.index_files import read_index_folder
from ecomodal.options import check_range
from ecomodal.vectors import normalise

#: Rows compared at once by the exact fallback of a filtered search.
EXACT_BLOCK = 65_536


def faiss_module() -> Any:
    """``faiss`` or a :class:`~ecomodal.errors.MissingDependencyError` naming the extra."""
    try:
        import faiss
    except ImportError as err:
        raise MissingDependencyError(
            "The search index needs faiss: pip install 'ecomodal[eval]' (or faiss-cpu)."
        ) from err
    return faiss


@dataclass
class SearchResult:
    """The top-k of each query, best first: arrays of shape [Q, k].

    ``k`` is the asked k, or the number of rows that can match when fewer (then every query gets
    them all). ``ids`` are the table's ids, ``scores`` cosine similarities, ``ranks`` 1..k and
    ``rows`` the rows of the index.
    """

    ids: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray
    rows: np.ndarray

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def to_table(self) -> pa.Table:
        """One row per (query, rank): ``query`` (0-based), ``rank``, ``id``, ``score``."""
        n_queries, k = self.ids.shape
        return pa.table(
            {
                "query": pa.array(np.repeat(np.arange(n_queries), k), type=pa.int64()),
                "rank": pa.array(self.ranks.ravel(), type=pa.int64()),
                "id": pa.array(self.ids.ravel().tolist(), type=pa.string()),
                "score": pa.array(self.scores.ravel(), type=pa.float32()),
            }
        )


class SearchIndex:
    """A built index (see :func:`~ecomodal.index.build_index`), loaded by :func:`load_index`.

    Attributes: ``path``, ``modality``, ``dim``, ``kind`` (exact, hnsw or ivf), ``count`` (rows),
    ``ids`` (row -> table id), ``rows`` (ids and filter columns, a pyarrow Table), ``meta`` (the
    folder's index.json) and ``faiss_index``.
    """

    def __init__(self, path: str | os.PathLike[str]):
        faiss = faiss_module()
        self.meta, self.rows, index_file = read_index_folder(path)
        self.path = Path(path)
        try:
            self.faiss_index = faiss.read_index(str(index_file))
        except RuntimeError as err:
            raise TableFormatError(f"{index_file} is not a readable FAISS index.") from err
        self.modality: str = self.meta["modality"]
        self.dim: int = int(self.meta["dim"])
        self.kind: str = self.meta["kind"]
        self.count: int = int(self.meta["count"])
        self.filter_columns: list[str] = list(self.meta["filter_columns"])
        if self.faiss_index.ntotal != self.count or self.faiss_index.d != self.dim:
            raise TableFormatError(
                f"{index_file} holds {self.faiss_index.ntotal} vectors of dimension "
                f"{self.faiss_index.d}; index.json says {self.count} of {self.dim}."
            )
        self.ids = np.asarray(self.rows.column("id").to_pylist(), dtype=object)
        self._row_of: dict[str, int] | None = None

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (
            f"SearchIndex({str(self.path)!r}, modality={self.modality!r}, kind={self.kind!r}, "
            f"rows={self.count}, dim={self.dim})"
        )

    # ------------------------------------------------------------------ queries
    def row_of(self, id_: str) -> int:
        """The index row of table id ``id_`` (an InvalidArgumentError naming it if absent)."""
        if self._row_of is None:
            self._row_of = {str(v): i for i, v in enumerate(self.ids)}
        row = self._row_of.get(str(id_))
        if row is None:
            raise InvalidArgumentError(
                f"id {id_!r} is not in index {self.path} ({self.count} rows of {self.modality})."
            )
        return row

    def vectors_of(self, ids: Sequence[str]) -> np.ndarray:
        """The stored (normalised) vectors of table ids ``ids``: [len(ids), dim]."""
        rows = np.array([self.row_of(i) for i in ids], dtype=np.int64)
        return self._reconstruct(rows)

    def encode_points(self, lat: Any, lon: Any, *, encoder: str | None = None) -> np.ndarray:
        """Query vectors for places, with the loc encoder (the table's, else GeoCLIP); only for an
        index of ``loc`` embeddings."""
        lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        if not (np.isfinite(lat).all() and (np.abs(lat) <= 90).all()):
            raise InvalidArgumentError(f"lat must lie in [-90, 90]; got {lat.tolist()}.")
        if not (np.isfinite(lon).all() and (np.abs(lon) <= 180).all()):
            raise InvalidArgumentError(f"lon must lie in [-180, 180]; got {lon.tolist()}.")
        return self._encode("loc", encoder or "geoclip", "lat/lon", lat=lat, lon=lon)

    def encode_text(self, texts: str | Sequence[str], *, encoder: str | None = None) -> np.ndarray:
        """Query vectors for texts, with the table's text encoder; only for a ``text`` index."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self._encode("text", encoder, "text", texts)

    def _encode(self, modality: str, default: str | None, what: str, *args: Any, **kw: Any):
        if self.modality != modality:
            raise UnknownModalityError(
                f"A {what} query needs an index of {modality} embeddings; {self.path} holds "
                f"{self.modality} embeddings (query it with --vector or --query-id)."
            )
        from ecomodal.encoders import load_encoder

        name = self.meta.get("encoder") or default
        vectors = load_encoder(modality, name).encode(*args, **kw)
        if vectors.shape[1] != self.dim:
            raise InvalidEmbeddingsError(
                f"The {modality} encoder {name!r} gives {vectors.shape[1]}-d vectors but index "
                f"{self.path} holds {self.dim}-d ones (built from another encoder's embeddings?)."
            )
        return vectors

    # ------------------------------------------------------------------ search
    def search(
        self,
        vectors: Any,
        k: int = 10,
        *,
        where: Mapping[str, Any] | None = None,
        nprobe: int | None = None,
    ) -> SearchResult:
        """The ``k`` rows most similar (cosine) to each of ``vectors`` [Q, dim] (or one [dim]).

        ``where`` keeps only rows whose columns hold the given values (``{"biome": 3}``; a list
        means any of them; several columns must all match). Filtering runs inside FAISS (an
        ``IDSelectorBatch`` of the matching rows); any query for which the approximate index finds
        fewer than k matches is answered by exact search over the matching rows, so every query
        gets k results whenever k rows match; a filter matching no more rows than the approximate
        index would compare anyway is answered exactly among them. ``nprobe`` overrides an IVF index's lists scanned.
        """
        faiss = faiss_module()
        check_range(k, "k", minimum=1, integer=True)
        queries = self._queries(vectors)
        allowed = self._matching(where) if where else None
        available = self.count if allowed is None else len(allowed)
        k = min(int(k), available)
        if k == 0 or not len(queries):
            empty = np.zeros((len(queries), k))
            return SearchResult(empty.astype(object), empty.astype(np.float32), empty, empty)
        if allowed is not None and self.kind != "exact" and len(allowed) <= self._scan(nprobe):
            scores, rows = self._exact_among(queries, allowed, k)  # no more work, and exact
        else:
            params = self._params(faiss, allowed, nprobe)
            scores, rows = self.faiss_index.search(queries, k, params=params)
        short = np.flatnonzero((rows < 0).any(axis=1))
        if len(short):
            candidates = np.arange(self.count) if allowed is None else allowed
            scores[short], rows[short] = self._exact_among(queries[short], candidates, k)
        ranks = np.tile(np.arange(1, k + 1), (len(queries), 1))
        return SearchResult(self.ids[rows], scores.astype(np.float32), ranks, rows)

    def _queries(self, vectors: Any) -> np.ndarray:
        try:
            queries = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise InvalidEmbeddingsError(f"Query vectors must be numbers: {err}") from None
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise InvalidEmbeddingsError(
                f"Query vectors have shape {list(queries.shape)}; index {self.path} holds "
                f"{self.modality} vectors of dimension {self.dim} (expected [Q, {self.dim}])."
            )
        if not np.isfinite(queries).all():
            raise InvalidEmbeddingsError("Query vectors hold NaN or infinite values.")
        return np.ascontiguousarray(normalise(queries))

    def _matching(self, where: Mapping[str, Any]) -> np.ndarray:
        """The rows (sorted) whose filter columns hold the ``where`` values."""
        mask = np.ones(self.count, dtype=bool)
        for column, wanted in where.items():
            if column not in self.filter_columns:
                raise MissingColumnError(
                    f"where: {column!r} is not a filter column of index {self.path}; filter "
                    f"columns: {', '.join(self.filter_columns) or 'none'}."
                )
            values = self.rows.column(column)
            items = list(wanted) if isinstance(wanted, list | tuple | set) else [wanted]
            try:
                value_set = pa.array(items).cast(values.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise InvalidArgumentError(
                    f"where: {column}={wanted!r} does not fit column {column!r} of type "
                    f"{values.type}."
                ) from None
            hit = pc.is_in(values, value_set=value_set).to_numpy(zero_copy_only=False)
            mask &= np.asarray(hit, dtype=bool)
        return np.flatnonzero(mask).astype(np.int64)

    def _scan(self, nprobe: int | None) -> float:
        """About how many vectors the approximate index compares per query."""
        if self.kind == "ivf":
            lists = nprobe or self.meta.get("nprobe") or self.faiss_index.nprobe
            return lists * self.count / max(1, int(self.meta.get("nlist", 1)))
        return 64.0 * self.meta.get("ef_search", 128)

    def _params(self, faiss: Any, allowed: np.ndarray | None, nprobe: int | None) -> Any:
        selector = None if allowed is None else faiss.IDSelectorBatch(allowed)
        if self.kind == "ivf":
            if nprobe is not None:
                check_range(nprobe, "nprobe", minimum=1, integer=True)
            lists = int(nprobe or self.meta.get("nprobe") or self.faiss_index.nprobe)
            params = faiss.SearchParametersIVF(nprobe=lists)
        elif self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=int(self.meta.get("ef_search", 128)))
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
            params._selector = selector  # keep it alive as long as the parameters
        return params

    def _reconstruct(self, rows: np.ndarray) -> np.ndarray:
        if self.kind == "ivf" and not getattr(self, "_direct_map", False):
            self.faiss_index.make_direct_map()
            self._direct_map = True
        return self.faiss_index.reconstruct_batch(np.ascontiguousarray(rows, dtype=np.int64))

    def _exact_among(
        self, queries: np.ndarray, candidates: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of ``queries`` among the index rows ``candidates``, block by block."""
        best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        best_rows = np.zeros((len(queries), 0), dtype=np.int64)
        for start in range(0, len(candidates), EXACT_BLOCK):
            block = candidates[start : start + EXACT_BLOCK]
            sims = queries @ self._reconstruct(block).T
            scores = np.concatenate([best_scores, sims], axis=1)
            rows = np.concatenate([best_rows, np.broadcast_to(block, sims.shape)], axis=1)
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            best_scores = np.take_along_axis(scores, top, axis=1)
            best_rows = np.take_along_axis(rows, top, axis=1)
        return best_scores, best_rows


def load_index(path: str | os.PathLike[str]) -> SearchIndex:
    """Open the index folder ``path`` written by :func:`~ecomodal.index.build_index`."""
    return SearchIndex(path)
