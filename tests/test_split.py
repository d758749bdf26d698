import json
import random

import pytest
from PIL import Image

from mdgen.split import files_and_labels, make_split, read_split, recording_and_index, split_user
from mdgen.stages import split as split_stage
from tests.conftest import write_params


def _folder(root, users: dict[str, list[str]]):
    for user, names in users.items():
        (root / user).mkdir(parents=True)
        for n in names:
            Image.new("RGB", (8, 8), (0, 0, 128)).save(root / user / n)
    return root


def _real_names(n, case="case1_1"):
    return [f"ID1_{case}_Doppler{i}.jpg" for i in range(1, n + 1)]


def test_natural_user_order_and_ignored_files(tmp_path):
    root = _folder(tmp_path / "d", {"ID_10": ["1.png", "2.PNG"], "ID_2": ["a1.JPG", "a2.bmp", "a3.jpeg"]})
    (root / "ID_2" / "Thumbs.db").write_bytes(b"junk")
    (root / "ID_2" / "notes.txt").write_text("x")
    m = make_split(root, 0.5, seed=0)
    assert m["users"] == ["ID_2", "ID_10"]
    files = m["train"]["ID_2"] + m["val"]["ID_2"] + m["dropped"]["ID_2"]
    assert sorted(files) == ["ID_2/a1.JPG", "ID_2/a2.bmp", "ID_2/a3.jpeg"]


def test_recording_and_index():
    assert recording_and_index("ID1_case1_1_Doppler12.jpg") == ("ID1_case1_1_Doppler", 12)
    assert recording_and_index("17.png") == ("", 17)
    assert recording_and_index("front.png") == ("front", None)


@pytest.mark.parametrize("seed", range(5))
def test_blocks_mode_has_no_consecutive_train_val_pair(seed):
    files = _real_names(40) + _real_names(25, case="case2_1")
    train, val, dropped = split_user(files, 0.2, random.Random(seed), "blocks", block_size=5, gap=1)
    assert set(train) | set(val) | set(dropped) == set(files)
    assert not (set(train) & set(val))
    assert abs(len(val) - 13) <= 0
    train_keys = {recording_and_index(f) for f in train}
    for f in val:
        rec, i = recording_and_index(f)
        assert (rec, i - 1) not in train_keys and (rec, i + 1) not in train_keys, f


def test_random_mode_leaks_neighbours_which_blocks_avoids():
    files = _real_names(60)
    train, val, _ = split_user(files, 0.2, random.Random(0), "random")
    train_keys = {recording_and_index(f) for f in train}
    leaks = sum((recording_and_index(f)[0], recording_and_index(f)[1] + 1) in train_keys for f in val)
    assert leaks > 0  # the reason blocks is the default


def test_deterministic_and_seed_dependent(tmp_path):
    root = _folder(tmp_path / "d", {f"ID_{u}": [f"{i}.png" for i in range(30)] for u in (1, 2)})
    a, b = make_split(root, 0.2, seed=1), make_split(root, 0.2, seed=1)
    c = make_split(root, 0.2, seed=2)
    assert a == b and a["val"] != c["val"]


def test_missing_folder_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        make_split(tmp_path / "nope", 0.2, 0)


def test_no_user_folders_error(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no user sub-folders"):
        make_split(tmp_path / "d", 0.2, 0)


def test_user_with_one_image_error(tmp_path):
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"], "ID_2": ["1.png"]})
    with pytest.raises(ValueError, match=r"ID_2 has 1 image\(s\): expected at least 2"):
        make_split(root, 0.2, 0)


def test_empty_user_folder_error(tmp_path):
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"]})
    (root / "ID_2").mkdir()
    with pytest.raises(ValueError, match=r"ID_2 has 0 image"):
        make_split(root, 0.2, 0)


def test_unreadable_image_error_and_nothing_written(tmp_path, monkeypatch):
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"], "ID_2": ["1.png", "2.png"]})
    (root / "ID_2" / "3.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    params = write_params(tmp_path / "params.yaml", {"data": {"dir": str(root)},
                                                     "split": {"val_fraction": 0.2, "mode": "blocks", "block_size": 2}})
    out = tmp_path / "split.json"
    with pytest.raises(ValueError, match=r"unreadable image .*ID_2/3\.jpg"):
        split_stage.main(str(params), out=str(out))
    assert not out.exists() and list(tmp_path.glob(".split.json*")) == []


def test_stage_writes_manifest(tmp_path):
    root = _folder(tmp_path / "d", {f"ID_{u}": [f"{i}.png" for i in range(10)] for u in (1, 2, 3)})
    params = write_params(tmp_path / "params.yaml", {"data": {"dir": str(root)},
                                                     "split": {"val_fraction": 0.2, "mode": "blocks", "block_size": 2}})
    out = tmp_path / "split.json"
    split_stage.main(str(params), out=str(out))
    m = json.loads(out.read_text())
    assert m["users"] == ["ID_1", "ID_2", "ID_3"]
    assert all(len(m["val"][u]) == 2 and m["train"][u] for u in m["users"])


def test_read_split_and_files_and_labels(tmp_path):
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"], "ID_2": ["1.png", "2.png", "3.png"]})
    out = tmp_path / "split.json"
    out.write_text(json.dumps(make_split(root, 0.5, seed=0, mode="random")))
    m = read_split(out)
    files, labels = files_and_labels(m, "train")
    assert [f.parent.name for f in files] == ["ID_1", "ID_2"] and labels.tolist() == [0, 1]
    assert all(f.is_file() for f in files) and str(labels.dtype) == "torch.int64"
    with pytest.raises(FileNotFoundError, match="run the `split` stage"):
        read_split(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"users": []}))
    with pytest.raises(ValueError, match="bad.json: missing 'data_dir'"):
        read_split(tmp_path / "bad.json")
