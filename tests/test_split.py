import json
import random

import numpy as np
import pytest
import yaml
from PIL import Image

from mdgen.errors import DataError
from mdgen.split import (MAX_LISTED, files_and_labels, make_split, read_split, recording_and_index, resize_effect,
                         split_user)
from mdgen.stages import split as split_stage
from tests.conftest import REPO, split_config, write_params


def _folder(root, users: dict[str, list[str]], size: int = 8):
    for user, names in users.items():
        (root / user).mkdir(parents=True)
        for n in names:
            Image.new("RGB", (size, size), (0, 0, 128)).save(root / user / n)
    return root


def _real_names(n, case="case1_1"):
    return [f"ID1_{case}_Doppler{i}.jpg" for i in range(1, n + 1)]


def test_natural_user_order_and_ignored_files(tmp_path):
    root = _folder(tmp_path / "d", {"ID_10": ["1.png", "2.PNG"], "ID_2": ["a1.JPG", "a2.bmp", "a3.jpeg"]})
    (root / "ID_2" / "Thumbs.db").write_bytes(b"junk")
    (root / "ID_2" / "notes.txt").write_text("x")
    m = make_split(root, split_config(0.5), 0)
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
    train, val, dropped = split_user(files, split_config(0.2, mode="blocks", block_size=5, gap=1), random.Random(seed))
    assert set(train) | set(val) | set(dropped) == set(files)
    assert not (set(train) & set(val))
    assert abs(len(val) - 13) <= 0
    train_keys = {recording_and_index(f) for f in train}
    for f in val:
        rec, i = recording_and_index(f)
        assert (rec, i - 1) not in train_keys and (rec, i + 1) not in train_keys, f


def test_random_mode_leaks_neighbours_which_blocks_avoids():
    files = _real_names(60)
    train, val, _ = split_user(files, split_config(0.2, mode="random"), random.Random(0))
    train_keys = {recording_and_index(f) for f in train}
    leaks = sum((recording_and_index(f)[0], recording_and_index(f)[1] + 1) in train_keys for f in val)
    assert leaks > 0  # the reason blocks is the default


def test_deterministic_and_seed_dependent(tmp_path):
    root = _folder(tmp_path / "d", {f"ID_{u}": [f"{i}.png" for i in range(30)] for u in (1, 2)})
    a, b = make_split(root, split_config(0.2), 1), make_split(root, split_config(0.2), 1)
    c = make_split(root, split_config(0.2), 2)
    assert a == b and a["val"] != c["val"]


def test_missing_folder_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        make_split(tmp_path / "nope", split_config(0.2), 0)


def test_no_user_folders_error(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.png").write_bytes(b"")
    with pytest.raises(ValueError, match="no user sub-folders"):
        make_split(tmp_path / "d", split_config(0.2), 0)


def test_user_with_one_image_error(tmp_path):
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"], "ID_2": ["1.png"]})
    with pytest.raises(ValueError, match=r"ID_2 has 1 image\(s\): expected at least 2"):
        make_split(root, split_config(0.2), 0)


def test_empty_user_folder_error(tmp_path):
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"]})
    (root / "ID_2").mkdir()
    with pytest.raises(ValueError, match=r"ID_2 has 0 image"):
        make_split(root, split_config(0.2), 0)


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
    out.write_text(json.dumps(make_split(root, split_config(0.5, mode="random"), 0)))
    m = read_split(out)
    files, labels = files_and_labels(m, "train")
    assert [f.parent.name for f in files] == ["ID_1", "ID_2"] and labels.tolist() == [0, 1]
    assert all(f.is_file() for f in files) and str(labels.dtype) == "torch.int64"
    with pytest.raises(FileNotFoundError, match="run the `split` stage"):
        read_split(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"users": []}))
    with pytest.raises(ValueError, match="bad.json: missing 'data_dir'"):
        read_split(tmp_path / "bad.json")


# ----------------------------------------------------------------------------- the data check of `split`

def _jpeg(path, size=(64, 64), seed=0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90)
    return path.read_bytes()


def test_truncated_jpeg_is_caught_naming_the_file(tmp_path):
    """PIL's verify() passes a JPEG cut short (it does not decode pixels); texture and extract then failed on it."""
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"], "ID_2": ["1.png", "2.png"]})
    bad = root / "ID_2" / "3.jpg"
    bad.write_bytes(_jpeg(bad)[:1500])
    with pytest.raises(DataError, match=r"^unreadable image \S*ID_2/3\.jpg: cannot be decoded: image file is trunc"):
        make_split(root, split_config(0.2), 0)


def test_zero_byte_png_is_named_as_empty(tmp_path):
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"], "ID_2": ["1.png", "2.png"]})
    (root / "ID_1" / "0.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"^unreadable image \S*ID_1/0\.png: empty file \(0 bytes\)$"):
        make_split(root, split_config(0.2), 0)


def test_all_problems_of_the_folder_in_one_error(tmp_path, capsys):
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"], "ID_2": ["1.png", "2.png"], "ID_3": ["1.png"]})
    (root / "ID_1" / "3.png").write_bytes(b"")
    (root / "ID_1" / "4.jpg").write_bytes(_jpeg(root / "ID_1" / "4.jpg")[:1500])
    (root / "ID_2" / "5.bmp").write_bytes(b"BM not a bitmap")
    params = write_params(tmp_path / "params.yaml", {"data": {"dir": str(root)}})
    with pytest.raises(DataError) as e:
        split_stage.main(str(params), out=str(tmp_path / "split.json"))
    lines = str(e.value).splitlines()
    assert lines[0] == f"4 problems in 3 person folder(s) of {root} (nothing was written):"
    assert [ln.split(": ")[0].strip() for ln in lines[1:]] == [
        f"unreadable image {root}/ID_1/3.png", f"unreadable image {root}/ID_1/4.jpg",
        f"unreadable image {root}/ID_2/5.bmp", f"user folder {root}/ID_3 has 1 image(s)"]
    assert not (tmp_path / "split.json").exists() and capsys.readouterr().out == ""


def test_many_problems_are_capped_and_counted(tmp_path):
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"]})
    for k in range(MAX_LISTED + 5):
        (root / "ID_1" / f"e{k}.png").write_bytes(b"")
    with pytest.raises(DataError, match=rf"(?s)^{MAX_LISTED + 5} problems.*\n  \.\.\. and 5 more$"):
        make_split(root, split_config(0.2), 0)


def test_images_of_another_size_are_reported_with_what_is_lost(tmp_path, capsys):
    """300x200 among 256x256: the centre crop drops a third of its time axis, which used to happen without a word."""
    root = tmp_path / "d"
    sizes = {"ID_1": [(256, 256)] * 3 + [(300, 200)], "ID_2": [(256, 256)] * 3 + [(300, 200), (512, 512)]}
    for user, whs in sizes.items():
        (root / user).mkdir(parents=True)
        for k, wh in enumerate(whs):
            Image.new("RGB", wh, (0, 0, 128)).save(root / user / f"{k}.png")
    params = write_params(tmp_path / "params.yaml", {"data": {"dir": str(root), "image_size": 256}})
    manifest = split_stage.main(str(params), out=str(tmp_path / "split.json"))
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "split: 3 of 9 images are not 256x256; extract and the stages after it resize each so that its short side "
        "is 256 and keep the centre square:",
        "  300x200: 2 image(s) (ID_1/3.png, ID_2/3.png): resized to 384x256 (x1.28, upscaled), then 128 of 384 "
        "columns cropped: 33% of the time axis lost",
        "  512x512: 1 image(s) (ID_2/4.png): resized to 256x256 (x0.5, downscaled), nothing cropped"]
    # the report is on stdout only: the manifest is that of the same folder without size findings
    assert manifest == make_split(root, split_config(0.2), 0) and "256" not in (tmp_path / "split.json").read_text()
    assert "data.image_size" in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["split"]["params"]


def test_images_of_the_configured_size_give_one_line(tmp_path, capsys):
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"], "ID_2": ["1.png", "2.png"]}, size=16)
    split_stage.main(str(write_params(tmp_path / "params.yaml", {"data": {"dir": str(root), "image_size": 16}})),
                     out=str(tmp_path / "split.json"))
    assert len(capsys.readouterr().out.splitlines()) == 1


@pytest.mark.parametrize(("w", "h", "effect"), [
    (200, 300, "resized to 256x384 (x1.28, upscaled), then 128 of 384 rows cropped: 33% of the Doppler axis lost"),
    (1024, 512, "resized to 512x256 (x0.5, downscaled), then 256 of 512 columns cropped: 50% of the time axis lost"),
    (128, 128, "resized to 256x256 (x2, upscaled), nothing cropped")])
def test_resize_effect(w, h, effect):
    assert resize_effect(w, h, 256) == effect


def test_symlinked_person_folder_outside_the_data_is_refused(tmp_path):
    """DVC hashes the link, not what is behind it: edits there went unnoticed (stale latents, missing files)."""
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"]})
    elsewhere = _folder(tmp_path / "elsewhere", {"ID_2": ["1.png", "2.png"]})
    (root / "ID_2").symlink_to(elsewhere / "ID_2", target_is_directory=True)
    with pytest.raises(DataError) as e:
        make_split(root, split_config(0.2), 0)
    msg = str(e.value)
    assert msg.startswith(f"person folder {root}/ID_2 is a symlink to {(elsewhere / 'ID_2').resolve()}: ")
    assert "DVC does not hash what is behind a symlink" in msg and "`dvc add` that real copy" in msg
    assert "\n" not in msg


def test_every_symlink_is_refused_even_inside_the_data(tmp_path):
    # DVC hashes neither a link to a folder inside data.dir nor one to an image: `ID_3 -> ID_1` was a third
    # person that `dvc status` never saw appear or go
    root = _folder(tmp_path / "d", {"ID_1": ["1.png", "2.png"], "ID_2": ["1.png", "2.png"]})
    (root / "ID_3").symlink_to(root / "ID_1", target_is_directory=True)
    (root / "ID_2" / "3.png").symlink_to(root / "ID_1" / "1.png")
    outside = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(outside)
    (root / "ID_2" / "4.png").symlink_to(outside)
    with pytest.raises(DataError) as e:
        make_split(root, split_config(0.2), 0)
    msg = str(e.value)
    assert msg.startswith(f"3 problems in 2 person folder(s) of {root}")
    for line in (f"image {root}/ID_2/3.png is a symlink to {(root / 'ID_1' / '1.png').resolve()}",
                 f"image {root}/ID_2/4.png is a symlink to {outside.resolve()}",
                 f"person folder {root}/ID_3 is a symlink to {(root / 'ID_1').resolve()}",
                 "symlinks: DVC does not hash what is behind a symlink"):
        assert line in msg, (line, msg)
