"""Gait measurements: known answers on synthetic level maps, the simulator's ground truth from RGB PNGs."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mdgen.kinematics import (
    autocorrelation, background_fraction, gait_cycle, limb_envelope, measure_gait, torso_row, torso_velocity,
)
from mdgen.simulate import (
    RadarConfig, image_time_axis, image_velocity_axis, png_bytes, sample_users, simulate_spectrogram,
    spectrogram_to_rgb,
)
from mdgen.spectrogram import db_to_level, jet_to_level, velocity_axis

RADAR = RadarConfig()
VELOCITY, TIME = image_velocity_axis(RADAR), image_time_axis(RADAR)


def test_db_to_level_and_background():
    db = np.array([[0.0, -10.0], [-40.0, -80.0]])
    assert db_to_level(db, 40.0).tolist() == [[1.0, 0.75], [0.0, 0.0]]
    assert background_fraction(db_to_level(db, 40.0)) == 0.5


@pytest.mark.parametrize("velocity, side", [
    (VELOCITY, 1.0),                       # the default axes: approaching, zero near the bottom
    (velocity_axis(256, 3.8, -3.8), -1.0),  # a user's axes (data.axes): zero in the middle, walking away
    (velocity_axis(256, -4.6, 0.7), -1.0),  # positive down: the same picture as the default, read the other way
])
def test_measures_on_a_synthetic_gait_map(velocity, side):
    # torso line at 1.2 m/s from zero, limbs every 0.55 s step reaching 3.3 m/s: known answers
    level = np.full((256, 256), 0.05, dtype=np.float32)
    torso = np.argmin(np.abs(velocity - side * 1.2))
    level[np.abs(velocity - side * 1.2) <= 0.07] = 0.7  # a band ~0.15 m/s wide, brightest in its middle
    level[torso] = 0.9
    step = 0.55
    swing = np.clip(np.sin(np.pi * (TIME % step) / step), 0, None) ** 2  # one burst per step
    reach = 1.2 + 2.1 * swing
    for c, v in enumerate(reach):
        rows = (side * velocity > 1.6) & (side * velocity <= v)
        level[rows, c] = 0.5
    assert torso_row(level) == torso
    assert torso_velocity(level, velocity) == pytest.approx(side * 1.2, abs=0.03)
    assert gait_cycle(level, velocity, TIME) == pytest.approx(2 * step, rel=0.03)
    assert limb_envelope(level, velocity, percentile=100) == pytest.approx(3.3, abs=0.06)
    m = measure_gait(level, velocity, TIME)
    assert m.steps == pytest.approx(RADAR.duration_s / step, rel=0.03)
    assert m.envelope_ratio == pytest.approx(m.envelope_mps / 1.2, rel=0.02)
    ac = autocorrelation(np.sin(2 * np.pi * np.arange(200) / 25))
    assert ac[0] == 1.0 and ac[25] > 0.95 and ac[12] < -0.9


def test_ground_truth_is_recovered_from_rgb_png():
    """The evaluation stage's contract: from a generated PNG (through the jet inversion) the
    torso speed and the gait cycle come back within 5 % of the simulator's ground truth."""
    users = sample_users(8, seed=3)
    speed_err, cycle_err = [], []
    for i in range(16):
        spec = simulate_spectrogram(users[i % 8], 500 + i, RADAR)
        png = png_bytes(spectrogram_to_rgb(spec, RADAR.dynamic_range_db))
        level = jet_to_level(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
        m = measure_gait(level, VELOCITY, TIME)
        speed_err.append(m.torso_velocity / spec.truth["radial_speed_mps"] - 1)
        cycle_err.append(m.cycle_s / spec.truth["cycle_s"] - 1)
    assert np.max(np.abs(speed_err)) < 0.05, speed_err
    assert np.max(np.abs(cycle_err)) < 0.05, cycle_err
    assert abs(np.median(speed_err)) < 0.02 and abs(np.median(cycle_err)) < 0.02


def test_a_torso_at_the_image_edge_still_gets_numbers():
    """A noise sample whose brightest rows lie under zero Doppler, on a 64-row default axis: no row beyond the
    torso band on its side. It must get finite (wrong) numbers, not a NaN that breaks `evaluate`."""
    velocity, time = velocity_axis(64), np.linspace(0.0, RADAR.duration_s, 64)
    level = np.random.default_rng(0).uniform(0.0, 0.1, (64, 64)).astype(np.float32)
    level[-4:] = 0.9
    m = measure_gait(level, velocity, time)
    assert m.torso_velocity < 0 and np.isfinite([m.cycle_s, m.envelope_mps, m.steps]).all()
