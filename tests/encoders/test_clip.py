import io

import numpy as np
import pytest
import torch
from PIL import Image

from ecomodal.encoders import InvalidInputError, load_encoder
from ecomodal.errors import CheckpointError, ModelNotFoundError
from ecomodal.io.media import ImagePreprocess, MediaError

open_clip = pytest.importorskip("open_clip")


def test_preprocessing_matches_torchvision_as_trained(photos):
    from torchvision import transforms

    reference = transforms.Compose(
        [
            transforms.Resize((256, 256)),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        ]
    )
    for path in photos[0]:
        ours = ImagePreprocess()(path)
        expected = reference(Image.open(path).convert("RGB")).numpy()
        assert ours.shape == (3, 224, 224)
        np.testing.assert_allclose(ours, expected, atol=2e-2)  # PIL vs torchvision rounding
        assert np.abs(ours - expected).mean() < 2e-3


def test_image_encoder_is_the_open_clip_image_tower(tiny_clip, photos):
    folder, model = tiny_clip
    encoder = load_encoder("image", f"local-dir:{folder}")
    assert encoder.modality == "image" and encoder.dim == 16
    paths = photos[0]
    pixels = torch.from_numpy(np.stack([ImagePreprocess()(p) for p in paths]))
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode(paths, batch_size=2), expected, atol=1e-5)
    with open(paths[0], "rb") as handle:
        as_bytes = handle.read()
    from_bytes = encoder.encode([as_bytes, Image.open(paths[1])])
    np.testing.assert_allclose(from_bytes, expected[:2], atol=1e-5)
    half = encoder.encode(paths, precision="bf16")
    assert (half * expected).sum(1).min() > 0.99


def test_bad_photos_are_row_errors(tiny_clip, photos):
    folder, _ = tiny_clip
    encoder = load_encoder("image", str(folder))
    good, corrupt, empty = photos
    inputs = [good[0], corrupt, empty, "https://example.org/a.jpg", "/no/such/file.jpg", None]
    result = encoder.encode_rows(inputs)
    assert result.valid.tolist() == [True, False, False, False, False, False]
    reasons = [e.reason for e in result.errors]
    assert "cannot decode image" in reasons[0]
    assert "empty" in reasons[1] and "fetch" in reasons[2] and "does not exist" in reasons[3]
    with pytest.raises(InvalidInputError, match="row 1, column 'image'"):
        encoder.encode(inputs)


def test_text_encoder_tokenises_taxonomic_strings(tiny_clip):
    folder, model = tiny_clip
    encoder = load_encoder("text", f"local-dir:{folder}")
    texts = [
        "Animalia Chordata Aves Passeriformes Corvidae Corvus corax",
        "Plantae Tracheophyta Magnoliopsida Fagales Fagaceae Quercus alba",
    ]
    tokens = open_clip.get_tokenizer("ViT-B-16")(texts)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1).numpy()
    np.testing.assert_allclose(encoder.encode(texts), expected, atol=1e-5)
    result = encoder.encode_rows(["", texts[0], None])
    assert result.valid.tolist() == [False, True, False]


def test_missing_weights_and_offline_hub_are_clear(tmp_path):
    (tmp_path / "open_clip_config.json").write_text('{"model_cfg": {}}')
    with pytest.raises(CheckpointError, match="no open_clip weights"):
        load_encoder("image", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        load_encoder("image")  # TaxaBind's hub id
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        load_encoder("text", "bioclip")


def test_media_errors_are_media_errors(tmp_path):
    with pytest.raises(MediaError, match="no file"):
        ImagePreprocess()(None)
    buffer = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buffer, format="PNG")
    assert ImagePreprocess()(buffer.getvalue()).shape == (3, 224, 224)  # upscaled tiny photo
