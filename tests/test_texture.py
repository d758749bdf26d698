"""Texture card: the same figures as the shared real-data reference script, the stage's metrics, bad input."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mdgen import texture
from mdgen.errors import DataError
from mdgen.io import list_dataset_images, write_json
from mdgen.simulate import png_bytes, sample_users, simulate_spectrogram, spectrogram_to_rgb, RadarConfig
from mdgen.spectrogram import TEXTBOOK_JET
from mdgen.split import dataset_files, make_split
from mdgen.stages import texture as stage
from tests.conftest import split_config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "realism" / "texture_card.py"
SHARED_SHAPE = SHARED.parent / "shape_card.py"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tex") / "data"
    radar = RadarConfig()
    for n, user in enumerate(sample_users(2, seed=0), start=1):
        (root / user["id"]).mkdir(parents=True)
        for k in range(1, 4):
            spec = simulate_spectrogram(user, 10 * n + k, radar)
            (root / user["id"] / f"{k}.png").write_bytes(png_bytes(spectrogram_to_rgb(spec, radar.dynamic_range_db)))
    return root


@pytest.mark.skipif(not SHARED.is_file(), reason="../shared/realism/texture_card.py is not beside the repository")
def test_card_matches_the_reference_script(images):
    spec = importlib.util.spec_from_file_location("texture_card", SHARED)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    ours = texture.card(sorted(images.glob("ID_*/*.png")), n=5)
    theirs = ref.card(str(images / "ID_*/*.png"), n=5)
    assert ours["images"] == theirs["images"] == 5
    for k in texture.FIGURES:
        assert np.allclose(ours[k], theirs[k], atol=1e-3), (k, ours[k], theirs[k])


@pytest.mark.skipif(not SHARED_SHAPE.is_file(), reason="../shared/realism/shape_card.py is not beside the repository")
def test_shape_card_matches_the_reference_script(images, monkeypatch):
    monkeypatch.syspath_prepend(str(SHARED.parent))  # it imports texture_card from beside it
    spec = importlib.util.spec_from_file_location("shape_card", SHARED_SHAPE)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    ours = texture.card(sorted(images.glob("ID_*/*.png")), n=5, shape=True)["shape"]
    theirs = ref.card(str(images / "ID_*/*.png"), n=5)
    assert ours["images"] == theirs["images"] == 5
    for k in texture.SHAPE_FIGURES:
        assert np.allclose(ours[k], theirs[k], atol=1e-3), (k, ours[k], theirs[k])
    assert set(json.loads((REPO / "data" / "reference" / "real_shape.json").read_text())) == {"images", *texture.SHAPE_FIGURES}


def test_shape_figures_of_a_drawn_walker(tmp_path):
    """A torso line at 0.64 of the height with a spike rising above it in every 8th column: the figures say so."""
    level = np.zeros((256, 256))
    level[160:170] = 0.7
    level[164] = 0.9
    level[60:160, ::8] = 0.5
    rgb = np.round(TEXTBOOK_JET[np.round(level * 255).astype(int)]).astype(np.uint8)
    (tmp_path / "a.png").write_bytes(png_bytes(rgb))
    f = texture.figures(tmp_path / "a.png", shape=True)
    assert f["torso_row"] == 164 / 256 and f["lower_env"] == 169 / 256 and f["upper_env"] == 160 / 256
    assert f["upper_tip"] == 60 / 256 and f["lower_tip"] == 169 / 256
    assert f["reach_below"] == 5 / 256 and 0.3 < f["above_share"] < 0.7
    assert f["row_profile16"][0] == 0.0 and f["row_profile16"][10] > 0.4 > f["row_profile16"][9]
    assert 1.0 < f["run_v"] and 2.0 < f["run_h"]  # runs of one colour: long along the torso line


def test_flat_navy_image_has_the_floor_figures(tmp_path):
    navy = np.zeros((256, 256, 3), np.uint8)
    navy[..., 2] = 128  # jet's bottom colour
    (tmp_path / "a.png").write_bytes(png_bytes(navy))
    f = texture.figures(tmp_path / "a.png")
    assert f["navy_share"] == 1.0 and f["flat_h"] == 1.0 and f["lag1_v"] == 0.0 and f["hot_share"] == 0.0


def test_stage_writes_figures_and_distances(images, tmp_path):
    ref = REPO / "data" / "reference" / "real_texture.json"
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    write_json(tmp_path / "split.json", make_split(images, split_config(0.34), 0))
    m = stage.main(str(tmp_path / "params.yaml"), str(tmp_path / "texture.json"), str(tmp_path / "split.json"))
    written = json.loads((tmp_path / "details" / "texture.json").read_text())
    assert written["images"] == 6 and set(texture.FIGURES) <= set(written)
    z = texture.distances(m, json.loads(ref.read_text()))
    assert written["distance_in_reference_std"] == z and written["max_distance"] == max(
        max(v) if isinstance(v, list) else v for v in z.values())
    shape = written["shape"]
    assert shape["images"] == 6 and set(texture.SHAPE_FIGURES) <= set(shape)
    assert shape["reference"] == "data/reference/real_shape.json"
    sz = texture.distances(shape, json.loads((REPO / shape["reference"]).read_text()), texture.SHAPE_FIGURES)
    assert shape["distance_in_reference_std"] == sz and shape["max_distance"] == max(
        max(v) if isinstance(v, list) else v for v in sz.values())
    # the declared metric: the worst distance over both cards alone
    assert json.loads((tmp_path / "texture.json").read_text()) == {
        "real_z": pytest.approx(max(written["max_distance"], shape["max_distance"]), rel=1e-3)}


def test_bad_reference_is_named(tmp_path):
    bad = tmp_path / "card.json"
    bad.write_text(json.dumps({"images": 3, "navy_share": [0.5, 0.1]}))
    with pytest.raises(ValueError, match=r"card.json: not a texture card, missing \['flat_h'"):
        texture.read_reference(bad)
    with pytest.raises(ValueError, match=r"card.json: not a shape card, missing \['torso_row'"):
        texture.read_reference(bad, texture.SHAPE_FIGURES)


def test_stage_reads_every_file_of_the_split_manifest(images, tmp_path):
    """All of train, val and dropped, in the folder's order, and nothing `split` did not check: an image added
    (or broken) since then is not read. In dvc.yaml the stage depends on data/split.json, so DVC runs it after split."""
    manifest = make_split(images, split_config(0.34, mode="blocks", block_size=1, gap=1), 0)
    assert manifest["counts"]["dropped"] > 0
    assert dataset_files(manifest) == list_dataset_images(images)
    write_json(tmp_path / "split.json", manifest)
    late = images.parent / "late"
    shutil.copytree(images, late)
    (late / "ID_1" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # not in the manifest
    write_json(tmp_path / "split_late.json", {**manifest, "data_dir": str(late)})
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**yaml.safe_load((REPO / "params.yaml").read_text()),
                                      "texture": {"images": 400, "reference": None,
                                                                  "shape_reference": None}}))
    m = stage.main(str(params), str(tmp_path / "texture.json"), split_path=str(tmp_path / "split_late.json"))
    assert m["images"] == 6 == len(dataset_files(manifest))
    texture_stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["texture"]
    assert "data/split.json" in texture_stage["deps"]


def test_image_changed_since_split_is_named(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read image .*a\.png .*run `mdgen split`"):
        texture.figures(tmp_path / "a.png")
