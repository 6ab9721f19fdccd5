import numpy as np
import pytest

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, redraw_modality
from ecomodal.errors import InvalidArgumentError
from ecomodal.modalities import MODALITIES


@pytest.fixture(scope="module")
def world():
    return make_synthetic(4000, config=SyntheticConfig(n_species=50, dim=64), seed=0)


def test_deterministic_and_seeded():
    config = SyntheticConfig(n_species=10, dim=16)
    a = make_synthetic(300, config=config, seed=3)
    b = make_synthetic(300, config=config, seed=3)
    c = make_synthetic(300, config=config, seed=4)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.columns["scientific_name"], b.columns["scientific_name"])
    assert not np.allclose(a.embeddings, c.embeddings)


def test_shapes_norms_and_columns(world):
    assert world.embeddings.shape == (4000, 6, 64) and world.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(world.embeddings, axis=-1), 1.0, atol=1e-5)
    assert world.present.all()
    for name in (
        "scientific_name",
        "genus",
        "family",
        "species_id",
        "lat",
        "lon",
        "biome",
        "split",
    ):
        assert len(world.columns[name]) == 4000
    assert (np.abs(world.lat) <= 89).all() and (world.lon >= -180).all() and (world.lon < 180).all()
    # the taxonomy is consistent: one genus per species
    by_species = {}
    for s, g in zip(world.species, world.columns["genus"], strict=True):
        assert by_species.setdefault(s, g) == g


def test_missing_rate_and_splits():
    data = make_synthetic(
        3000, config=SyntheticConfig(n_species=10, dim=16, missing_rate=0.3), seed=1
    )
    assert 0.25 < 1 - data.present.mean() < 0.35
    assert data.present.any(axis=1).all()
    assert (data.embeddings[~data.present] == 0).all()
    splits = data.columns["split"]
    assert (
        abs((splits == "test").mean() - 0.1) < 0.01 and abs((splits == "val").mean() - 0.1) < 0.01
    )
    test, train = data.split("test"), data.split("train")
    assert not set(test.ids) & set(train.ids)
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        data.split("dev")


def test_text_is_the_species_only(world):
    text = world.embeddings[:, MODALITIES.index("text")]
    for s in np.unique(world.species)[:10]:
        rows = text[world.species == s]
        np.testing.assert_allclose(rows, rows[:1].repeat(len(rows), 0), atol=1e-6)


def _nearest(test, train, modality):
    i = MODALITIES.index(modality)
    return np.argmax(test.embeddings[:, i] @ train.embeddings[:, i].T, axis=1)


def test_information_structure(world):
    train, test = world.split("train"), world.split("test")
    j_loc = _nearest(test, train, "loc")
    biome_acc = (train.columns["biome"][j_loc] == test.columns["biome"]).mean()
    chance = np.unique(test.columns["biome"], return_counts=True)[1].max() / len(test)
    assert biome_acc > chance + 0.3
    env = MODALITIES.index("env")
    cos_nn = (train.embeddings[j_loc, env] * test.embeddings[:, env]).sum(1).mean()
    cos_random = (train.embeddings[: len(test), env] * test.embeddings[:, env]).sum(1).mean()
    assert cos_nn > cos_random + 0.3
    species_from_image = (train.species[_nearest(test, train, "image")] == test.species).mean()
    species_from_loc = (train.species[_nearest(test, train, "loc")] == test.species).mean()
    assert species_from_image > 5 / 50 and species_from_loc > 5 / 50  # far above chance
    assert species_from_loc < 0.8  # places are shared by several species


def _cosine_to_original(data, redrawn, modality):
    return (redrawn * data.embeddings[:, MODALITIES.index(modality)]).sum(-1).mean()


def test_redraw_keeps_what_it_is_told_to_keep():
    config = SyntheticConfig(n_species=20, dim=64)
    data = make_synthetic(500, config=config, seed=2)

    def redraw(modality, **keep):
        return redraw_modality(500, modality, draws=2, config=config, seed=2, **keep)

    # Text is the species and nothing else: a new place and individual change nothing.
    text = redraw("text", keep_individual=False, keep_place=False)
    np.testing.assert_allclose(text[0], data.embeddings[:, MODALITIES.index("text")], atol=1e-6)
    # loc: the same place with a fresh 0.05 noise; a fresh place in the species' range is far.
    same_place = _cosine_to_original(data, redraw("loc", keep_individual=True)[0], "loc")
    new_place = _cosine_to_original(
        data, redraw("loc", keep_individual=True, keep_place=False)[0], "loc"
    )
    assert same_place > 0.99 and new_place < same_place - 0.2
    # image: only a fresh noise vs a fresh individual of the same species too.
    kept = _cosine_to_original(data, redraw("image", keep_individual=True)[0], "image")
    fresh = _cosine_to_original(data, redraw("image", keep_individual=False)[0], "image")
    assert fresh < kept - 0.05
    # The draws differ from each other and are seeded.
    twice = redraw("env", keep_individual=True)
    assert not np.allclose(twice[0], twice[1])
    np.testing.assert_array_equal(twice, redraw("env", keep_individual=True))
    with pytest.raises(InvalidArgumentError, match="Unknown modality 'smell'"):
        redraw("smell", keep_individual=True)
