"""Command-line options are checked as their params.yaml twins are, before anything loads or is written."""
import pytest

from mdgen.cli import main
from tests.conftest import write_params


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """(exit code, stderr) of `mdgen <argv>` run in this process."""
    rc = main(list(argv))
    return rc, capsys.readouterr().err.strip()


@pytest.mark.parametrize("option,value,expect", [
    ("--cfg-scale", "nan", "--cfg-scale = nan: expected a number in [0.0, inf)"),  # sampled all-black images
    ("--cfg-scale", "-5", "--cfg-scale = -5.0: expected a number in [0.0, inf)"),
    ("--cfg-scale", "inf", "--cfg-scale = inf: expected a number in [0.0, inf)"),
    ("--steps", "0", "--steps = 0: expected an integer in [1, 10000]"),
    ("--seed", "-1", "--seed = -1: expected an integer in [0, 4294967295]"),
    ("--seed", "4294967296", "--seed = 4294967296: expected an integer in [0, 4294967295]"),  # numpy: 32 bits
    ("--n", "0", "--n = 0: expected an integer in [1, inf)"),
])
def test_generate_options_are_checked_like_their_params_twins(tmp_path, capsys, option, value, expect):
    rc, err = run_cli(capsys, "generate", "--user", "ID_1", "--params", str(tmp_path / "none.yaml"),
                      "--out", str(tmp_path / "gen"), option, value)
    assert rc == 1 and err == f"mdgen generate: error: {expect}"  # one line, before params.yaml is even read
    assert not (tmp_path / "gen").exists()


def test_generate_refuses_a_file_as_output_folder_before_loading_a_model(tmp_path, capsys):
    params = write_params(tmp_path / "params.yaml", {})
    (tmp_path / "afile").write_text("mine")
    # no model there: the output path is refused first
    for out in ("afile", "afile/sub"):
        rc, err = run_cli(capsys, "generate", "--user", "ID_1", "--params", str(params),
                          "--model-dir", str(tmp_path / "no_model"), "--out", str(tmp_path / out))
        assert rc == 1 and "\n" not in err
        assert f"{tmp_path / 'afile'} is an existing file" in err
    assert (tmp_path / "afile").read_text() == "mine"
