"""`vpn-node-agent` answers --help and --version, and refuses what it cannot do yet."""

from __future__ import annotations

import pytest

from node_agent import __version__
from node_agent.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"vpn-node-agent {__version__}"


def test_help_tells_the_truth(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "not implemented yet" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["run"], ["enroll", "--token", "x"]])
def test_anything_else_is_a_usage_error(argv: list[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    assert code == 2
