"""DVC behaviour of the pipeline in a throw-away git+DVC copy with tiny params."""
import json

import pytest

pytestmark = pytest.mark.slow


def test_repro_skips_and_reruns_only_what_changed(dvc_repo):
    assert dvc_repo.repro("split") == {"simulate", "split"}
    assert (dvc_repo.root / "data/simulated/ID_2").is_dir()
    assert json.loads((dvc_repo.root / "data/split.json").read_text())["users"] == ["ID_1", "ID_2"]

    assert dvc_repo.repro("split") == set()

    dvc_repo.set_params({"split": {"val_fraction": 0.5}})
    assert dvc_repo.repro("split") == {"split"}

    dvc_repo.set_params({"simulate": {"users": 3}})
    assert dvc_repo.repro("split") == {"simulate", "split"}
    assert json.loads((dvc_repo.root / "data/split.json").read_text())["users"] == ["ID_1", "ID_2", "ID_3"]


def test_failed_stage_leaves_no_output(dvc_repo):
    dvc_repo.set_params({"split": {"val_fraction": 1.5}})
    p = dvc_repo.run("dvc", "repro", "split", check=False)
    assert p.returncode != 0
    assert "split.val_fraction = 1.5" in p.stdout + p.stderr
    assert not (dvc_repo.root / "data/split.json").exists()
