"""A small ProM3E trained once on the synthetic benchmark, shared by the evaluation tests."""

import pytest

from ecomodal.data.synthetic import SyntheticConfig, make_synthetic, to_batch
from ecomodal.io.tables import write_embeddings
from ecomodal.models import load_model
from ecomodal.training.prom3e import train_prom3e

SMALL = {"embed_dim": 64, "heads": 4, "mlp_dim": 128, "dropout": 0.1}


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory):
    """(table path, trained model, model folder): 1,500 observations of 30 species, 64-d."""
    root = tmp_path_factory.mktemp("eval-synthetic")
    table = root / "synthetic.parquet"
    data = make_synthetic(1500, config=SyntheticConfig(n_species=30, dim=64), seed=0)
    write_embeddings(table, to_batch(data))
    result = train_prom3e(
        table,
        root / "run",
        epochs=10,
        batch_size=128,
        lr=1e-3,
        t0=10,
        seed=0,
        model_config=SMALL,
        visible_counts=(1, 2, 3, 4, 5),
        visible_probs=(0.2, 0.2, 0.2, 0.2, 0.2),
        show_progress=False,
    )
    return table, load_model(result.best_dir), result.best_dir
