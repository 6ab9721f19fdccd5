"""Spatial blocks: old home of :func:`block_ids` and :func:`spatial_blocks`.

Both now live in :mod:`ecomodal.data.splits` with every other split (``spatial_blocks`` is
:func:`~ecomodal.data.splits.spatial_block_folds` there); these names keep working.
"""

from __future__ import annotations

from ecomodal.data.splits import block_ids
from ecomodal.data.splits import spatial_block_folds as spatial_blocks

__all__ = ["block_ids", "spatial_blocks"]
