"""TaxaBind's published settings (``configs/taxabind.json``): hub ids and preprocessing.

Below every modality module and the registry, so any of them can read it without an import cycle.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def taxabind_config() -> dict[str, Any]:
    """The TaxaBind configuration (``MVRL/taxabind-config``): hub ids and preprocessing."""
    text = resources.files("ecomodal.encoders").joinpath("configs/taxabind.json").read_text()
    return json.loads(text)


def taxabind_preprocess(kind: str = "image"):
    """The photo (``"image"``) or tile (``"sat"``) preprocessing TaxaBind trained with: resize,
    centre-crop and normalisation from :func:`taxabind_config`."""
    from ecomodal.io.media import ImagePreprocess

    config = taxabind_config()
    size = int(config[f"{kind}_resize"])
    return ImagePreprocess(
        resize=(size, size),
        crop=int(config[f"{kind}_crop"]),
        mean=tuple(config["normalize_mean"]),
        std=tuple(config["normalize_std"]),
    )
