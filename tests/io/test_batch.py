"""EmbeddingBatch's helpers, as_batch, and the old import path of the table API."""

import numpy as np
import pytest

from ecomodal.errors import InvalidEmbeddingsError, TableFormatError, UnknownModalityError
from ecomodal.io.batch import EmbeddingBatch
from ecomodal.io.reader import EmbeddingTable, as_batch, read_embeddings
from ecomodal.io.validate import BatchOrigin
from ecomodal.io.writer import EmbeddingTableWriter, write_embeddings


def _batch():
    return EmbeddingBatch.from_stacked(
        ids=["a", "b", "c"],
        embeddings=np.array(
            [[[3.0, 4.0], [0.0, 2.0]], [[1.0, 0.0], [0.0, 0.0]], [[0.0, 5.0], [1.0, 1.0]]]
        ),
        present=np.array([[True, True], [True, False], [True, True]]),
        modalities=["image", "text"],
        columns={"species": ["x", "y", "x"]},
    )


def test_column_modality_has_all_and_their_errors():
    batch = _batch()
    assert batch.column("species").tolist() == ["x", "y", "x"]
    np.testing.assert_array_equal(batch.modality("text"), batch.embeddings["text"])
    assert batch.has_all(["image"]).tolist() == [True, True, True]
    assert batch.has_all(["image", "text"]).tolist() == [True, False, True]
    with pytest.raises(TableFormatError, match="no column 'genus'; extra columns: species"):
        batch.column("genus")
    with pytest.raises(UnknownModalityError, match="no embedding column 'sat'; available"):
        batch.has_all(["sat"])


def test_fuse_is_the_normalised_sum_of_normalised_embeddings():
    fused = _batch().fuse(["image", "text"])
    expected = np.array([[0.6, 1.8], [1.0, 0.0], [np.sqrt(0.5), 1 + np.sqrt(0.5)]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(fused, expected, rtol=1e-6)
    assert fused.dtype == np.float32


def test_as_batch_takes_a_path_a_table_or_a_batch(tmp_path):
    batch = _batch()
    path = write_embeddings(tmp_path / "t.parquet", batch)
    assert as_batch(batch) is batch
    for data in (path, str(path), read_embeddings(path)):
        loaded = as_batch(data)
        assert list(loaded.ids) == ["a", "b", "c"]
        np.testing.assert_array_equal(loaded.present["text"], batch.present["text"])
    assert isinstance(read_embeddings(path), EmbeddingTable)


def test_writer_messages_name_the_origin(tmp_path):
    batch = _batch()
    batch.embeddings["image"][2, 0] = np.nan
    with (
        pytest.raises(InvalidEmbeddingsError, match=r"src.parquet: column img, row 12 \(id 'c'\)"),
        EmbeddingTableWriter(tmp_path / "o.parquet", batch.dims) as writer,
    ):
        writer.write(batch, origin=BatchOrigin("src.parquet", 10, {"image": "img"}))
    assert not (tmp_path / "o.parquet").exists()


def test_the_old_import_path_keeps_every_name():
    import ecomodal
    from ecomodal.data.multinat import import_multinat
    from ecomodal.io import tables

    assert tables.EmbeddingBatch is EmbeddingBatch
    assert tables.write_embeddings is write_embeddings is ecomodal.write_embeddings
    assert tables.import_multinat is import_multinat is ecomodal.import_multinat
    for name in tables.__all__:
        assert getattr(tables, name) is not None
