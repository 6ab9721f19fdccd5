"""The shared option parser, the deprecated-keyword shim and the precision vocabulary."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from ecomodal.deprecation import renamed_arguments
from ecomodal.errors import EcomodalError, InvalidArgumentError, OptionFormatError
from ecomodal.options import parse_key_values, parse_linspace, parse_list, parse_numbers
from ecomodal.precision import lightning_precision, normalise_precision


def test_parse_list_strips_and_drops_empty_parts():
    assert parse_list(" a, b,,c ") == ["a", "b", "c"]
    assert parse_list(["x ", " y"]) == ["x", "y"]
    assert parse_list(None) == []


def test_parse_key_values_keeps_order_and_names_the_option():
    assert parse_key_values(["b=2", " a = 1 "], option="--x") == {"b": "2", "a": "1"}
    assert parse_key_values({"k": 1}, option="--x") == {"k": "1"}
    assert parse_key_values("m=local-dir:/a=b", option="--x") == {"m": "local-dir:/a=b"}
    with pytest.raises(OptionFormatError, match=r"--encoder expects MODALITY=SPEC; got 'loc'"):
        parse_key_values(["loc"], option="--encoder", key="MODALITY", value="SPEC")
    with pytest.raises(OptionFormatError, match="got '=x'"):
        parse_key_values(["=x"], option="--x")
    bare = parse_key_values(
        ["a.parquet", "b=c.parquet"], option="--data", allow_bare=lambda t: (t, t)
    )
    assert bare == {"a.parquet": "a.parquet", "b": "c.parquet"}


def test_parse_numbers_and_linspace():
    assert parse_numbers("1, 5,10", int, option="--shots") == [1, 5, 10]
    assert parse_numbers([0.5, "1"], float, option="--x") == [0.5, 1.0]
    with pytest.raises(OptionFormatError, match="--shots expects comma-separated numbers"):
        parse_numbers("1,five", int, option="--shots")
    assert parse_linspace("0:1:10", option="--alphas") == np.linspace(0, 1, 10).tolist()
    assert parse_linspace("2:3:1", option="--alphas") == [2.0]
    for bad in ("0:1", "0:1:0", "a:1:3", "0:1:3:4"):
        with pytest.raises(OptionFormatError, match="--alphas"):
            parse_linspace(bad, option="--alphas")
    assert issubclass(OptionFormatError, EcomodalError) and issubclass(
        OptionFormatError, ValueError
    )


def test_renamed_arguments_warns_and_forwards():
    @renamed_arguments(table="data")
    def evaluate(data, *, seed=0):
        return data, seed

    with pytest.warns(DeprecationWarning, match=r"evaluate\(table=...\) is deprecated; use data="):
        assert evaluate(table="t.parquet", seed=2) == ("t.parquet", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert evaluate("u.parquet") == ("u.parquet", 0)
    with pytest.raises(InvalidArgumentError, match="both table= and data="):
        evaluate(table="a", data="b")


def test_one_precision_vocabulary():
    assert normalise_precision("bf16") == "bf16" and lightning_precision("fp32") == "32-true"
    with pytest.warns(DeprecationWarning, match="'bf16-mixed' is deprecated; use 'bf16'"):
        assert lightning_precision("bf16-mixed") == "bf16-mixed"
    with pytest.raises(InvalidArgumentError, match="Unknown precision 'fp8'"):
        normalise_precision("fp8")


def test_old_keyword_names_are_kept_on_the_public_api():
    from ecomodal.eval import evaluate, few_shot, linear_probe, retrieval, uncertainty, zero_shot
    from ecomodal.training.bind import train_bind
    from ecomodal.training.cluster import cluster_sweep
    from ecomodal.training.prom3e import train_prom3e

    for function in (train_prom3e, train_bind, cluster_sweep):
        assert function.__renamed_arguments__ == {"progress": "show_progress"}
    for function in (evaluate, few_shot, linear_probe, retrieval, uncertainty, zero_shot):
        assert function.__renamed_arguments__ == {"table": "data"}


def test_map_band_lookup_error_is_ecomodal_and_key_error():
    from ecomodal.errors import UnknownBandError
    from ecomodal.maps import make_grid
    from ecomodal.maps.output import GridMap

    grid_map = GridMap(
        make_grid((0, 0, 2, 2), resolution=1.0, land_only=False), [[1, 2, 3, 4]], ["a"]
    )
    with pytest.raises(KeyError) as info:
        grid_map.band("b")
    assert isinstance(info.value, UnknownBandError)
    assert str(info.value) == "The map has no band 'b'; it has ['a']."


def test_check_range_says_what_was_expected_and_received():
    from ecomodal.options import check_range

    assert check_range(3, "--batch-size", minimum=1, integer=True) == 3
    assert check_range(0.5, "--dropout", minimum=0, maximum=1, exclusive_maximum=True) == 0.5
    cases = [
        ((0, "--batch-size"), {"minimum": 1, "integer": True}, "--batch-size must be >= 1; got 0."),
        (
            (1.5, "--dropout"),
            {"minimum": 0, "maximum": 1, "exclusive_maximum": True},
            "--dropout must be >= 0 and < 1; got 1.5.",
        ),
        (
            (float("nan"), "--lr"),
            {"minimum": 0, "exclusive_minimum": True},
            "--lr must be a finite number; got nan.",
        ),
        ((2.5, "--epochs"), {"minimum": 1, "integer": True}, "--epochs must be a whole number"),
        ((True, "--n"), {"integer": True}, "--n must be a whole number; got True."),
        (("3", "--k"), {}, "--k must be a number; got '3'."),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(InvalidArgumentError) as info:
            check_range(*args, **kwargs)
        assert str(info.value).startswith(message), (str(info.value), message)
