"""What the command line prints when something goes wrong: one line, never a traceback."""

from __future__ import annotations

import pytest

from ecomodal.cli import main


def _run(monkeypatch, capsys, *args, debug=False):
    monkeypatch.setattr("sys.argv", ["ecomodal", *args])
    if debug:
        monkeypatch.setenv("ECOMODAL_DEBUG", "1")
    else:
        monkeypatch.delenv("ECOMODAL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err + captured.out


def test_file_system_refusal_is_one_line_and_status_2(tmp_path, run_cli):
    folder = tmp_path / "taken.parquet"
    folder.mkdir()
    run_cli("data", "synthetic", "--n", "20", "--out", folder).assert_clear_failure()
    assert run_cli.files_under(tmp_path) == []


def test_debug_variable_shows_the_traceback(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "taken.parquet"
    folder.mkdir()
    monkeypatch.setattr(
        "sys.argv", ["ecomodal", "data", "synthetic", "--n", "20", "--out", str(folder)]
    )
    monkeypatch.setenv("ECOMODAL_DEBUG", "1")
    with pytest.raises(OSError):
        main()


def test_a_bug_is_named_internal_with_status_1(monkeypatch, capsys):
    import ecomodal.cli as cli

    def broken(**kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "app", broken)
    code, err = _run(monkeypatch, capsys, "anything")
    assert code == 1
    assert err.startswith("internal error: ZeroDivisionError: division by zero")
    assert "ECOMODAL_DEBUG=1" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["complete", "--batch-size", "abc", "--model", "m", "--data", "d", "--out", "o"],
            "Invalid value for '--batch-size'",
        ),
        (["complete", "--model", "m"], "Missing option"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["eval", "bogus", "--data", "d", "--out", "o"], "Unknown task 'bogus'"),
    ],
)
def test_usage_errors_are_one_line_naming_the_command(monkeypatch, capsys, args, expected):
    code, err = _run(monkeypatch, capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ecomodal") and expected in lines[0]
    assert "--help'" in lines[0] and "Traceback" not in err


def test_bare_group_prints_its_help(monkeypatch, capsys):
    code, err = _run(monkeypatch, capsys, "train")
    assert code == 2 and "Usage:" in err and "prom3e" in err
