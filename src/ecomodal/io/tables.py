"""The embedding-table API in one import (the layout itself is described in
:mod:`ecomodal.io.format`).

The pieces live by role: :mod:`~ecomodal.io.format` (constants, Arrow conversions),
:mod:`~ecomodal.io.validate` (row checks), :mod:`~ecomodal.io.batch` (:class:`EmbeddingBatch`),
:mod:`~ecomodal.io.reader` (:func:`read_embeddings`), :mod:`~ecomodal.io.writer`
(:func:`write_embeddings`) and :mod:`ecomodal.data.multinat` (:func:`import_multinat`). Every name
importable from here before the split still is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.format import FORMAT_VERSION, ID_COLUMN, METADATA_KEY
from ecomodal.io.reader import EmbeddingTable, TableLike, as_batch, read_embeddings
from ecomodal.io.writer import EmbeddingTableWriter, write_embeddings

if TYPE_CHECKING:
    from ecomodal.data.multinat import import_multinat

__all__ = [
    "FORMAT_VERSION",
    "ID_COLUMN",
    "METADATA_KEY",
    "EmbeddingBatch",
    "EmbeddingTable",
    "EmbeddingTableWriter",
    "TableLike",
    "as_batch",
    "import_multinat",
    "read_embeddings",
    "write_embeddings",
]


def __getattr__(name: str) -> Any:
    # The importer lives in data/ (a layer above io/); loaded on first use, not on import.
    if name == "import_multinat":
        from ecomodal.data.multinat import import_multinat

        return import_multinat
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
