"""Sifting samples: the judge test, the gait test against each person's real train spread, and the stage."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mdgen.io import write_json
from mdgen.params import SiftConfig
from mdgen.sift import gait_z, judge_keep, sift
from mdgen.split import make_split
from tests.conftest import split_config, write_params
from tests.test_metrics import TINY_PARAMS, _user_folders

RES = {"torso_speed_mps": 0.05, "cycle_s": 0.01, "envelope_mps": 0.05}


def test_judge_keeps_samples_named_as_requested_with_enough_probability():
    probs = np.array([[0.7, 0.3], [0.6, 0.4], [0.45, 0.55], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 1])
    assert judge_keep(probs, labels, 0.0).tolist() == [True, False, True, True]
    assert judge_keep(probs, labels, 0.6).tolist() == [True, False, False, True]


def test_gait_z_against_each_persons_spread_floored_at_the_resolution():
    real = {"torso_speed_mps": np.array([1.0, 1.2, 2.0, 2.0, 2.0]), "cycle_s": np.array([1.0, 1.0, 1.1, 1.1, 1.1])}
    real_labels = np.array([0, 0, 1, 1, 1])
    gen = {"torso_speed_mps": np.array([1.1, 1.6, 2.1, np.nan]), "cycle_s": np.array([1.0, 1.0, 1.1, 1.1])}
    z = gait_z(gen, np.array([0, 0, 1, 1]), real, real_labels, RES)
    sd0 = np.std([1.0, 1.2], ddof=1)
    # person 0: speed std 0.141; cycle std 0 -> the 0.01 s floor, and 1.0 is its mean
    assert z[0] == pytest.approx(0.0) and z[1] == pytest.approx(0.5 / sd0)
    # person 1 walks at exactly 2.0 m/s in every real image: the 0.05 m/s floor, not a zero std
    assert z[2] == pytest.approx(0.1 / 0.05)
    assert z[3] == np.inf  # a measure a sample does not show is implausible
    # a person with one real image is not tested on it
    assert gait_z(gen, np.array([0, 0, 1, 1]), real, np.array([0, 0, 0, 0, 1]), RES)[2] == 0.0


def test_sift_methods_combine_the_tests():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9]])
    labels = np.array([0, 0, 0])
    real = {"torso_speed_mps": np.array([1.0, 1.1, 0.9])}
    gen = {"torso_speed_mps": np.array([1.0, 3.0, 1.0])}
    keep = {m: sift(probs, labels, gen, real, np.zeros(3, int), RES, SiftConfig(m, 0.0, 3.0))[0].tolist()
            for m in ("none", "judge", "kinematics", "both")}
    assert keep == {"none": [True] * 3, "judge": [True, True, False], "kinematics": [True, False, True],
                    "both": [True, False, False]}


@pytest.fixture
def workspace(tmp_path):
    from mdgen.stages import classifier as classifier_stage

    data = _user_folders(tmp_path / "data", users=2, per_user=8, seed=0, with_truth=True)
    samples = _user_folders(tmp_path / "samples", users=2, per_user=3, seed=1)
    write_json(tmp_path / "split.json", make_split(data, split_config(0.25, mode="random"), 0))
    params = write_params(tmp_path / "params.yaml", {**TINY_PARAMS, "data": {"dir": str(data), "image_size": 32},
                                                     "sift": {"method": "judge"}})
    classifier_stage.main(params_path=params, split_path=tmp_path / "split.json",
                          out=tmp_path / "classifier.safetensors", metrics_path=tmp_path / "judge.json",
                          baselines_path=tmp_path / "classifier_baselines.json")
    return tmp_path, params, samples


def run_sift(tmp_path, params, samples, out):
    from mdgen.stages import sift as sift_stage

    return sift_stage.main(params_path=params, samples_dir=samples, out_dir=out, split_path=tmp_path / "split.json",
                           classifier_path=tmp_path / "classifier.safetensors", details_path=tmp_path / "sift.json")


def test_sift_stage_copies_what_it_keeps_and_says_why_the_rest_went(workspace):
    tmp_path, params, samples = workspace
    out = tmp_path / "sifted"
    (out / "ID_9").mkdir(parents=True)  # a previous output is replaced as a whole
    d = run_sift(tmp_path, params, samples, out)
    kept = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(kept) == d["kept"] == d["judge_names_requested"] and not (out / "ID_9").exists()
    assert len(kept) + len(d["dropped"]) == d["samples"] == 6
    assert set(d["dropped"]).isdisjoint(kept)
    for rel in kept:
        assert (out / rel).read_bytes() == (samples / rel).read_bytes()
    assert json.loads((tmp_path / "sift.json").read_text()) == json.loads(json.dumps(d))
    assert sum(u["kept"] for u in d["per_user"].values()) == d["kept"]


def test_sift_cli_on_samples_of_ones_own(workspace, monkeypatch):
    from mdgen import cli

    tmp_path, params, samples = workspace
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").rename(tmp_path / "data_real")  # nothing else under data/: the CLI's defaults are relative
    split = json.loads((tmp_path / "split.json").read_text())
    split["data_dir"] = str(tmp_path / "data_real")
    (tmp_path / "data").mkdir()
    write_json(tmp_path / "data" / "split.json", split)
    (tmp_path / "models").mkdir()
    (tmp_path / "classifier.safetensors").rename(tmp_path / "models" / "classifier.safetensors")
    assert cli.main(["sift", "--params", str(params), "--samples", str(samples), "--out", "mine",
                     "--details", "mine.json"]) == 0
    assert (tmp_path / "mine").is_dir() and json.loads((tmp_path / "mine.json").read_text())["samples"] == 6


def test_sift_refuses_samples_of_persons_the_judge_does_not_know(workspace):
    tmp_path, params, _ = workspace
    strangers = _user_folders(tmp_path / "strangers", users=3, per_user=1, seed=2)
    with pytest.raises(ValueError, match="ID_3: not a user"):
        run_sift(tmp_path, params, strangers, tmp_path / "sifted")
    assert not (tmp_path / "sifted").exists()
