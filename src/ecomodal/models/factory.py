"""``load_model``: one entry point for every way a ProM3E checkpoint can be named."""

from __future__ import annotations

import os

from ecomodal.hub import resolve_model_dir
from ecomodal.models.prom3e import CONFIG_NAME, WEIGHTS_NAME, ProM3E


def load_model(
    spec: str | os.PathLike[str] | ProM3E,
    *,
    device: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ProM3E:
    """Load a ProM3E model in eval mode.

    ``spec`` is a folder path, ``local-dir:PATH`` or ``hf-hub:ORG/NAME`` (e.g. ``hf-hub:MVRL/ProM3E``);
    the folder holds ``config.json`` and ``model.safetensors``. A model instance is returned as is.
    """
    if isinstance(spec, ProM3E):
        return spec
    folder = resolve_model_dir(spec, [CONFIG_NAME, WEIGHTS_NAME], cache_dir=cache_dir)
    model = ProM3E.from_pretrained(folder)
    if device is not None:
        model.to(device)
    return model
