"""``audio``: the CLAP HTSAT-fused audio tower with projection (``MVRL/ecosound``), via transformers.

Recordings are decoded without torchaudio (soundfile), averaged to mono, resampled to 48 kHz
(soxr) and turned into CLAP's fused features (10 s, repeat-padding; longer clips give a global
view plus three crops). The crops of a long clip are chosen from a seed derived from the clip's
samples, so the same recording always gives the same embedding. Each clip is featurised alone, as
TaxaBind's own inference does (so CLAP's fusion extractor flags a lone short clip as "longer" too):
a clip's embedding never depends on the rest of its batch.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecomodal.encoders.base import Encoder, EncoderInfo, Prepared, prepare_rows
from ecomodal.encoders.hf import load_projection_model
from ecomodal.encoders.taxabind import taxabind_config
from ecomodal.io.media import load_audio

_NUMPY_RNG_LOCK = threading.Lock()


class _AudioWithProjection(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
        return self.model(input_features=features, is_longer=is_longer).audio_embeds


class AudioEncoder(Encoder):
    """Recordings (paths, bytes or (waveform, rate) pairs) -> [N, projection_dim]."""

    input_columns = ("audio",)
    default_batch_size = 16

    def __init__(
        self, model: nn.Module, info: EncoderInfo, feature_extractor: Any, *, seed: int = 0, **kw
    ):
        super().__init__(model, info, **kw)
        self.feature_extractor = feature_extractor
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.seed = seed

    def features(self, waveform: np.ndarray) -> tuple[np.ndarray, bool]:
        """CLAP fused features [4, frames, mels] and the is_longer flag of one clip."""
        clip_seed = (zlib.crc32(waveform.tobytes()) ^ self.seed) & 0xFFFFFFFF
        # The extractor draws its crops from numpy's global generator: seed it per clip.
        with _NUMPY_RNG_LOCK:
            state = np.random.get_state()
            np.random.seed(clip_seed)
            try:
                out = self.feature_extractor(
                    [waveform],
                    sampling_rate=self.sample_rate,
                    return_tensors="np",
                    padding="repeatpad",
                    truncation="fusion",
                )
            finally:
                np.random.set_state(state)
        return out["input_features"][0], bool(np.asarray(out["is_longer"]).reshape(-1)[0])

    def prepare(self, columns: Mapping[str, np.ndarray]) -> Prepared:
        def one(value: Any) -> tuple[np.ndarray, bool]:
            return self.features(load_audio(value, sample_rate=self.sample_rate))

        outputs, rows, errors = prepare_rows(one, columns["audio"], "audio")
        if not outputs:
            return Prepared(None, rows, errors)
        features = torch.from_numpy(np.stack([f for f, _ in outputs]).astype(np.float32))
        is_longer = torch.tensor([[longer] for _, longer in outputs])
        return Prepared((features, is_longer), rows, errors)

    def forward(self, model: nn.Module, inputs: Any) -> torch.Tensor:
        features, is_longer = inputs
        return model(features.to(self.device, self.input_dtype(model)), is_longer.to(self.device))


def clap_feature_extractor(folder: str | Path) -> Any:
    """The checkpoint's own feature-extractor settings when it has them, else TaxaBind's
    (laion/clap-htsat-unfused: 48 kHz, 64 mel bins 50-14000 Hz, 10 s, repeatpad, fusion)."""
    from transformers import ClapFeatureExtractor

    folder = Path(folder)
    if (folder / "preprocessor_config.json").is_file():
        return ClapFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    config = taxabind_config()
    return ClapFeatureExtractor(
        sampling_rate=int(config["audio_sample_rate"]),
        max_length_s=int(config["audio_max_length_s"]),
        padding=config["audio_padding"],
        truncation=config["audio_truncation"],
        frequency_min=50,
        frequency_max=14_000,
    )


def load_audio_encoder(
    folder: str | Path,
    *,
    encoder_id: str,
    licence: str = "unknown",
    device: str | None = None,
    precision: str = "fp32",
    seed: int = 0,
) -> AudioEncoder:
    """An audio encoder from a transformers ``ClapAudioModelWithProjection`` folder."""
    from transformers import ClapAudioModelWithProjection

    model, info = load_projection_model(
        ClapAudioModelWithProjection, folder, encoder_id=encoder_id, modality="audio",
        licence=licence, description="CLAP HTSAT-fused audio tower with projection (transformers)",
    )  # fmt: skip
    return AudioEncoder(
        _AudioWithProjection(model),
        info,
        clap_feature_extractor(folder),
        seed=seed,
        device=device,
        precision=precision,
    )
