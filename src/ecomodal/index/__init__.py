"""A FAISS search index over one modality of an embedding table, usable on its own.

``build_index(data, modality, out)`` writes an index folder (exact below a size threshold, IVF
above, or the kind asked for), built shard by shard; ``load_index(out).search(vectors, k,
where={...})`` returns the table's ids, scores and ranks of the top k. ``ecomodal index build``
and ``ecomodal index search`` are the command line.
"""

from __future__ import annotations

from ecomodal.index.build import DEFAULT_EXACT_THRESHOLD, KINDS, build_index, choose_kind
from ecomodal.index.search import SearchIndex, SearchResult, load_index

__all__ = [
    "DEFAULT_EXACT_THRESHOLD",
    "KINDS",
    "SearchIndex",
    "SearchResult",
    "build_index",
    "choose_kind",
    "load_index",
]
