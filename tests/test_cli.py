"""The console-script entry point: every usage mistake is one line and a non-zero exit."""

from pathlib import Path

import pytest
from mnistpack.cli import main
from mnistpack.constants import MAX_DECODED_VALUES
from mnistpack.train import MAX_HIDDEN


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["build"], "Missing option '--quant'"),
        (["build", "--quant"], "Option '--quant' requires an argument"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["build", "--quant", "int8", "--bogus"], "No such option: --bogus"),
        (["train", "--seed", "-1"], "Invalid value for '--seed': Input should be greater than or equal to 0"),
        (["train", "--seed", str(2**32)], "'--seed': Input should be less than or equal to 4294967295"),
        (
            ["train", "--hidden", str(MAX_HIDDEN + 1)],
            f"'--hidden': Input should be less than or equal to {MAX_HIDDEN}",
        ),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1, err
    assert err.startswith("error: ") and expected in err, err


def test_library_errors_are_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--quant", "int3"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err == "error: unknown precision 'int3': choose one of float32, float16, int8, int4.\n"


def test_version_and_bare_command_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--version"], []):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "mnistpack 0.1.0" in out and "Usage: mnistpack" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["build", "--quant", "int8", "--out", ""],
        ["compare", "--out", ""],
        ["train", "--out", " "],
        ["pixel-counts", "--out", ""],
        ["build", "--quant", "int8", "--data", ""],
    ],
)
def test_an_empty_path_is_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.count("\n") == 1 and "needs a path, not an empty string" in err, err


def test_compare_checks_its_output_folder_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "report"
    blocker.write_text("a file where the report folder goes")
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--out", str(blocker), "--data", str(tmp_path / "no-data")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    # the folder, not the missing data (which compare would reach first otherwise)
    assert err.startswith("error: cannot write to the output folder"), err


def test_hidden_sizes_train_accepts_build_packs() -> None:
    # the largest network train makes fits FORMAT.md's limit; one unit more would not
    values = lambda hidden: hidden * (784 + 1) + 10 * hidden + 10  # noqa: E731
    assert values(MAX_HIDDEN) <= MAX_DECODED_VALUES < values(MAX_HIDDEN + 1)
