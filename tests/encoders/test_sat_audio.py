import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

from ecomodal.encoders import load_encoder
from ecomodal.errors import CheckpointError
from ecomodal.io.media import ImagePreprocess, MediaError, load_audio

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_sat(tmp_path_factory):
    """A random-weight CLIPVisionModelWithProjection in the MVRL/ecosat layout."""
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
        image_size=224, patch_size=32, projection_dim=16,
    )  # fmt: skip
    model = transformers.CLIPVisionModelWithProjection(config).eval()
    folder = tmp_path_factory.mktemp("ecosat")
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    """A random-weight ClapAudioModelWithProjection (fusion) in the MVRL/ecosound layout."""
    torch.manual_seed(0)
    config = transformers.ClapAudioConfig(
        hidden_size=32, depths=[1, 1], num_attention_heads=[1, 2], projection_dim=16,
        enable_fusion=True, patch_embeds_hidden_size=16, window_size=8,
    )  # fmt: skip
    model = transformers.ClapAudioModelWithProjection(config).eval()
    folder = tmp_path_factory.mktemp("ecosound")
    model.save_pretrained(folder)
    return folder, model


def test_sat_encoder_is_the_clip_vision_projection(tiny_sat, tmp_path):
    folder, model = tiny_sat
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / f"tile{i}.png"
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    encoder = load_encoder("sat", f"local-dir:{folder}")
    assert encoder.modality == "sat" and encoder.dim == 16
    pixels = torch.from_numpy(np.stack([ImagePreprocess()(p) for p in paths]))
    with torch.inference_mode():
        expected = model(pixel_values=pixels).image_embeds
    expected = torch.nn.functional.normalize(expected, dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode(paths, batch_size=2), expected, atol=1e-5)
    result = encoder.encode_rows([paths[0], str(tmp_path / "missing.png")])
    assert result.valid.tolist() == [True, False]


def _tone(seconds, rate=44_100, channels=2, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * np.sin(2 * np.pi * 3.1 * freq * t)
    return np.stack([wave, wave * 0.5], axis=1)[:, :channels].astype(np.float32)


def test_audio_decoding_formats_mono_and_resampling(tmp_path):
    stereo = _tone(1.0)
    for fmt in ("WAV", "FLAC", "OGG", "MP3"):
        path = tmp_path / f"call.{fmt.lower()}"
        soundfile.write(path, stereo, 44_100, format=fmt)
        wave = load_audio(path)
        assert wave.ndim == 1 and abs(len(wave) - 48_000) < 1200  # 1 s at 48 kHz
        assert wave.dtype == np.float32 and 0.2 < np.abs(wave).max() < 0.6
    mono = load_audio((stereo, 44_100))
    expected = stereo.mean(axis=1)
    assert abs(len(mono) - 48_000) <= 1
    # Resampling keeps the tone: same RMS as the mono mix.
    assert np.sqrt((mono**2).mean()) == pytest.approx(np.sqrt((expected**2).mean()), rel=0.02)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros((0, 1), dtype=np.float32), 48_000)
    with pytest.raises(MediaError, match="empty"):
        load_audio(empty)
    corrupt = tmp_path / "corrupt.ogg"
    corrupt.write_bytes(b"OggS" + bytes(100))
    with pytest.raises(MediaError, match="cannot decode audio"):
        load_audio(corrupt)


def test_audio_encoder_matches_the_clap_tower_and_is_deterministic(tiny_clap, tmp_path):
    folder, model = tiny_clap
    encoder = load_encoder("audio", str(folder))
    assert encoder.modality == "audio" and encoder.dim == 16
    short, long = tmp_path / "short.wav", tmp_path / "long.flac"
    soundfile.write(short, _tone(3.0, 48_000, 1), 48_000)
    soundfile.write(long, _tone(14.0, 32_000, 2, freq=300.0), 32_000)
    out = encoder.encode([str(short), str(long)])
    features, is_longer = zip(
        *(encoder.features(load_audio(p)) for p in (short, long)), strict=True
    )
    # One clip at a time, as TaxaBind's processor call does: CLAP's fusion extractor then flags
    # a lone short clip as "longer" too.
    assert is_longer == (True, True)
    with torch.inference_mode():
        expected = model(
            input_features=torch.from_numpy(np.stack(features)),
            is_longer=torch.tensor([[f] for f in is_longer]),
        ).audio_embeds
    np.testing.assert_allclose(out, torch.nn.functional.normalize(expected, dim=-1), atol=1e-5)
    # The crops of the long clip depend on the clip only: alone or in a batch, same vector.
    np.testing.assert_allclose(encoder.encode([str(long)])[0], out[1], atol=1e-6)
    np.random.seed(123)
    np.testing.assert_allclose(encoder.encode([str(long)])[0], out[1], atol=1e-6)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros((0, 1), dtype=np.float32), 48_000)
    result = encoder.encode_rows([str(empty), str(short)])
    assert result.valid.tolist() == [False, True]
    assert result.errors[0].column == "audio" and "empty" in result.errors[0].reason


def test_transformers_folders_without_weights_are_clear(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_encoder("sat", str(tmp_path))


def test_m4a_decodes_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "call.m4a"
    rate = 44_100
    tone = _tone(2.0, rate, 2).T.copy()  # [channels, frames]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="stereo")
        for start in range(0, tone.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(tone[:, start : start + 1024]), format="fltp", layout="stereo"
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    wave = load_audio(path)
    assert abs(len(wave) / 48_000 - 2.0) < 0.1  # about 2 s at 48 kHz
    expected_rms = np.sqrt((tone.mean(axis=0) ** 2).mean())
    assert np.sqrt((wave**2).mean()) == pytest.approx(expected_rms, rel=0.05)
    (tmp_path / "bad.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(64))
    with pytest.raises(MediaError, match="cannot decode audio"):
        load_audio(tmp_path / "bad.m4a")
