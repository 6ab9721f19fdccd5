"""`ecomodal complete` and its Python API on bad input: one clear error, nothing written.

Every case of issue 14 for `complete`: values whose norm overflows (or underflows) float32, a
modality column of the wrong type, metadata that contradicts the file, bad numeric options,
precision and device, output paths that cannot be written, broken checkpoints and model paths.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file

from ecomodal.devices import resolve_device
from ecomodal.errors import (
    CheckpointError,
    EcomodalError,
    InvalidArgumentError,
    InvalidEmbeddingsError,
    ModelNotFoundError,
    OutputPathError,
    TableFormatError,
)
from ecomodal.inference import complete_table
from ecomodal.io.atomic import atomic_path, check_output_path
from ecomodal.io.tables import read_embeddings, write_embeddings
from ecomodal.models.factory import load_model
from ecomodal.models.prom3e import ProM3E

DIM = 8
ROWS = 10
TINY = {"input_dim": DIM, "embed_dim": 16, "heads": 2, "mlp_dim": 32}


def _ids():
    return [f"r{i}" for i in range(ROWS)]


def _vectors(seed=0):
    rng = np.random.default_rng(seed)
    return {m: rng.normal(size=(ROWS, DIM)).astype(np.float32) for m in ("image", "loc")}


def _with_metadata_dim(source, target, dim):
    table = pq.read_table(source)
    meta = json.loads(table.schema.metadata[b"ecomodal"])
    meta["embeddings"]["image"]["dim"] = dim
    pq.write_table(table.replace_schema_metadata({b"ecomodal": json.dumps(meta).encode()}), target)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny saved ProM3E, a good table and one bad table or checkpoint per case."""
    root = tmp_path_factory.mktemp("complete-errors")
    torch.manual_seed(0)
    model = ProM3E(**TINY).save_pretrained(root / "model")
    vectors = _vectors()
    ok = write_embeddings(root / "ok.parquet", ids=_ids(), embeddings=vectors)
    paths = {"root": root, "model": model, "ok": ok}
    for name, value in (("huge", 1e30), ("max", 3e38), ("tiny", 1e-30)):
        image = vectors["image"].copy()
        image[3] = value
        paths[name] = write_embeddings(
            root / f"{name}.parquet", ids=_ids(), embeddings={**vectors, "image": image}
        )
    integers = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(ROWS * DIM)), DIM)
    loc = pa.FixedSizeListArray.from_arrays(pa.array(vectors["loc"].ravel()), DIM)
    paths["int"] = root / "int.parquet"
    pq.write_table(pa.table({"id": _ids(), "image": integers, "loc": loc}), paths["int"])
    paths["meta512"] = root / "meta512.parquet"
    _with_metadata_dim(ok, paths["meta512"], 512)
    paths["metatext"] = root / "metatext.parquet"
    _with_metadata_dim(ok, paths["metatext"], "sixty-four")
    varlist = pa.array(vectors["image"].tolist(), type=pa.list_(pa.float32()))
    paths["varlist"] = root / "varlist.parquet"
    meta = {"format_version": 1, "embeddings": {"image": {"dim": 512, "encoder": None}}}
    pq.write_table(
        pa.table({"id": _ids(), "image": varlist}).replace_schema_metadata(
            {b"ecomodal": json.dumps(meta)}
        ),
        paths["varlist"],
    )
    nan = vectors["loc"].copy()
    nan[4, 2] = np.nan
    paths["nan"] = root / "nan.parquet"
    table = pq.read_table(ok)
    column = pa.FixedSizeListArray.from_arrays(pa.array(nan.ravel()), DIM)
    pq.write_table(
        table.set_column(table.schema.get_field_index("loc"), "loc", column), paths["nan"]
    )
    paths["done"] = root / "done.parquet"
    complete_table(model, ok, paths["done"], n_samples=0, show_progress=False)
    paths["words"] = root / "words"
    paths["words"].mkdir()
    (paths["words"] / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
    config = json.loads((model / "config.json").read_text())
    (paths["words"] / "config.json").write_text(json.dumps({**config, "embed_dim": "sixty-four"}))
    paths["nanweights"] = root / "nanweights"
    paths["nanweights"].mkdir()
    (paths["nanweights"] / "config.json").write_text((model / "config.json").read_text())
    tensors = load_file(model / "model.safetensors")
    tensors["decoders.0.net.1.bias"][2] = float("nan")
    save_file(tensors, paths["nanweights"] / "model.safetensors")
    paths["afile"] = root / "afile.txt"
    paths["afile"].write_text("not a folder")
    return paths


GPU = torch.cuda.is_available()

# (case, arguments after `complete`, texts the one error line must hold)
BAD_INPUTS = [
    ("norm-overflow-1e30", ["--data", "{huge}"], ["huge.parquet", "'image'", "row 3", "'r3'"]),
    ("norm-overflow-3e38", ["--data", "{max}"], ["max.parquet", "row 3", "overflows float32"]),
    ("norm-underflow", ["--data", "{tiny}"], ["tiny.parquet", "row 3", "too small to normalise"]),
    ("int64-image-column", ["--data", "{int}"], ["'image'", "int64", "fixed_size_list<float32>"]),
    ("metadata-dim-512", ["--data", "{meta512}"], ["dimension 8", "metadata says 512"]),
    ("metadata-dim-text", ["--data", "{metatext}"], ["'image'", "'sixty-four'", "whole number"]),
    ("metadata-dim-list", ["--data", "{varlist}"], ["'image'", "row 0", "expected 512"]),
    ("nan-in-table", ["--data", "{nan}"], ["nan.parquet", "'loc'", "row 4", "NaN"]),
    ("already-completed", ["--data", "{done}"], ["image_hat", "sigma_l1", "already has"]),
    ("batch-size-0", ["--batch-size", "0"], ["--batch-size must be >= 1; got 0."]),
    ("batch-size-negative", ["--batch-size", "-5"], ["--batch-size must be >= 1; got -5."]),
    ("n-samples-negative", ["--n-samples", "-1"], ["--n-samples must be >= 0; got -1."]),
    ("precision-fp8", ["--precision", "fp8"], ["'fp8'", "fp32, bf16"]),
    ("device-bogus", ["--device", "bogus"], ["'bogus'", "cpu, cuda"]),
    ("device-cuda-without-gpu", ["--device", "cuda"], ["'cuda'", "no usable CUDA GPU"]),
    ("device-cuda-index", ["--device", "cuda:64"], ["'cuda:64'"]),
    ("out-under-a-file", ["--out", "{afile}/x.parquet"], ["afile.txt/x.parquet", "is a file"]),
    ("out-is-a-folder", ["--out", "{out}"], ["{out}", "existing folder"]),
    ("config-embed-dim-words", ["--model", "{words}"], ["words/config.json", "'embed_dim'"]),
    ("nan-weights", ["--model", "{nanweights}"], ["model.safetensors", "decoders.0.net.1.bias"]),
    ("model-is-a-file", ["--model", "{afile}"], ["afile.txt is a file", "expected a folder"]),
    ("model-missing", ["--model", "{root}/nowhere"], ["nowhere does not exist"]),
    ("visible-unknown", ["--visible", "satellite"], ["Unknown modality 'satellite'"]),
    ("visible-lacking", ["--visible", "sat"], ["not columns of the table", "sat"]),
]


NEEDS_NO_GPU = pytest.mark.skipif(GPU, reason="this machine has a GPU")


@pytest.mark.parametrize(
    ("case", "args", "expected"),
    [
        pytest.param(*case, id=case[0], marks=[NEEDS_NO_GPU] if "without-gpu" in case[0] else [])
        for case in BAD_INPUTS
    ],
)
def test_bad_input_is_one_clear_line_and_leaves_nothing(
    inputs, tmp_path, run_cli, case, args, expected
):
    out_dir = tmp_path / "results"
    out_dir.mkdir()
    places = {k: str(v) for k, v in inputs.items()}
    places["out"] = str(out_dir / "completed.parquet")
    if case == "out-is-a-folder":
        (out_dir / "completed.parquet").mkdir()
    given = {"--model": "{model}", "--data": "{ok}", "--out": "{out}"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        given[flag] = value
    argv = [x for pair in given.items() for x in pair]
    result = run_cli("complete", "--no-progress", *[a.format(**places) for a in argv])
    result.assert_clear_failure(*[text.format(**places) for text in expected])
    assert run_cli.files_under(out_dir) == []
    assert run_cli.files_under(inputs["root"] / "model") == ["config.json", "model.safetensors"]


def test_good_input_still_completes(inputs, tmp_path, run_cli):
    out = tmp_path / "deep" / "er" / "completed.parquet"
    result = run_cli(
        "complete",
        "--no-progress",
        "--model",
        inputs["model"],
        "--data",
        inputs["ok"],
        "--out",
        out,
    )
    assert result.code == 0, result.output
    assert "wrote 10 rows" in result.output
    assert read_embeddings(out).load().present["image_hat"].all()


# ------------------------------------------------------------------------------ the Python API


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1; got 0."),
        ({"batch_size": 2.5}, "batch_size must be a whole number; got 2.5."),
        ({"n_samples": -1}, "n_samples must be >= 0; got -1."),
        ({"seed": 0.5}, "seed must be a whole number"),
        ({"precision": "fp8"}, "Unknown precision 'fp8'"),
        ({"device": "bogus"}, "Unknown device 'bogus'"),
    ],
)
def test_api_arguments_are_checked_before_any_work(inputs, tmp_path, kwargs, expected):
    out = tmp_path / "out.parquet"
    with pytest.raises(InvalidArgumentError) as info:
        complete_table(inputs["model"], inputs["ok"], out, show_progress=False, **kwargs)
    assert expected in str(info.value)
    model = load_model(inputs["model"])
    batch = read_embeddings(inputs["ok"]).load()
    with pytest.raises(InvalidArgumentError) as info:
        model.complete(batch, **kwargs)
    assert expected in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_api_norm_check_names_row_id_and_column(inputs):
    model = load_model(inputs["model"])
    batch = read_embeddings(inputs["huge"]).load()
    with pytest.raises(
        InvalidEmbeddingsError, match=r"column 'image', row 3 \(id 'r3'\).*overflows"
    ):
        model.complete(batch)
    # not visible: not used, so not an error; the rest of the rows are unaffected
    out = model.complete(batch, visible=["loc"], n_samples=0)
    assert np.isfinite(out.embeddings).all()
    stacked, present = batch.stack(model.modalities, dim=DIM)
    with pytest.raises(InvalidEmbeddingsError, match=r"embeddings: column 'image', row 3 has"):
        model.complete(stacked, present=present)


def test_valid_inputs_give_the_same_numbers_as_before(inputs):
    """The checks add no numeric change: complete_table equals model.complete on the rows."""
    model = load_model(inputs["model"])
    batch = read_embeddings(inputs["ok"]).load()
    direct = model.complete(batch, n_samples=0)
    big = batch.embeddings["image"] * np.float32(1e17)  # large but normalisable: same direction
    scaled = model.complete(
        type(batch)(batch.ids, {**batch.embeddings, "image": big}, batch.present), n_samples=0
    )
    np.testing.assert_allclose(scaled.embeddings, direct.embeddings, atol=1e-5)


def test_output_path_checks(tmp_path):
    folder = tmp_path / "taken.parquet"
    folder.mkdir()
    with pytest.raises(OutputPathError, match=r"taken.parquet is an existing folder") as info:
        check_output_path(folder)
    assert isinstance(info.value, OSError) and isinstance(info.value, EcomodalError)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match=r"file is a file, not a folder"):
        check_output_path(blocker / "a" / "b.parquet")
    # the atomic writer names the output, never its temporary file
    with (
        pytest.raises(OutputPathError, match="taken.parquet is an existing folder") as info,
        atomic_path(folder),
    ):
        pass
    assert ".tmp" not in str(info.value)
    assert check_output_path(tmp_path / "new" / "x.parquet") == tmp_path / "new" / "x.parquet"
    assert not (tmp_path / "new").exists()


def test_read_only_folder_is_refused_before_work(tmp_path, monkeypatch):
    import ecomodal.io.atomic as atomic

    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = atomic.os.access
    monkeypatch.setattr(
        atomic.os,
        "access",
        lambda p, mode: False if str(p) == str(folder) else real_access(p, mode),
    )
    with pytest.raises(OutputPathError, match=r"folder .*ro is read-only"):
        check_output_path(folder / "out.parquet")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("embed_dim", "sixty-four", "'embed_dim' must be a whole number >= 1; got 'sixty-four'"),
        ("depth", 0, "'depth' must be a whole number >= 1; got 0"),
        ("heads", True, "'heads' must be a whole number"),
        ("dropout", "0.1", "'dropout' must be a number in [0, 1)"),
        ("dropout", 1.5, "'dropout' must be a finite number in [0, 1)"),
        ("masked_only", "no", "'masked_only' must be true or false"),
        ("modalities", "image", "'modalities' must be a list of modality names"),
        ("input_dim", 8.5, "'input_dim' must be a whole number"),
    ],
)
def test_checkpoint_config_errors_name_file_and_key(inputs, tmp_path, key, value, expected):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    config = json.loads((inputs["model"] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: value}))
    weights = (inputs["model"] / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights)
    with pytest.raises(CheckpointError) as info:
        load_model(folder)
    assert str(folder / "config.json") in str(info.value) and expected in str(info.value)


def test_nan_weights_are_a_checkpoint_error(inputs):
    with pytest.raises(CheckpointError, match=r"tensor 'decoders.0.net.1.bias' has 1 NaN"):
        load_model(inputs["nanweights"])


def test_model_spec_that_is_a_file(inputs):
    with pytest.raises(ModelNotFoundError, match="is a file; expected a folder"):
        load_model(inputs["afile"])
    with pytest.raises(ModelNotFoundError, match="pass its folder"):
        load_model(inputs["model"] / "model.safetensors")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InvalidArgumentError, match="Unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgumentError, match="no usable CUDA GPU"):
            resolve_device("cuda:0")


def test_modality_named_column_of_wrong_type_is_never_carried(inputs, tmp_path):
    with pytest.raises(TableFormatError, match=r"'image' is named like a modality.*int64"):
        read_embeddings(inputs["int"])
    strings = tmp_path / "strings.parquet"
    pq.write_table(pa.table({"id": ["a"], "sat": ["tile.png"], "x": [[1.0, 2.0]]}), strings)
    with pytest.raises(TableFormatError, match=r"'sat' is named like a modality.*type string"):
        read_embeddings(strings)
    # float64 lists convert to float32, as for any foreign table
    doubles = tmp_path / "doubles.parquet"
    values = np.random.default_rng(0).normal(size=(3, 4))
    pq.write_table(pa.table({"id": ["a", "b", "c"], "image": values.tolist()}), doubles)
    loaded = read_embeddings(doubles).load()
    np.testing.assert_array_equal(loaded.embeddings["image"], values.astype(np.float32))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("taken.parquet", ["taken.parquet is an existing folder"]),
        ("afile/x.parquet", ["afile/x.parquet cannot be written", "afile is a file"]),
    ],
)
def test_data_commands_name_the_output_not_a_temporary_file(tmp_path, run_cli, target, expected):
    (tmp_path / "taken.parquet").mkdir()
    (tmp_path / "afile").write_text("x")
    out = tmp_path / target
    result = run_cli("data", "synthetic", "--n", "20", "--out", out)
    result.assert_clear_failure(*expected)
    assert ".tmp" not in result.output
    assert run_cli.files_under(tmp_path) == ["afile"]
