"""The real-data quickstart, reduced: EcoBench-lite with 2,000 places, a few epochs, a 5-degree grid."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio


@pytest.mark.slow
def test_reduced_quickstart_writes_report_metrics_and_maps(reduced_quickstart):
    out, output = reduced_quickstart
    assert "report:" in output and "metrics:" in output
    assert f"ecomodal serve {out}" in output

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 6  # probes, 2 retrieval maps, sigma, 2 maps
    payload = json.loads((out / "metrics.json").read_text())
    metrics = payload["metrics"]
    assert payload["seed"] == 0 and payload["config"]["n"] == 2000
    summary = metrics["summary"]

    for label, scores in metrics["evaluation"]["probes"].items():
        assert set(scores) >= {"loc", "env", "sat"}, label
        assert all(0.0 < value <= 1.0 for value in scores.values()), (label, scores)
    pairs = summary["retrieval_pairs"]
    assert len(pairs) == 6
    for values in pairs.values():
        assert 0.0 < values["direct_mrr"] <= 1.0 and 0.0 < values["mixed_mrr"] <= 1.0
        assert 0.0 <= values["delta"] <= 1.0
    sigma = summary["mean_sigma_l1_by_visible_count"]
    assert set(sigma) == {"1", "2", "3"}
    assert all(math.isfinite(v) and v > 0 for v in sigma.values())

    for modality, held in metrics["binding"].items():
        # Bound encoders retrieve their loc partner far above chance, untrained ones do not.
        assert held["R@10"] > 3 * held["chance_R@10"], (modality, held)
        assert held["R@10"] > held["untrained"]["R@10"], (modality, held)

    judged = {n: e for n, e in metrics["maps"].items() if n.startswith("suitability-")}
    assert judged, "no land-cover suitability map was drawn"
    for name, entry in judged.items():
        assert name == "suitability-" + entry["class"].replace(" ", "-")
        truth = entry["against_modis"]
        assert 0.5 < truth["auc"] <= 1.0 and set(truth["baselines"]) == {
            "covariate-logistic",
            "covariate-maxent",
        }
        with rasterio.open(entry["geotiff"]) as source:
            assert source.tags()["class"] == entry["class"]
    for name in [*judged, "uncertainty"]:
        entry = metrics["maps"][name]
        assert (out / "maps" / f"{name}.png").is_file()
        with rasterio.open(entry["geotiff"]) as source:
            assert source.crs.to_epsg() == 4326
            assert source.res == (5.0, 5.0)
            values = source.read(1)
            finite = values[np.isfinite(values)]
            assert finite.size == entry["cells"] > 100
            assert source.tags().get("title")
    uncertainty = metrics["maps"]["uncertainty"]
    assert 0 < uncertainty["min"] <= uncertainty["max"]
