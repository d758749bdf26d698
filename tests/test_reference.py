"""The committed reference run: CI's reproduction check (hashes, quality within the seed spread) and the
README table generated from the committed metrics."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from mdgen import reference

REPO = Path(__file__).resolve().parents[1]

LOCK = {"schema": "2.0", "stages": {
    "simulate": {"outs": [{"path": "data/simulated", "md5": "aaa.dir"}]},
    "split": {"outs": [{"path": "data/split.json", "md5": "bbb"}]},
    "train": {"outs": [{"path": "models/dit", "md5": "ccc.dir"}, {"path": "metrics/train", "md5": "t1.dir", "cache": False}]},
}}
METRICS = {"acc_x": 0.93, "tstr_x": 0.85, "fid_x": 3.6}
DVC_YAML = {"stages": {
    "simulate": {"outs": ["data/simulated"]},
    "split": {"outs": ["data/split.json"]},
    "train": {"outs": [{"models/dit": {"persist": True}}, {"metrics/train": {"cache": False}}, "plots/loss.png"]},
}}
COMPARED = {"data/simulated", "data/split.json", "models/dit"}
RUN = {"machine": {"torch": "x", "arch": "x86_64", "cpu_flags": ["avx2"]},
       "seed_std": {"acc_x": 0.02, "tstr_x": 0.03, "fid_x": 0.3}, "tolerance_std": 3.0}


def test_quality_within_the_seed_spread_passes_and_beyond_it_fails():
    assert reference.quality_failures(METRICS, METRICS, RUN["seed_std"], 3.0) == []
    near = copy.deepcopy(METRICS)
    near["acc_x"] = 0.93 - 0.05      # 2.5 std worse: a rerun may land there
    near["fid_x"] = 3.6 - 2.0   # better is never a failure
    assert reference.quality_failures(near, METRICS, RUN["seed_std"], 3.0) == []
    bad = copy.deepcopy(METRICS)
    bad["tstr_x"] = 0.70
    bad["fid_x"] = 5.0
    failures = reference.quality_failures(bad, METRICS, RUN["seed_std"], 3.0)
    assert len(failures) == 2 and failures[0].startswith("tstr_x: 0.7000 against the reference 0.8500")
    assert "fid_x: 5.0000" in failures[1]


def test_hashes_of_data_and_models_are_compared_metrics_and_figures_by_value_only():
    assert reference.compared_outputs(DVC_YAML) == COMPARED  # cache: false and plots/ left out
    assert reference.lock_outputs(LOCK, COMPARED)["train"] == {"models/dit": "ccc.dir"}
    changed = copy.deepcopy(LOCK)
    changed["stages"]["split"]["outs"][0]["md5"] = "zzz"
    changed["stages"]["train"]["outs"][1]["md5"] = "t2.dir"  # a metrics folder with timings: not a failure
    assert reference.hash_failures(changed, LOCK, ["simulate", "train"], COMPARED) == []
    assert reference.hash_failures(changed, LOCK, ["split"], COMPARED) == [
        "split: data/split.json has md5 zzz, the reference dvc.lock records bbb"]
    assert reference.hash_failures(changed, LOCK, ["sample"], COMPARED) == ["sample: not in the reference dvc.lock"]


def test_the_repository_compares_data_and_models_only():
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    compared = reference.compared_outputs(dvc_yaml)
    assert {"data/simulated", "data/split.json", "models/dit", "data/samples"} <= compared
    assert not any(p.startswith(("metrics/", "plots/")) for p in compared)


def test_later_stages_are_hash_checked_only_on_a_machine_like_the_reference(monkeypatch):
    other = copy.deepcopy(LOCK)
    other["stages"]["train"]["outs"][0]["md5"] = "fp32.dir"  # trained in fp32 on a CPU without bf16
    monkeypatch.setattr(reference, "machine", lambda: {"torch": "x", "arch": "x86_64", "cpu_flags": ["avx2", "avx512f"]})
    stages, failures = reference.check(other, LOCK, METRICS, METRICS, RUN, DVC_YAML)
    assert stages == ["simulate", "split"] and failures == []
    monkeypatch.setattr(reference, "machine", lambda: RUN["machine"])
    stages, failures = reference.check(other, LOCK, METRICS, METRICS, RUN, DVC_YAML)
    assert stages == ["simulate", "split", "train"] and failures == [
        "train: models/dit has md5 fp32.dir, the reference dvc.lock records ccc.dir"]


def test_readme_table_is_replaced_between_markers_and_missing_markers_are_named():
    text = f"intro\n{reference.BEGIN}\nold\n{reference.END}\nafter\n"
    assert reference.replace_table(text, "new") == f"intro\n{reference.BEGIN}\nnew\n{reference.END}\nafter\n"
    with pytest.raises(ValueError, match="markers .* are missing"):
        reference.replace_table("no table here", "new")


def test_readme_results_table_is_the_committed_metrics():
    metrics, run = REPO / "metrics" / "details" / "evaluate.json", REPO / "data" / "reference" / "default_run.json"
    table = reference.results_table(json.loads(metrics.read_text()), json.loads(run.read_text()))
    readme = (REPO / "README.md").read_text()
    assert f"{reference.BEGIN}\n{table}\n{reference.END}" in readme, "run `python release/readme_results.py`"
