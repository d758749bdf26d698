import re
import subprocess
import sys

import pytest

from mdgen import params
from mdgen.params import ParamsError
from tests.conftest import REPO


def test_repo_params_are_valid():
    flat = params.load_params(REPO / "params.yaml")
    assert set(flat) == set(params.SCHEMA)


@pytest.mark.parametrize("key,value,expect", [
    ("split.val_fraction", 1.0, r"split.val_fraction = 1.0: expected a number in \(0.0, 1.0\)"),
    ("split.val_fraction", "0.2", r"expected a number"),
    ("split.mode", "kfold", r"split.mode = 'kfold': expected one of blocks \| random"),
    ("simulate.users", True, r"simulate.users = True: expected an integer"),
    ("seed", -1, r"seed = -1"),
])
def test_bad_values_name_key_and_expectation(key, value, expect):
    with pytest.raises(ParamsError, match=expect):
        params.validate(key, value)


def test_image_axes_need_two_edges(tmp_path):
    """data.axes: the evaluate stage's axes for a user's own images; equal edges cannot place any row."""
    p = tmp_path / "params.yaml"
    p.write_text((REPO / "params.yaml").read_text().replace("v_bottom_mps: -0.7", "v_bottom_mps: 4.6"))
    assert params.load_params(p)["data.axes.v_bottom_mps"] == 4.6  # each key alone is valid
    with pytest.raises(ParamsError, match=r"data.axes.v_top_mps = data.axes.v_bottom_mps = 4.6: expected the "
                                          r"velocities of the top and bottom edges"):
        params.read(["data.axes"], p)
    p.write_text((REPO / "params.yaml").read_text().replace("v_top_mps: 4.6", "v_top_mps: -3.8"))
    axes = params.read(["data.axes"], p)["data.axes"]
    assert (axes.v_top_mps, axes.v_bottom_mps, axes.duration_s) == (-3.8, -0.7, 2.3)  # either way up


def test_unknown_and_missing_keys(tmp_path):
    text = (REPO / "params.yaml").read_text()
    p = tmp_path / "params.yaml"
    p.write_text(text + "\nsplit_typo: 3\n")
    with pytest.raises(ParamsError, match="unknown key 'split_typo'"):
        params.load_params(p)
    p.write_text(text.replace("  gap: 1", ""))
    with pytest.raises(ParamsError, match="missing keys split.gap"):
        params.load_params(p)
    p.write_text(text + "\nsplits: {gap: 1}\n")
    with pytest.raises(ParamsError, match=r"params.yaml: unknown section 'splits' \(expected classifier, data, "):
        params.load_params(p)
    p.write_text(text.replace("  gap: 1", "  gapp: 1"))  # the known keys of that section are listed
    with pytest.raises(ParamsError, match=r"unknown key 'split.gapp' \(known keys: split.val_fraction, split.mode, "
                                          r"split.block_size, split.gap\)"):
        params.load_params(p)


def test_validator_takes_another_schema(tmp_path):
    schema = {"a.n": params.Int(1), "a.x": params.Float(0.0, optional=True), "b.flag": params.Bool()}
    f = tmp_path / "other.yaml"
    f.write_text("a: {n: 2, x: null}\nb: {flag: true}\n")
    assert params.load_params(f, schema=schema) == {"a.n": 2, "a.x": None, "b.flag": True}
    f.write_text("a: {n: 0, x: 1}\nb: {flag: true}\n")
    with pytest.raises(ParamsError, match=r"other.yaml: a.n = 0: expected an integer in \[1, inf\)"):
        params.load_params(f, schema=schema)
    f.write_text("a: {n: 1, x: 1}\nb: 3\n")
    with pytest.raises(ParamsError, match=r"other.yaml: b = 3: expected a mapping of its keys \(b.flag\)"):
        params.load_params(f, schema=schema)


def test_cli_bad_param_is_one_line_error(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("val_fraction: 0.2", "val_fraction: 1.5")
    (tmp_path / "params.yaml").write_text(text)
    p = subprocess.run([sys.executable, "-m", "mdgen", "split"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.strip().count("\n") == 0
    assert "split.val_fraction = 1.5" in p.stderr and "expected a number in (0.0, 1.0)" in p.stderr
    assert not (tmp_path / "data").exists()


def test_params_yaml_is_read_as_dvc_reads_it(tmp_path):
    from dvc.utils.serialize import parse_yaml
    text = (REPO / "params.yaml").read_text()
    p = tmp_path / "params.yaml"
    p.write_text(re.sub(r"^  lr: .*$", "  lr: 1e-3", text, count=1, flags=re.M))  # train.lr, as most write it
    flat = params.load_params(p)
    assert flat["train.lr"] == 1e-3 == parse_yaml(p.read_text(), str(p))["train"]["lr"]  # a number to both
    assert params.read_yaml(p) == parse_yaml(p.read_text(), str(p))
    p.write_text(text.replace("mode: blocks", "mode: on"))  # YAML 1.2: `on` is a string, not True
    with pytest.raises(ParamsError, match=r"split.mode = 'on': expected one of blocks \| random"):
        params.load_params(p)
    p.write_text(text + "\nseed: 3\n")  # DVC refuses a key given twice; so does mdgen, on one line
    with pytest.raises(ParamsError, match=r"params.yaml: not valid YAML: found duplicate key \"seed\".*\(line \d+, "
                                          r"column 1\)$") as e:
        params.load_params(p)
    assert "\n" not in str(e.value)


def test_model_name_is_one_of_the_registry(tmp_path):
    with pytest.raises(ParamsError, match=r"model.name = 'LightningDiT-Huge/2': expected one of LightningDiT-XL/1 "
                                          r"\| .*LightningDiT-Tiny/2"):
        params.validate("model.name", "LightningDiT-Huge/2")
    from mdgen.dit import LightningDiT_configs  # params.py spells the names out (no torch import there)
    assert params.SCHEMA["model.name"].expect == "one of " + " | ".join(LightningDiT_configs)
    from mdgen.dit import ATTENTION
    assert params.SCHEMA["model.attention"].expect == "one of " + " | ".join(ATTENTION)


def test_validating_params_does_not_import_torch():
    # `mdgen split` and `mdgen simulate` validate the whole file, model.name included
    code = ("import sys; from mdgen import params; params.load_params(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'params imported torch'")
    p = subprocess.run([sys.executable, "-c", code, str(REPO / "params.yaml")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_an_option_is_named_in_place_of_its_twin_key():
    assert params.validate("sample.cfg_scale", 1.5, option="--cfg-scale") == 1.5
    with pytest.raises(ParamsError, match=r"^--cfg-scale = nan: expected a number in \[0.0, inf\)$"):
        params.validate("sample.cfg_scale", float("nan"), option="--cfg-scale")


def test_every_key_has_its_meaning_and_mdgen_params_prints_them(capsys):
    from mdgen import cli
    meanings = params.meanings()
    assert set(meanings) == set(params.SCHEMA) and all(len(m) > 5 for m in meanings.values())
    assert cli.main(["params", "--params", str(REPO / "params.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(params.SCHEMA) and lines[0].startswith("seed = 0 ")
    assert cli.main(["params", "sample.cfg_scale", "--params", str(REPO / "params.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sample.cfg_scale = ") and "guidance" in out and out.count("\n") == 1
