import copy
import json

import numpy as np
import pytest
import torch

from ecomodal.encoders.location import LocationEncoder
from ecomodal.io.grids import EmbeddingStore, GridStoreError
from ecomodal.maps import GridError, embed_grid, make_grid


def test_grid_cells_centres_and_land_mask(ca_grid):
    grid = ca_grid
    assert (grid.width, grid.height) == (11, 10)
    assert grid.bbox == (-125.0, 32.0, -114.0, 42.0)
    # Cell centres are half a cell inside the edges, ordered north to south, west to east.
    assert np.isclose(grid.lat.max(), 41.5) and np.isclose(grid.lat.min(), 32.5)
    assert np.all(np.diff(grid.cell_index) > 0)
    # Sacramento valley (38.5, -121.5) is land; the Pacific at (35.5, -124.5) is not in the grid.
    inland, sea = grid.cell_of([38.5, 35.5], [-121.5, -124.5])
    assert inland >= 0 and sea == -1
    assert np.isclose(grid.lat[inland], 38.5) and np.isclose(grid.lon[inland], -121.5)
    full = make_grid((-125.0, 32.0, -114.0, 42.0), resolution=1.0, land_only=False)
    assert full.num_cells == 110 > grid.num_cells > 50
    assert full.fingerprint != grid.fingerprint
    image = grid.to_image(np.arange(grid.num_cells, dtype=np.float32))
    assert image.shape == (10, 11) and image[3, 3] == inland and np.isnan(image[6, 0])


def test_global_grid_and_bad_definitions():
    grid = make_grid(resolution=10.0)
    assert (grid.width, grid.height) == (36, 18)
    assert 0.2 < grid.num_cells / (36 * 18) < 0.45  # land is about 30% of the globe's cells
    with pytest.raises(GridError, match="resolution"):
        make_grid(resolution=0)
    with pytest.raises(GridError, match="west < east"):
        make_grid((10, 0, -10, 5), resolution=1)
    pacific = (-140.0, 0.0, -130.0, 10.0)
    with pytest.raises(GridError, match="no land cells"):
        make_grid(pacific, resolution=1)
    assert make_grid(pacific, resolution=1, land_only=False).num_cells == 100


class _FailingAfter(LocationEncoder):
    """The real GeoCLIP encoder, killed (an exception) after ``budget`` calls: a killed pass."""

    def __init__(self, base, budget):
        super().__init__(base.model, base.info)
        self.budget = budget
        self.calls = 0

    def encode_rows(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.budget:
            raise KeyboardInterrupt("killed")
        return super().encode_rows(*args, **kwargs)


def test_embedding_pass_is_cached_and_resumes(tmp_path, ca_grid, loc_encoder):
    expected = loc_encoder.encode(lat=ca_grid.lat, lon=ca_grid.lon)
    killed = _FailingAfter(loc_encoder, budget=2)
    with pytest.raises(KeyboardInterrupt):
        embed_grid(
            ca_grid, modality="loc", encoder=killed, cache_dir=tmp_path, chunk_rows=16,
            show_progress=False,
        )  # fmt: skip
    (store_path,) = tmp_path.glob("loc-*.zarr")
    partial = EmbeddingStore.open(store_path)
    assert partial.missing_chunks == list(range(2, partial.num_chunks))
    with pytest.raises(GridStoreError, match="incomplete"):
        partial.check_complete()

    resumed = _FailingAfter(loc_encoder, budget=100)
    cells = embed_grid(
        ca_grid, modality="loc", encoder=resumed, cache_dir=tmp_path, chunk_rows=16,
        show_progress=False,
    )  # fmt: skip
    assert resumed.calls == partial.num_chunks - 2  # only the missing chunks were encoded
    np.testing.assert_allclose(cells.read(), expected, atol=1e-6)

    again = _FailingAfter(loc_encoder, budget=0)  # a cached pass does no encoding at all
    cached = embed_grid(ca_grid, modality="loc", encoder=again, cache_dir=tmp_path)
    assert again.calls == 0 and cached.path == cells.path
    key = json.loads((store_path / "zarr.json").read_text())["attributes"]["key"]
    assert key["grid_fingerprint"] == ca_grid.fingerprint and key["encoder"] == "geoclip"


def test_another_grid_or_encoder_gets_another_cache(tmp_path, ca_grid, env_encoder_16):
    first = embed_grid(ca_grid, modality="env", encoder=env_encoder_16, cache_dir=tmp_path)
    finer = make_grid((-125.0, 32.0, -114.0, 42.0), resolution=0.5)
    second = embed_grid(finer, modality="env", encoder=env_encoder_16, cache_dir=tmp_path)
    assert first.path != second.path and second.read().shape == (finer.num_cells, 16)
    changed = copy.deepcopy(env_encoder_16)
    with torch.no_grad():
        next(changed.model.parameters()).add_(0.1)  # other weights: never the old cache
    third = embed_grid(ca_grid, modality="env", encoder=changed, cache_dir=tmp_path)
    assert third.path != first.path
    assert not np.allclose(third.read(), first.read())
    with pytest.raises(ValueError, match="lat=/lon="):
        from ecomodal.encoders.base import StringEncoder

        class Text(StringEncoder):
            def tokenize(self, texts):
                return texts

        text = Text(env_encoder_16.model, env_encoder_16.info, tokenizer=None)
        embed_grid(ca_grid, modality="env", encoder=text, cache_dir=tmp_path)
    with pytest.raises(GridStoreError, match="caches"):
        EmbeddingStore.open_or_create(first.path, rows=3, dim=2, chunk_rows=1, key={"x": 1})


def test_land_mask_is_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("ECOMODAL_CACHE_DIR", str(tmp_path))
    first = make_grid((0.0, 40.0, 10.0, 50.0), resolution=0.5)
    (cached,) = (tmp_path / "grids").glob("land-*.npy")
    second = make_grid((0.0, 40.0, 10.0, 50.0), resolution=0.5)
    np.testing.assert_array_equal(first.mask, second.mask)
    assert first.fingerprint == second.fingerprint and 0 < first.num_cells < 400
    assert cached.stat().st_size == -(-400 // 8) + 128  # bit-packed .npy (128-byte header)
