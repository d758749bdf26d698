"""Spectrogram images: jet painting and inversion, the image axes, and that reading images needs no simulator."""
from __future__ import annotations

import ast
import json
import re

import numpy as np
import pytest
from matplotlib import colormaps

from mdgen.cli import STAGES
from mdgen.errors import BadFileError
from mdgen.simulate import RadarConfig, image_time_axis, image_velocity_axis
from mdgen.spectrogram import (
    IMAGE_DURATION_S, IMAGE_V_BOTTOM_MPS, IMAGE_V_TOP_MPS, JET_LUT, TEXTBOOK_JET, db_to_level, image_axes, jet_to_level, level_to_rgb,
    textbook_jet_to_level, time_axis, velocity_axis,
)
from tests.test_dvc_deps import REPO, closure


# --------------------------------------------------------------------------------------
# Colour scale
# --------------------------------------------------------------------------------------

def test_level_to_rgb_paints_as_matplotlib_does():
    levels = np.r_[0.0, 1.0, 255 / 256, 1 / 256, np.random.default_rng(0).uniform(0, 1, 4096)]
    ours = level_to_rgb(levels)
    theirs = np.round(colormaps["jet"](levels)[:, :3] * 255).astype(np.uint8)  # what plt.imsave writes
    assert ours.dtype == np.uint8 and np.array_equal(ours, theirs)


def test_db_to_level_keeps_float32():
    # the simulator's image dB is float32 and its PNG bytes are those of a float32 level
    db = np.array([[0.0, -10.0], [-40.0, -80.0]], dtype=np.float32)
    assert db_to_level(db, 40.0).dtype == np.float32
    assert db_to_level(db.astype(int), 40.0).tolist() == [[1.0, 0.75], [0.0, 0.0]]


def test_jet_inversion_round_trips_and_tolerates_off_colours():
    levels = np.linspace(0, 1, 256 * 256).reshape(256, 256)
    rgb = level_to_rgb(levels)
    back = jet_to_level(rgb)
    assert back.shape == (256, 256) and back.dtype == np.float32
    # jet is pure blue (0, 0, 255) from 0.11 to 0.125: that stretch cannot be told apart
    assert np.abs(back - levels).max() < 0.016
    assert np.mean(np.abs(back - levels)) < 1.0 / 255
    # a smooth matplotlib rendering (not quantised to the table) inverts as well
    smooth = (colormaps["jet"].resampled(4096)(levels)[..., :3] * 255).round().astype(np.uint8)
    assert np.abs(jet_to_level(smooth) - levels).max() < 0.016
    # JPEG-like colour noise: nearest colour on the jet curve
    noisy = np.clip(rgb.astype(int) + np.random.default_rng(0).integers(-10, 11, rgb.shape), 0, 255).astype(np.uint8)
    level, dist = jet_to_level(noisy, return_distance=True)
    assert np.mean(np.abs(level - levels)) < 0.01 and np.abs(level - levels).max() < 0.06
    assert dist.max() <= np.sqrt(3) * 10 + 1.0  # the noise, plus half a step of the sampled jet curve


def test_textbook_jet_is_its_own_table_and_not_matplotlibs():
    assert np.array_equal(textbook_jet_to_level(TEXTBOOK_JET), np.arange(256) / 255)
    # why the texture card keeps a second table: on matplotlib's colours it answers other levels
    own = np.round(textbook_jet_to_level(JET_LUT.astype(np.float64)) * 255).astype(int)
    assert (own != np.arange(256)).sum() == 183


def test_textbook_level_of_8bit_colours_is_the_nearest_entry():
    """8-bit images take the 24-bit-code path: every pixel gets the first nearest TEXTBOOK_JET entry, as the
    sum of squared differences to all 256 says pixel by pixel."""
    rgb = np.random.default_rng(1).integers(0, 256, (24, 20, 3)).astype(np.float64)
    rgb[0, :4] = TEXTBOOK_JET[[0, 0, 255, 7]].round()  # repeated colours share one code
    d = ((rgb[..., None, :] - TEXTBOOK_JET) ** 2).sum(-1)
    assert np.array_equal(textbook_jet_to_level(rgb), d.argmin(-1) / 255)
    assert np.array_equal(textbook_jet_to_level(rgb.astype(np.uint8)), d.argmin(-1) / 255)


def test_jet_tables_live_in_spectrogram_only():
    """Every module-level jet table (a name with JET or LUT) and every use of matplotlib's "jet" by name in
    src/mdgen is in spectrogram.py: matplotlib's JET_LUT (painting; its curve inverts) and TEXTBOOK_JET."""
    found = {}
    for f in sorted((REPO / "src" / "mdgen").rglob("*.py")):
        tree = ast.parse(f.read_text())
        targets = [t for s in tree.body if isinstance(s, (ast.Assign, ast.AnnAssign))
                   for t in (s.targets if isinstance(s, ast.Assign) else [s.target])]
        tables = {t.id for t in targets if isinstance(t, ast.Name) and re.search("JET|LUT", t.id)}
        by_name = any(isinstance(n, ast.Constant) and n.value == "jet" for n in ast.walk(tree))
        if tables or by_name:
            found[f.relative_to(REPO).as_posix()] = sorted(tables)
    assert found == {"src/mdgen/spectrogram.py": ["JET_LUT", "TEXTBOOK_JET"]}


# --------------------------------------------------------------------------------------
# Image axes
# --------------------------------------------------------------------------------------

def test_default_axes_are_the_simulators_bit_for_bit():
    radar = RadarConfig()
    assert (radar.image_v_top, radar.image_v_bottom, radar.duration_s) == (
        IMAGE_V_TOP_MPS, IMAGE_V_BOTTOM_MPS, IMAGE_DURATION_S)
    for size in (32, 64, 100, 256):
        assert np.array_equal(velocity_axis(size), image_velocity_axis(radar, size))
        assert np.array_equal(time_axis(size), image_time_axis(radar, size))
    v = velocity_axis(256)
    # zero Doppler at 0.87 of the height, where the real set's stance feet meet the lower edge of the energy
    assert v[221] > 0 > v[222] and np.all(np.diff(v) < 0)
    step = (IMAGE_V_TOP_MPS - IMAGE_V_BOTTOM_MPS) / 256
    assert v[0] == pytest.approx(IMAGE_V_TOP_MPS - step / 2) and v[-1] == pytest.approx(IMAGE_V_BOTTOM_MPS + step / 2)


def test_image_axes_from_users_json_or_defaults(tmp_path):
    radar = RadarConfig()
    vel = image_velocity_axis(radar)
    (tmp_path / "users.json").write_text(json.dumps({"image_axes": {
        "velocity_mps": {"top": float(vel[0]), "bottom": float(vel[-1]), "rows": len(vel)},
        "time_s": {"first": 0.0, "last": radar.duration_s, "columns": 256}}}))
    v, t, manifest, source = image_axes(tmp_path, 256, 256)
    assert source == "users.json" and "image_axes" in manifest
    assert np.allclose(v, vel) and np.allclose(t, image_time_axis(radar))
    v, t, _, _ = image_axes(tmp_path, 64, 32)
    assert np.allclose(v, image_velocity_axis(radar, 64)) and len(t) == 32
    v, t, manifest, source = image_axes(tmp_path / "elsewhere", 64, 32)
    assert manifest is None and source == "assumed (data.axes: 4.6 to -0.7 m/s, 2.3 s)"
    assert np.array_equal(v, velocity_axis(64)) and np.array_equal(t, time_axis(32))
    # a user's own axes (data.axes): any span, either way up
    v, t, _, source = image_axes(tmp_path / "elsewhere", 64, 32, v_top=-3.0, v_bottom=3.0, duration_s=4.0)
    assert v[0] == pytest.approx(-3.0 + 3 / 64) and v[-1] == pytest.approx(3.0 - 3 / 64) and t[-1] == 4.0
    assert source == "assumed (data.axes: -3 to 3 m/s, 4 s)"
    (tmp_path / "users.json").write_text(json.dumps({"users": []}))
    with pytest.raises(BadFileError, match="no usable image_axes"):
        image_axes(tmp_path, 256, 256)
    (tmp_path / "users.json").write_text(json.dumps({"image_axes": {
        "velocity_mps": {"top": float(vel[0]), "bottom": float(vel[-1]), "rows": 256, "zero_row": 127.5},
        "time_s": {"first": 0.0, "last": 2.3, "columns": 256}}}))
    with pytest.raises(BadFileError, match=r"zero_row = 127.5 disagrees with its top/bottom velocities .* \(zero at "
                                           r"row 221.6\d\)"):
        image_axes(tmp_path, 256, 256)


# --------------------------------------------------------------------------------------
# Who needs the simulator
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["texture", "classifier", "evaluate"])
def test_reading_stages_do_not_import_the_simulator(command):
    """Images are read, measured and judged through mdgen.spectrogram: editing the simulator reruns
    `simulate` (and what consumes its data), never the judge's training or evaluation code."""
    modules = closure(STAGES[command][0], REPO / "src")
    assert "mdgen.spectrogram" in modules and "mdgen.simulate" not in modules
