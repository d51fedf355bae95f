"""The console-script entry point: every usage mistake is one line and a non-zero exit."""

import pytest
from mnistpack.cli import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["build"], "Missing option '--quant'"),
        (["build", "--quant"], "Option '--quant' requires an argument"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["build", "--quant", "int8", "--bogus"], "No such option: --bogus"),
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
