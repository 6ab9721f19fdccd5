"""Each metric against a hand-computed case and against scikit-learn where it has one."""

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import RidgeClassifierCV
from sklearn.metrics import label_ranking_average_precision_score, top_k_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from ecomodal.errors import TableFormatError, UnknownModalityError
from ecomodal.eval import (
    compare_models,
    few_shot,
    linear_probe,
    make_split,
    modality_gap,
    rank_metrics,
    ranks_of_truth,
    retrieval,
    spatial_block_split,
    zero_shot,
)
from ecomodal.eval.completion import visible_subsets
from ecomodal.eval.gap import centroid_distances, separability
from ecomodal.eval.retrieval import mixed_queries, tune_delta
from ecomodal.eval.zero_shot import class_prototypes, top_k_hits
from ecomodal.io.tables import EmbeddingBatch


def _batch(embeddings: dict, columns: dict) -> EmbeddingBatch:
    names = list(embeddings)
    n = len(next(iter(embeddings.values())))
    stacked = np.stack([np.asarray(embeddings[m], np.float32) for m in names], axis=1)
    return EmbeddingBatch.from_stacked(
        [f"r{i}" for i in range(n)], stacked, None, names, columns=pa.table(columns)
    )


def test_ranks_by_hand():
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    gallery = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.1]])
    # q0's match g0 = (0,1): g2 is closer -> rank 2. q1's match g1 ties with g0 -> rank 1.
    # q2 = (1,1): sims g0 0.707, g1 0.707, g2 0.77 -> rank 1 for its match g2.
    ranks = ranks_of_truth(queries, gallery)
    assert ranks.tolist() == [2, 1, 1]
    metrics = rank_metrics(ranks, ks=(1, 5))
    assert metrics["R@1"] == pytest.approx(2 / 3)
    assert metrics["R@5"] == 1.0
    assert metrics["MRR"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_ranks_match_sklearn_and_do_not_depend_on_blocks():
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((57, 16)).astype(np.float32)
    gallery = rng.standard_normal((57, 16)).astype(np.float32)
    ranks = ranks_of_truth(queries, gallery)
    blocked = ranks_of_truth(queries, gallery, query_block=5, gallery_block=7)
    assert np.array_equal(ranks, blocked)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    sims = q @ g.T
    truth = np.arange(57)
    metrics = rank_metrics(ranks, ks=(1, 5, 10))
    for k in (1, 5, 10):
        expected = top_k_accuracy_score(truth, sims, k=k, labels=truth)
        assert metrics[f"R@{k}"] == pytest.approx(expected)
    # With one relevant item per query, label-ranking average precision is the MRR.
    onehot = np.eye(57, dtype=int)
    assert metrics["MRR"] == pytest.approx(label_ranking_average_precision_score(onehot, sims))


def test_ranks_with_a_sampled_query_set_use_given_truth():
    rng = np.random.default_rng(1)
    gallery = rng.standard_normal((40, 8)).astype(np.float32)
    truth = np.array([3, 17, 39])
    queries = gallery[truth] + 0.01
    assert ranks_of_truth(queries, gallery, truth).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="truth indices"):
        ranks_of_truth(queries, gallery, np.array([0, 1, 40]))


def test_mixed_query_and_delta_tuning():
    q = np.array([[1.0, 0.0]])
    c = np.array([[0.0, 2.0]])
    assert np.allclose(mixed_queries(q, c, 0.25), [[0.75, 0.25]])
    # Queries carry no signal; completions match the gallery: the largest delta wins.
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((30, 8))
    queries = rng.standard_normal((30, 8))
    best, scores = tune_delta(queries, gallery, gallery, (0.0, 0.5, 1.0))
    assert scores["0.0"] < scores["1.0"] == 1.0
    assert best in (0.5, 1.0) and scores[str(best)] == 1.0
    assert best == 0.5 or scores["0.5"] < 1.0  # ties go to the smaller delta


def test_retrieval_direct_on_a_table_by_hand():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20, 8))
    batch = _batch({"sat": a, "loc": a + 0.001}, {"split": ["test"] * 20})
    result = retrieval(batch, pairs=["sat->loc", ("loc", "sat")])
    assert set(result["pairs"]) == {"sat->loc", "loc->sat"}
    assert result["pairs"]["sat->loc"]["direct"]["R@1"] == 1.0
    assert "mixed" not in result["pairs"]["sat->loc"]
    with pytest.raises(ValueError, match="SOURCE->TARGET"):
        retrieval(batch, pairs=["sat"])
    with pytest.raises(UnknownModalityError, match="audio"):
        retrieval(batch, pairs=["sat->audio"])


def test_top_k_hits_match_sklearn():
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((50, 9))
    truth = rng.integers(0, 9, 50)
    hits = top_k_hits(scores, truth, (1, 3))
    assert hits["top1"] == pytest.approx(top_k_accuracy_score(truth, scores, k=1))
    assert hits["top3"] == pytest.approx(top_k_accuracy_score(truth, scores, k=3))


def test_class_prototypes_by_hand():
    emb = np.array([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]])
    names, protos = class_prototypes(emb, np.array(["b", "a", "b"]))
    assert names == ["a", "b"]
    assert np.allclose(protos, [[0, 1], [np.sqrt(0.5), np.sqrt(0.5)]], atol=1e-6)


def _taxa_table():
    """Two genera of two species; image = the species text plus a small offset; one row of each
    species in train, one in test."""
    text = np.eye(4, 6)
    image = text + 0.1 * np.eye(4, 6, k=2)
    image[3] = text[2] + 0.05  # a row of species 3 looks like species 2 (same genus)
    rows_text = np.concatenate([text, text])
    rows_image = np.concatenate([image, image])
    species = ["G1 a", "G1 b", "G2 c", "G2 d"] * 2
    genus = ["G1", "G1", "G2", "G2"] * 2
    split = ["train"] * 4 + ["test"] * 4
    columns = {"scientific_name": species, "genus": genus, "split": split, "group": genus}
    return _batch({"image": rows_image, "text": rows_text}, columns)


def test_zero_shot_by_hand_with_ranks_and_restricted_candidates():
    batch = _taxa_table()
    result = zero_shot(batch, visible="image")
    direct = result["methods"]["direct"]
    assert result["candidates"] == 4 and result["rows"] == 4
    assert direct["scientific_name"] == {"top1": 0.75, "top5": 1.0}
    assert direct["genus"]["top1"] == 1.0  # the confused row is in the right genus
    restricted = zero_shot(batch, visible="image", candidates=["G1 a", "G1 b"])
    assert restricted["rows"] == 2 and restricted["rows_with_label_not_a_candidate"] == 2
    assert restricted["methods"]["direct"]["scientific_name"]["top1"] == 1.0
    with pytest.raises(Exception, match="G9 z"):
        zero_shot(batch, candidates=["G9 z"])


def test_linear_probe_matches_sklearn_and_names_missing_columns():
    rng = np.random.default_rng(0)
    n = 120
    labels = rng.integers(0, 3, n)
    loc = rng.standard_normal((n, 8)) + labels[:, None]
    split = np.where(np.arange(n) < 90, "train", "test")
    batch = _batch({"loc": loc}, {"biome": labels.astype(str).tolist(), "split": split.tolist()})
    result = linear_probe(batch, label="biome", features=("loc",))
    unit = loc / np.linalg.norm(loc, axis=1, keepdims=True)
    reference = make_pipeline(MinMaxScaler(), RidgeClassifierCV(alphas=(0.1, 1.0, 10.0)))
    reference.fit(unit[:90], labels[:90].astype(str))
    expected = np.mean(reference.predict(unit[90:]) == labels[90:].astype(str))
    assert result["accuracy"] == pytest.approx(expected)
    assert result["results"]["loc"]["n_test"] == 30
    with pytest.raises(TableFormatError, match="ecoregion"):
        linear_probe(batch, label="ecoregion")
    with pytest.raises(TableFormatError, match="'lat'"):
        linear_probe(batch, label="biome", split="spatial-block")


def test_probe_training_rows_are_capped_by_a_seeded_sample():
    rng = np.random.default_rng(2)
    n = 300
    labels = rng.integers(0, 3, n)
    loc = rng.standard_normal((n, 6)) + labels[:, None]
    split = np.where(np.arange(n) < 250, "train", "test")
    batch = _batch({"loc": loc}, {"y": labels.astype(str).tolist(), "split": split.tolist()})
    capped = linear_probe(batch, label="y", max_train_rows=40, seed=5)["results"]["loc"]
    assert capped["n_train"] == 40 and capped["n_train_available"] == 250
    assert capped["n_test"] == 50
    again = linear_probe(batch, label="y", max_train_rows=40, seed=5)["results"]["loc"]
    assert again["accuracy"] == capped["accuracy"]
    full = linear_probe(batch, label="y", max_train_rows=None)["results"]["loc"]
    assert full["n_train"] == 250


def test_probe_with_several_features_gives_fusion_and_concat():
    rng = np.random.default_rng(1)
    n = 80
    y = rng.integers(0, 2, n)
    emb = {m: rng.standard_normal((n, 4)) + y[:, None] for m in ("loc", "env")}
    batch = _batch(emb, {"y": y.astype(str).tolist(), "split": ["train"] * 60 + ["test"] * 20})
    result = linear_probe(batch, label="y", features=("loc", "env"))
    assert set(result["results"]) == {"fusion[loc+env]", "concat[loc+env]"}
    assert result["results"]["concat[loc+env]"]["n_features"] == 8
    assert result["results"]["fusion[loc+env]"]["n_features"] == 4


def test_spatial_block_split_keeps_cells_whole():
    rng = np.random.default_rng(0)
    lat = rng.uniform(-60, 60, 2000)
    lon = rng.uniform(-180, 180, 2000)
    split = spatial_block_split(lat, lon, block_deg=10, seed=3)
    cells = np.floor((lat + 90) / 10) * 1000 + np.floor((lon + 180) / 10)
    for cell in np.unique(cells):
        assert len(set(split[cells == cell])) == 1
    assert 0.1 < np.mean(split == "test") <= 0.2 + 1e-9
    assert np.array_equal(split, spatial_block_split(lat, lon, block_deg=10, seed=3))
    assert not np.array_equal(split, spatial_block_split(lat, lon, block_deg=10, seed=4))


def test_published_split_rejects_unknown_values():
    batch = _batch({"loc": np.ones((2, 3))}, {"split": ["train", "holdout"]})
    with pytest.raises(TableFormatError, match="holdout"):
        make_split(batch, "published")
    with pytest.raises(ValueError, match="spatial-block"):
        make_split(batch, "by-country")


def test_few_shot_nearest_centroid_by_hand():
    # Two classes on two axes; test rows sit clearly on their class's axis.
    train = np.array([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]])
    test = np.array([[1.0, 0.3], [0.3, 1.0], [1.0, 0.9]])  # the last is closer to class a
    emb = np.concatenate([train, test])
    y = ["a", "a", "b", "b", "a", "b", "b"]
    split = ["train"] * 4 + ["test"] * 3
    batch = _batch({"image": emb}, {"y": y, "split": split})
    result = few_shot(batch, label="y", shots=(1, 2), repeats=3, methods=("centroid",))
    two = result["results"]["image"]["2"]["centroid"]
    assert two["mean"] == pytest.approx(2 / 3) and two["std"] == 0.0 and two["runs"] == 3
    assert result["results"]["image"]["2"]["classes"] == 2
    again = few_shot(batch, label="y", shots=(1,), repeats=3, methods=("centroid",))
    assert again == few_shot(batch, label="y", shots=(1,), repeats=3, methods=("centroid",))


def test_gap_by_hand_and_separability():
    a = np.array([[1.0, 0.0], [1.0, 0.0]])
    b = np.array([[0.0, 1.0], [0.0, 1.0]])
    assert centroid_distances({"a": a, "b": b})["a|b"] == pytest.approx(np.sqrt(2))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8))
    apart = separability({"a": x + 3, "b": x - 3})
    same = separability({"a": x[:100], "b": x[100:]})
    assert apart == 1.0 and same < 0.7
    batch = _batch({"a": x + 3, "b": x - 3}, {"split": ["test"] * 200})
    result = modality_gap(batch)
    assert result["before"]["separability"] == 1.0 and "after" not in result


def test_compare_models_by_hand():
    batch = _taxa_table()
    other = _batch(
        {"image": batch.embeddings["text"], "text": batch.embeddings["text"]},
        {
            "scientific_name": ["G1 a", "G1 b", "G2 c", "G2 d"] * 2,
            "group": ["G1", "G1", "G2", "G2"] * 2,
        },
    )
    result = compare_models({"noisy": batch, "perfect": other}, group="group")
    assert result["rows"] == 8
    assert result["models"]["perfect"]["G1"] == {
        "mean_cosine": 1.0,
        "accuracy": 1.0,
        "candidates": 2,
    }
    assert result["models"]["noisy"]["G2"]["accuracy"] == 0.5  # both rows of species d err
    assert result["models"]["noisy"]["G1"]["accuracy"] == 1.0
    assert result["counts"]["G1"] == {
        "images": 4, "species": 2, "images_per_species": 2.0, "species_with_one_image": 0,
    }  # fmt: skip


def test_visible_subsets_cap_is_seeded():
    every = visible_subsets(4)
    assert [len(v) for v in every.values()] == [4, 6, 4, 1]
    capped = visible_subsets(4, max_sets_per_count=2, seed=5)
    assert [len(v) for v in capped.values()] == [2, 2, 2, 1]
    assert capped == visible_subsets(4, max_sets_per_count=2, seed=5)
