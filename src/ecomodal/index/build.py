"""Building a search index from an embedding table, shard by shard (:func:`build_index`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ecomodal.errors import InvalidArgumentError, UnknownModalityError
from ecomodal.index.search import SearchIndex, faiss_module
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.index_files import INDEX_FILE, atomic_folder, write_meta, write_rows
from ecomodal.io.reader import EmbeddingTable, TableLike, read_embeddings
from ecomodal.options import check_range
from ecomodal.progress import progress_bar
from ecomodal.vectors import normalise

KINDS = ("auto", "exact", "hnsw", "ivf")
#: Tables with at most this many rows get an exact index by default.
DEFAULT_EXACT_THRESHOLD = 100_000
DEFAULT_SHARD_ROWS = 65_536
#: Rows of k-means training per IVF list (FAISS wants at least 39).
TRAIN_PER_LIST = 64
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128


def choose_kind(kind: str, count: int, exact_threshold: int) -> str:
    """The index kind for ``count`` rows: ``kind`` itself unless it is ``"auto"``, then exact up to
    ``exact_threshold`` rows and IVF above (trained on a sample, then filled shard by shard, so it
    never needs the table in memory twice; HNSW is there on request)."""
    if kind not in KINDS:
        raise InvalidArgumentError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}.")
    if kind != "auto":
        return kind
    return "exact" if count <= exact_threshold else "ivf"


def ivf_lists(count: int) -> int:
    """IVF list count: about sqrt(rows), with at least 39 rows per list."""
    return max(1, min(int(round(math.sqrt(count))), count // 39))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query by default: 1/128 of them, at least 8 (all when fewer). IVF-flat
    search reads every vector of the lists it scans, so this sets the speed: at 1M rows (1,000
    lists) 8 lists is under 1% of the table (benchmarks/index_speed.py: recall@10 and queries/s)."""
    return min(nlist, max(8, nlist // 128))


def build_index(
    data: TableLike,
    modality: str,
    out: str | os.PathLike[str],
    *,
    kind: str = "auto",
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    filter_columns: Sequence[str] | None = None,
    nprobe: int | None = None,
    seed: int = 0,
    show_progress: bool = False,
) -> SearchIndex:
    """Build a FAISS index over the ``modality`` embeddings of ``data`` into the folder ``out``.

    Vectors are L2-normalised, so scores are cosine similarities. ``kind="auto"`` builds an exact
    inner-product index (``IndexFlatIP``) for tables of at most ``exact_threshold`` rows and an IVF
    index above; ``"exact"``, ``"hnsw"`` and ``"ivf"`` force one. The table is read ``shard_rows``
    rows at a time (an IVF index reads it twice: once for a seeded training sample that does not
    depend on ``shard_rows``, once to fill the lists). Rows without the modality are left out.
    ``filter_columns`` (default: every scalar column besides ``id`` and the embeddings) are kept
    with the ids for :meth:`SearchIndex.search`'s ``where``. ``nprobe`` sets the IVF lists
    scanned per query (default :func:`default_nprobe`). The folder appears only once complete.
    """
    faiss = faiss_module()
    check_range(exact_threshold, "exact_threshold", minimum=0, integer=True)
    check_range(shard_rows, "shard_rows", minimum=1, integer=True)
    check_range(seed, "seed", minimum=0, integer=True)
    if nprobe is not None:
        check_range(nprobe, "nprobe", minimum=1, integer=True)
    source = _Source(data, modality, filter_columns)
    kind = choose_kind(kind, source.count, exact_threshold)
    dim = source.dim
    with atomic_folder(out) as folder:
        meta: dict[str, Any] = {"modality": modality, "dim": dim, "kind": kind}
        if kind == "ivf":
            nlist = ivf_lists(source.count)
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = int(seed)
            index.train(source.sample(nlist * TRAIN_PER_LIST, shard_rows, seed))
            index.nprobe = int(nprobe or default_nprobe(nlist))
            meta.update(nlist=nlist, nprobe=int(index.nprobe))
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = HNSW_EF_SEARCH
            meta.update(M=HNSW_M, ef_search=HNSW_EF_SEARCH)
        else:
            index = faiss.IndexFlatIP(dim)
        ids: list[np.ndarray] = []
        filters: list[pa.Table] = []
        with progress_bar(f"index {modality}", source.rows, enabled=show_progress) as advance:
            for shard in source.shards(shard_rows):
                keep = shard.present[modality]
                vectors = np.ascontiguousarray(normalise(shard.embeddings[modality][keep]))
                index.add(vectors)
                ids.append(np.asarray(shard.ids, dtype=object)[keep])
                if source.filter_columns:
                    filters.append(
                        shard.columns.select(source.filter_columns).filter(pa.array(keep))
                    )
                advance(len(shard))
        if not index.ntotal:
            raise InvalidArgumentError(f"{source.name} has no row with a {modality!r} embedding.")
        id_column = pa.array(np.concatenate(ids).tolist(), type=pa.string())
        rows = (
            pa.concat_tables(filters).add_column(0, "id", id_column)
            if filters
            else pa.table({"id": id_column})
        )
        faiss.write_index(index, str(folder / INDEX_FILE))
        write_rows(folder, rows)
        meta.update(
            count=int(index.ntotal),
            table=source.name,
            encoder=source.encoder,
            filter_columns=source.filter_columns,
            seed=int(seed),
        )
        write_meta(folder, meta)
        del index, rows, ids, filters  # freed before the folder is read back
    return SearchIndex(out)


class _Source:
    """The table being indexed: its rows shard by shard, and a seeded sample of its vectors."""

    def __init__(self, data: TableLike, modality: str, filter_columns: Sequence[str] | None):
        self.modality = modality
        if isinstance(data, EmbeddingBatch):
            if modality not in data.modalities:
                raise UnknownModalityError(
                    f"The rows have no embedding column {modality!r}; available: "
                    f"{', '.join(data.modalities) or 'none'}."
                )
            self.batch: EmbeddingBatch | None = data
            self.table: EmbeddingTable | None = None
            self.name = "<rows in memory>"
            self.rows = len(data)
            schema = data.columns.schema if data.columns is not None else pa.schema([])
            self.encoder = (data.encoders or {}).get(modality)
            self.dim = int(data.embeddings[modality].shape[1])
        else:
            table = data if isinstance(data, EmbeddingTable) else read_embeddings(data)
            table = read_embeddings(table.path, modalities=[modality])
            self.batch, self.table = None, table
            self.name = str(Path(table.path).resolve())
            self.rows = table.num_rows
            schema = pa.schema([table.schema.field(c) for c in table.extra_columns])
            self.encoder = table.encoders[modality]
            self.dim = table.dims[modality]
        self.count = self.rows
        scalar = [f.name for f in schema if not pa.types.is_nested(f.type)]
        if filter_columns is None:
            self.filter_columns = scalar
        else:
            unknown = [c for c in filter_columns if c not in scalar]
            if unknown:
                raise InvalidArgumentError(
                    f"filter_columns {unknown} are not scalar columns of {self.name}; "
                    f"available: {', '.join(scalar) or 'none'}."
                )
            self.filter_columns = list(filter_columns)

    def shards(self, shard_rows: int) -> Iterator[EmbeddingBatch]:
        if self.batch is not None:
            for start in range(0, self.rows, shard_rows):
                yield self.batch.select(slice(start, start + shard_rows))
            return
        assert self.table is not None
        yield from self.table.iter_batches(
            shard_rows, modalities=[self.modality], columns=self.filter_columns
        )

    def sample(self, size: int, shard_rows: int, seed: int) -> np.ndarray:
        """Normalised vectors of a seeded sample of up to ``size`` rows (the same rows whatever
        ``shard_rows``), read shard by shard."""
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(self.rows, size=min(size, self.rows), replace=False))
        out: list[np.ndarray] = []
        start = 0
        for shard in self.shards(shard_rows):
            stop = start + len(shard)
            local = chosen[(chosen >= start) & (chosen < stop)] - start
            local = local[shard.present[self.modality][local]]
            out.append(shard.embeddings[self.modality][local])
            start = stop
        return np.ascontiguousarray(normalise(np.concatenate(out).astype(np.float32)))
