"""Radar micro-Doppler spectrograms of walking people: the built-in default dataset.

A person walks towards a 77 GHz radar. Their joints follow the Boulic-Thalmann global
human walking model as parameterised in V. C. Chen, "The Micro-Doppler Effect in Radar"
(Artech House, 2011), ch. 4. Every body segment is an ellipsoid: a specular return at its
centre with Chen's aspect-dependent RCS, cut by the Ament roughness factor of skin and clothing
at 3.9 mm, plus diffuse glints spread along it, each with slow amplitude fading and the
two-way gain of the antenna's elevation pattern; the baseband slow-time return
s(t) = sum_k sqrt(sigma_k) exp(-j 4 pi R_k / lambda) gets static clutter, white noise at a
peak SNR and an MTI high-pass. As a 77 GHz FMCW chain forms it, the spectrogram is the power
sum over the range bins around the walker (each with its own noise), of Hann Doppler
frames, consecutive frames averaged in power, after a receiver whose I/Q mismatch
leaves a faint mirror image. The dB spectrogram is cropped to the image
velocity axis (mdgen.spectrogram's: +4.6 m/s at the top edge, -0.7 m/s at the bottom), its top 46 dB
painted with matplotlib's `jet` (the noise floor falls below the scale: flat navy), positive velocity
up, like the real 77 GHz FMCW gait data this project targets (256x256 RGB PNG, one folder per person);
the colour scale and the image axes are `mdgen.spectrogram`'s, which reads such images back. The texture
and shape cards (`mdgen.texture`, the `texture` stage) hold the images against a real set's figures.

Velocity throughout is Doppler velocity lambda*f_D/2: positive approaches the radar. As in the
targeted recordings, the torso band runs at about 0.64 of the image height from the top, the stance
foot rests at zero Doppler (0.87) where the energy ends below it, and the swinging limbs rise above
the torso line to about 2.6x its velocity.

    users = sample_users(8, seed=0)
    spec = simulate_spectrogram(users[0], seed=3)        # Spectrogram: db, velocity, time, truth
    rgb = spectrogram_to_rgb(spec, dynamic_range_db=46)   # uint8 [256, 256, 3]
    simulate_dataset("data/simulated", 8, 120, seed=0)    # ID_<n>/<k>.png + users.json
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import io
import json
import math
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage, signal
from scipy.interpolate import PchipInterpolator
from tqdm import tqdm

from mdgen.io import atomic_path
from mdgen.spectrogram import (
    IMAGE_DURATION_S, IMAGE_V_BOTTOM_MPS, IMAGE_V_TOP_MPS, db_to_level, level_to_rgb, time_axis, velocity_axis,
)

SPEED_OF_LIGHT = 299_792_458.0


# --------------------------------------------------------------------------------------
# Radar and image configuration
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RadarConfig:
    """Radar, scene and image-formation settings (defaults: 77 GHz FMCW gait recordings)."""

    carrier_hz: float = 77e9
    # Doppler sampling rate (>= 6.4 kHz). The toes of the default population peak at up to
    # ~4.1 x 1.62 = 6.7 m/s (fast walkers), under the Nyquist velocity prf*lambda/4 = 7.8 m/s.
    prf_hz: float = 8000.0
    duration_s: float = IMAGE_DURATION_S  # the real data's image span (mdgen.spectrogram says why)
    # One Doppler frame: 400 chirps, 50 ms, the coherent processing interval of a 77 GHz FMCW
    # board's frame. Its Hann resolution of ~0.06 m/s spans ~3 rows of the 0.021 m/s image rows, so
    # the image is smooth along Doppler at pixel scale, as real spectrograms are (texture card lag1_v,
    # real 8.8: a 96 ms window made every row its own speckle, 25; 40 ms on these rows, 7.3).
    window_s: float = 0.05
    nfft: int = 512                  # zero-padded to about one FFT bin per image row
    image_size: int = 256
    # the image's velocity axis: its top and bottom edges (m/s, positive towards the radar; mdgen.spectrogram says why)
    image_v_top: float = IMAGE_V_TOP_MPS
    image_v_bottom: float = IMAGE_V_BOTTOM_MPS
    # The walker approaches the radar, as in the real set: its limbs swing forwards faster than the
    # torso, so on a positive-towards axis they rise above the torso line while the stance foot rests
    # at zero Doppler below it. (Walking away on the same axis mirrors all of this below zero.)
    towards: bool = True
    # Evaluation board on a tripod at chest height. From 1.45 m the feet lie 10 deg below boresight at
    # 8 m and 16 deg at 5 m, so the elevation pattern dims them 11-27 dB against the torso: the
    # swing toes' fastest tips (~4x the torso velocity in Boulic's model) fade below the colour
    # scale where the real set's do, 3.5-4 m/s (shape card row_profile16 band 2 of 16, real
    # 0.005 +- 0.004: 0.010 on the default data; 0.02-0.04 from 1.0-1.3 m in trials on 80 images).
    radar_height_m: float = 1.45
    # Pelvis range at the first pulse. The walker approaches 2-4 m during an image, so the 1/R^4
    # power gain brightens the end by 4-8 dB; closer starts would make that trend dominate.
    start_range_m: float = 8.0
    # Peak SNR: the strongest cell of the walker's spectrogram over the mean noise power per cell,
    # for a person at 5-9 m from a 77 GHz board (radar equation with ~12 dBsm of body, tens of
    # dBi of array gain, a 50 ms coherent frame). The image shows the top dynamic_range_db of it:
    # the noise floor, averaged over range bins and frames below, sits a few dB under the bottom
    # of the colour scale, so it paints flat navy with sparse speckle, as the real set's floor
    # (texture card navy_share 0.67, flat_h 0.48); 38 dB with a 40 dB scale painted speckle
    # everywhere.
    snr_db: float = 58.0
    dynamic_range_db: float = 46.0
    clutter_db: float | None = 20.0  # static clutter power relative to the walker; None: no clutter
    # MTI high-pass cut-off as a velocity (None: no MTI): removes the static clutter and leaves
    # the thin notch at zero Doppler that real clutter-removed spectrograms show.
    mti_cutoff_mps: float | None = 0.1
    # Diffuse glints per metre of segment, besides its specular point: 20/m (about 100 on a
    # body) fills the limb traces into a band; fewer leave separate thin lines.
    glints_per_m: float = 20.0
    fading_db: float = 1.5           # std of each segment's slow amplitude fading (clothing, posture)
    fading_time_s: float = 0.25      # its correlation time, about a quarter step
    # Rms height of skin and clothing folds. At lambda = 3.9 mm, 1 mm leaves exp(-(4 pi h/lambda)^2)
    # = -45 dB of the smooth-ellipsoid specular return (Ament's roughness factor): at 77 GHz a body
    # scatters diffusely, so the torso does not outshine the limbs by the 20 dB of smooth ellipsoids.
    roughness_m: float = 0.001
    # Backscatter coefficient of that rough surface on the projected area (sigma0 of rough
    # dielectric surfaces at mm-wave is -10 to 0 dB).
    diffuse_reflectivity: float = 0.3
    # Full 3 dB elevation beamwidth of the board's antenna array (patch arrays: 15-30 deg). At
    # 1 m height the feet sit 6-11 deg below boresight, so the two-way pattern dims them by up to
    # 13 dB against the torso; None: isotropic.
    elevation_beamwidth_deg: float | None = 15.0
    # Range bins summed into the spectrogram: with GHz of sweep bandwidth a body spans several
    # range cells, and the micro-Doppler spectrogram is the power sum over the cells around the
    # walker. Each cell brings its own independent noise, so the summed floor is steady (its
    # spread shrinks as 1/sqrt(bins)) instead of exponential speckle.
    range_bins: int = 8
    # Consecutive frames averaged in power (non-coherent integration, as radar displays do): cuts
    # the remaining speckle along time to 1/sqrt(2) at a cost of ~18 ms of time resolution. Three
    # frames smeared the swing spikes along time into the top rows (band 2 of 16 in trials on 80
    # images: 0.011 against 0.009), though they matched the real contrast along time (lag1_h) better.
    frames_averaged: int = 2
    # Image rejection of the receiver's I/Q channels: a gain mismatch of 2 % and a phase mismatch of
    # 2.5 deg leave a mirrored copy of the walker at -f_D, 33 dB down (25-35 dB on 77 GHz boards).
    # The mirror of the torso falls below the image's bottom edge; what shows under the zero line is
    # faint, as in the real set (shape card row_profile16 bands 15-16: 0.048, 0.011; real 0.026,
    # 0.011); -40 dB gave the same figures in a trial. None: ideal receiver.
    iq_image_db: float | None = -33.0

    @property
    def wavelength_m(self) -> float:
        return SPEED_OF_LIGHT / self.carrier_hz

    @property
    def nyquist_mps(self) -> float:
        """Largest unambiguous |Doppler velocity| (complex sampling at prf)."""
        return self.prf_hz * self.wavelength_m / 4.0

    def __post_init__(self):
        assert max(abs(self.image_v_top), abs(self.image_v_bottom)) < self.nyquist_mps, (
            f"image axis {self.image_v_bottom}..{self.image_v_top} m/s exceeds the Nyquist velocity "
            f"{self.nyquist_mps:.2f} m/s")
        assert self.image_v_top > self.image_v_bottom, (
            f"image_v_top={self.image_v_top} must lie above image_v_bottom={self.image_v_bottom}")
        assert self.range_bins >= 1 and self.frames_averaged >= 1, (
            f"range_bins={self.range_bins} and frames_averaged={self.frames_averaged} must be >= 1")
        assert self.nfft >= round(self.window_s * self.prf_hz), (
            f"nfft={self.nfft} is shorter than the window ({round(self.window_s * self.prf_hz)} samples)")


def image_velocity_axis(radar: RadarConfig = RadarConfig(), size: int | None = None) -> np.ndarray:
    """Velocity (m/s) at the centre of each row of `radar`'s images, top row first (positive velocity up)."""
    return velocity_axis(size or radar.image_size, radar.image_v_top, radar.image_v_bottom)


def image_time_axis(radar: RadarConfig = RadarConfig(), size: int | None = None) -> np.ndarray:
    """Time (s) at the centre of each column of `radar`'s images."""
    return time_axis(size or radar.image_size, radar.duration_s)


# --------------------------------------------------------------------------------------
# Boulic-Thalmann walking model (Chen 2011 parameterisation)
# --------------------------------------------------------------------------------------

# Segment lengths as fractions of body height H (Chen 2011, HumanWalkingModel; from
# anthropometric tables). shoulder/hip are half-widths (0.259/2, 0.191/2).
SEGMENT_FRACTIONS = {
    "head": 0.130, "shoulder": 0.1295, "torso": 0.288, "hip": 0.0955, "thigh": 0.245,
    "shank": 0.246, "foot": 0.143, "upper_arm": 0.188, "forearm": 0.152,
}

# Ellipsoid radii a = b (m) per segment kind (Chen 2011, ch. 4 human-walking simulation);
# the third semi-axis c is half the segment length.
ELLIPSOID_RADIUS = {
    "head": 0.10, "torso": 0.15, "shoulder": 0.06, "upper_arm": 0.06, "forearm": 0.05,
    "hip": 0.07, "thigh": 0.07, "shank": 0.06, "foot": 0.05,
}

TORSO_KINDS = ("head", "torso", "shoulder", "hip")  # scaled by the user's torso RCS factor

# Pulses between evaluations of the body geometry: at 8 kHz that is 2 kHz, far above the
# gait's motion bandwidth; linear range interpolation over 0.5 ms errs < 5 um (0.015 rad)
# even at a foot's 150 m/s^2.
GEOMETRY_DECIMATION = 4



def gait_timing(speed_mps: float, leg_length_m: float, stride_coef: float = 1.0) -> dict:
    """Boulic-Thalmann global temporal characteristics.

    RV = V/H_t (H_t: thigh + shank); relative cycle length RL_c = 1.346 sqrt(RV) (scaled by the
    person's stride coefficient); cycle duration D_c = RL_c/RV (s); support D_s = 0.752 D_c - 0.143.
    """
    rv = speed_mps / leg_length_m
    if not 0.0 < rv <= 3.0:
        raise ValueError(f"relative velocity V/H_t = {speed_mps:.3f}/{leg_length_m:.3f} = {rv:.3f} "
                         "is outside the model's range (0, 3]")
    rlc = 1.346 * math.sqrt(rv) * stride_coef
    dc = rlc / rv
    ds = 0.752 * dc - 0.143
    return {"rv": rv, "rlc": rlc, "cycle_s": dc, "support_s": ds, "support_rel": ds / dc}


# Joint flexion control points: (phase in cycles from the right heel strike, angle in degrees).
# Boulic, Magnenat-Thalmann & Thalmann, "A global human walking model with real-time kinematic
# personification", The Visual Computer 6:344-358 (1990), as tabulated by Chen (2011),
# HumanWalkingModel. Gait regimes by RV: 'a' RV < 0.5 (values scale with RV), 'b' 0.5 <= RV < 1.3,
# 'c' 1.3 <= RV <= 3 (values linear in r = (RV - 1.3)/1.7, continuous with 'b' at RV = 1.3).

def _regime(rv: float) -> str:
    return "a" if rv < 0.5 else ("b" if rv < 1.3 else "c")


def _hip_points(rv):
    r = (rv - 1.3) / 1.7
    return {
        "a": ([-0.1, 0.5, 0.9], [50 * rv, -30 * rv, 50 * rv]),
        "b": ([-0.1, 0.5, 0.9], [25, -15, 25]),
        "c": ([0.2 * r - 0.1, 0.5, 0.9], [5 * r + 25, -15, 6 * r + 25]),
    }[_regime(rv)]


def _knee_points(rv):
    r = (rv - 1.3) / 1.7
    return {
        "a": ([0.17, 0.4, 0.75, 1.0], [3, 3, 140 * rv, 3]),
        "b": ([0.17, 0.4, 0.75, 1.0], [3, 3, 70, 3]),
        "c": ([-0.05 * r + 0.17, 0.4, -0.05 * r + 0.75, -0.03 * r + 1.0],
              [22 * r + 3, 3, -5 * r + 70, 3 * r + 3]),
    }[_regime(rv)]


def _ankle_points(rv, ds_rel):
    # the fourth point (toe-off) sits at the end of support
    r = (rv - 1.3) / 1.7
    return {
        "a": ([0, 0.08, 0.5, ds_rel, 0.85], [-3, -30 * rv - 3, 22 * rv - 3, -34 * rv - 3, -3]),
        "b": ([0, 0.08, 0.5, ds_rel, 0.85], [-3, -18, 8, -20, -3]),
        "c": ([0, 0.08, -0.1 * r + 0.5, ds_rel, 0.85],
              [5 * r - 3, 4 * r - 18, -3 * r + 8, -8 * r - 20, 5 * r - 3]),
    }[_regime(rv)]


def _thorax_points(rv):
    return [0.1, 0.4, 0.6, 0.9], [4 / 3 * rv, -4.5 / 3 * rv, -4 / 3 * rv, 4.5 / 3 * rv]


def _elbow_points(rv):
    q = (rv - 0.5) / 0.8
    r = (rv - 1.3) / 1.7
    # Chen's listing reads (rv - .13) in the last 'c' value; (rv - 1.3) is the value that is
    # continuous with regime 'b' at RV = 1.3 (17 deg), like every other 'c' entry.
    return {
        "a": ([0.05, 0.5, 0.9], [6 * rv + 3, 34 * rv + 3, 10 * rv + 3]),
        "b": ([0.05, 0.01 * q + 0.5, 0.9], [8 * q + 6, 24 * q + 20, 9 * q + 8]),
        "c": ([0.05, 0.04 * r + 0.51, -0.1 * r + 0.9], [-6 * r + 14, 26 * r + 44, -6 * r + 17]),
    }[_regime(rv)]


JOINT_CONTROL_POINTS = {"hip": _hip_points, "knee": _knee_points, "thorax": _thorax_points, "elbow": _elbow_points}


def periodic_pchip(x, y) -> PchipInterpolator:
    """Shape-preserving cubic through control points repeated every cycle (call it at phase % 1)."""
    x = np.asarray(x, float) % 1.0
    y = np.asarray(y, float)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    keep = np.r_[True, np.diff(x) > 1e-9]  # a point given at both -0.1 and 0.9 is one point
    x, y = x[keep], y[keep]
    xs = np.concatenate([x - 1.0, x, x + 1.0])
    ys = np.concatenate([y, y, y])
    return PchipInterpolator(xs, ys, extrapolate=False)


def joint_curve(joint: str, rv: float, ds_rel: float) -> PchipInterpolator:
    """Flexion (deg) of `joint` over the cycle; the ankle's toe-off point needs the support ds_rel."""
    points = _ankle_points(rv, ds_rel) if joint == "ankle" else JOINT_CONTROL_POINTS[joint](rv)
    return periodic_pchip(*points)


def _list_angle(p: np.ndarray, a2: float) -> np.ndarray:
    """Pelvis left/right rotation (deg): four cosine arcs joined at 0.15, 0.5, 0.65 (Boulic 1990)."""
    return np.select(
        [p < 0.15, p < 0.5, p < 0.65],
        [-a2 + a2 * np.cos(2 * np.pi * 10 * p / 3),
         -a2 - a2 * np.cos(2 * np.pi * 10 * (p - 0.15) / 7),
         a2 - a2 * np.cos(2 * np.pi * 10 * (p - 0.5) / 3)],
        a2 + a2 * np.cos(2 * np.pi * 10 * (p - 0.65) / 7))


def _sagittal(length: float, angle_deg: np.ndarray) -> np.ndarray:
    """Segment vector hanging down and swung forward by `angle_deg` in the x-z plane: (3, n)."""
    a = np.deg2rad(angle_deg)
    return np.stack([length * np.sin(a), np.zeros_like(a), -length * np.cos(a)])


def _rotation(axis: str, deg) -> np.ndarray:
    """Right-handed rotation matrices about x, y or z: (3, 3, n) for n angles (deg)."""
    a = np.deg2rad(np.atleast_1d(np.asarray(deg, dtype=np.float64)))
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return {
        "x": np.array([[o, z, z], [z, c, -s], [z, s, c]]),
        "y": np.array([[c, z, s], [z, o, z], [-s, z, c]]),
        "z": np.array([[c, -s, z], [s, c, z], [z, z, o]]),
    }[axis]


def _compose(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    return np.einsum("ijn,jkn->ikn", r1, r2)


def _apply(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("ijn,jn->in", r, v)


def body_joints(user: dict, speed_mps: float, phase: np.ndarray) -> dict[str, np.ndarray]:
    """Joint positions (m) in the body frame at gait phases `phase` (cycles since right heel strike).

    Body frame: origin at the spine base on the ground-projected pelvis, x forward, y left,
    z up; the forward progression V*t is added by the caller. Returns name -> (3, n).
    """
    L = segment_lengths(user)
    ht = L["thigh"] + L["shank"]
    g = gait_timing(speed_mps, ht, user["stride_coef"])
    rv, ds_rel = g["rv"], g["support_rel"]
    p = phase % 1.0

    # Orientation. Chen's listing rotates with a helper whose sense it does not print. Read with
    # right-handed rotations, a positive hip flexion swings the thigh towards -x, so the published
    # walker faces -x; our x points forwards, which mirrors x: flexions and yaws change sign (the
    # flexions through our forward-positive convention) and the fore-aft translation changes sign.
    # This reading is the one that agrees with gait biomechanics: the pelvis is slowest at
    # mid-stance, where the vertical translation puts it highest (inverted pendulum), the trunk
    # flexes forwards by 0-4 deg, and that pitch damps the head's fore-aft motion relative to the
    # pelvis (Menz, Lord & Fitzpatrick, Gait & Posture 18:35, 2003).

    # whole-body translations (Boulic 1990; lengths are relative to H_t)
    av = 0.015 * rv
    vert = (-av + av * np.sin(2 * np.pi * (2 * p - 0.35))) * ht
    al = -0.128 * rv**2 + 0.128 * rv if rv < 0.5 else -0.032
    lat = al * np.sin(2 * np.pi * (p - 0.1)) * ht
    af = -0.084 * rv**2 + 0.084 * rv if rv < 0.5 else -0.021
    fwd = -af * np.sin(2 * np.pi * (2 * p + 2 * (0.625 - ds_rel))) * ht
    shift = np.stack([fwd, lat, vert + ht])

    # pelvis and trunk rotations (deg)
    a1 = -8 * rv**2 + 8 * rv if rv < 0.5 else 2.0
    trunk_flexion = -(-a1 + a1 * np.sin(2 * np.pi * (2 * p - 0.1)))  # forwards, 0..2 a1
    roll = -_list_angle(p, 1.66 * rv)
    pelvis_yaw = 4 * rv * np.cos(2 * np.pi * p)
    thorax_yaw = -joint_curve("thorax", rv, ds_rel)(p)

    pelvis = _compose(_rotation("z", pelvis_yaw), _rotation("x", roll))
    # +y rotation tips a vertical segment's top forwards (+x)
    trunk = _compose(_rotation("z", thorax_yaw), _rotation("y", trunk_flexion))

    curves = {j: joint_curve(j, rv, ds_rel) for j in ("hip", "knee", "ankle", "elbow")}
    a_s = 9.88 * rv * user["arm_swing"]

    joints = {}
    for side, sign, offset, gain in (("r", -1.0, 0.0, 1.0), ("l", 1.0, 0.5, 1.0 - user["asymmetry"])):
        ps = (p + offset) % 1.0  # the left side runs half a cycle apart
        hip_a = curves["hip"](ps) * user["hip_flexion"] * gain
        knee_a = curves["knee"](ps) * user["knee_flexion"] * gain
        ankle_a = curves["ankle"](ps) * gain
        shoulder_a = (3 - a_s / 2 - a_s * np.cos(2 * np.pi * ps)) * gain
        elbow_a = curves["elbow"](ps) * gain

        hip = np.zeros((3, p.size))
        hip[1] = sign * L["hip"]
        knee = hip + _sagittal(L["thigh"], hip_a)
        ankle = knee + _sagittal(L["shank"], hip_a - knee_a)
        foot_a = np.deg2rad(hip_a - knee_a + ankle_a)  # positive: toe up
        toe = ankle + np.stack([L["foot"] * np.cos(foot_a), np.zeros_like(foot_a), L["foot"] * np.sin(foot_a)])
        for name, v in (("hip", hip), ("knee", knee), ("ankle", ankle), ("toe", toe)):
            joints[f"{side}_{name}"] = _apply(pelvis, v)

        shoulder = np.zeros((3, p.size))
        shoulder[1] = sign * L["shoulder"]
        shoulder[2] = L["torso"]
        elbow = shoulder + _sagittal(L["upper_arm"], shoulder_a)
        hand = elbow + _sagittal(L["forearm"], shoulder_a + elbow_a)
        for name, v in (("shoulder", shoulder), ("elbow", elbow), ("hand", hand)):
            joints[f"{side}_{name}"] = _apply(trunk, v)

    neck = np.zeros((3, p.size))
    neck[2] = L["torso"]
    head = neck.copy()
    head[2] += L["head"]
    joints["neck"] = _apply(trunk, neck)
    joints["head"] = _apply(trunk, head)
    joints["base"] = np.zeros((3, p.size))
    return {k: v + shift for k, v in joints.items()}


# segment name -> (kind, from joint, to joint)
SEGMENTS = {
    "head": ("head", "neck", "head"),
    "torso": ("torso", "base", "neck"),
    **{f"{s}_{kind}": (kind, a if a in ("base", "neck") else f"{s}_{a}", f"{s}_{b}")
       for s in "rl"
       for kind, a, b in (("shoulder", "neck", "shoulder"), ("upper_arm", "shoulder", "elbow"),
                          ("forearm", "elbow", "hand"), ("hip", "base", "hip"),
                          ("thigh", "hip", "knee"), ("shank", "knee", "ankle"), ("foot", "ankle", "toe"))},
}


def segment_lengths(user: dict) -> dict[str, float]:
    return {k: f * user["height_m"] * user["segment_scale"][k] for k, f in SEGMENT_FRACTIONS.items()}


def diffuse_rcs(a: float, c: float, cos_theta: np.ndarray, reflectivity: float) -> np.ndarray:
    """Diffuse RCS (m^2): `reflectivity` times the ellipsoid's projected area.

    Skin and clothing are rough at 3.9 mm, so a limb keeps returning power when it is tilted
    away from the specular direction, where the smooth-ellipsoid formula falls by 20-30 dB.
    """
    cos2 = np.clip(cos_theta**2, 0.0, 1.0)
    return reflectivity * np.pi * a * np.sqrt(a**2 * cos2 + c**2 * (1.0 - cos2))


def ellipsoid_rcs(a: float, c: float, cos_theta: np.ndarray) -> np.ndarray:
    """RCS (m^2) of an ellipsoid with radii a = b and c seen at angle theta to its c axis.

    sigma = pi a^2 b^2 c^2 / (a^2 sin^2(th) cos^2(ph) + b^2 sin^2(th) sin^2(ph) + c^2 cos^2(th))^2,
    which for a = b does not depend on phi (Chen 2011, eq. for ellipsoidal body parts).
    """
    cos2 = np.clip(cos_theta**2, 0.0, 1.0)
    return np.pi * a**4 * c**2 / (a**2 * (1.0 - cos2) + c**2 * cos2) ** 2


# --------------------------------------------------------------------------------------
# Users
# --------------------------------------------------------------------------------------

def sample_users(n_users: int, seed: int) -> list[dict]:
    """Personal walking and body parameters, JSON-serialisable, ids ID_1 ... ID_<n>."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x05E7]))
    users = []
    for i in range(n_users):
        u = {
            "id": f"ID_{i + 1}",
            "height_m": rng.uniform(1.55, 1.90),
            "speed_mps": rng.uniform(0.95, 1.50),       # preferred walking speed
            "stride_coef": rng.uniform(0.92, 1.08),     # x relative cycle length
            "arm_swing": rng.uniform(0.5, 1.3),         # x shoulder swing amplitude
            "hip_flexion": rng.uniform(0.9, 1.1),
            "knee_flexion": rng.uniform(0.9, 1.1),
            "segment_scale": {k: rng.uniform(0.97, 1.03) for k in SEGMENT_FRACTIONS},
            "torso_rcs": rng.uniform(0.8, 1.2),
            "limb_rcs": rng.uniform(0.8, 1.2),
            "asymmetry": rng.uniform(0.0, 0.05),        # left-side joint excursions x (1 - asymmetry)
        }
        users.append(_to_builtin(u))
    return users


def _to_builtin(obj):
    if isinstance(obj, dict):
        return {k: _to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_builtin(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# --------------------------------------------------------------------------------------
# Radar return and spectrogram
# --------------------------------------------------------------------------------------

@dataclass
class Spectrogram:
    """STFT power over the whole unambiguous Doppler span, before any colormap.

    db: float32 [n_velocity, n_time], dB relative to its maximum; row 0 is the highest
    (most positive) velocity. velocity: m/s per row; time: s per column; truth: the per-image
    ground truth; radar: the configuration that made it (defines the image axes).
    """

    db: np.ndarray
    velocity: np.ndarray
    time: np.ndarray
    truth: dict
    radar: RadarConfig = field(default_factory=RadarConfig)

    def image_db(self, size: int | None = None) -> np.ndarray:
        """dB on the image grid: rows at image_velocity_axis, columns at image_time_axis."""
        size = size or self.radar.image_size
        power = 10.0 ** (self.db.astype(np.float64) / 10.0)
        step = (self.radar.image_v_top - self.radar.image_v_bottom) / size
        edges = self.radar.image_v_top - np.arange(size + 1) * step
        rows = _area_resample(power, self.velocity, edges)
        if rows.shape[1] != size:
            t_new = image_time_axis(self.radar, size)
            rows = np.stack([np.interp(t_new, self.time, r) for r in rows])
        return (10.0 * np.log10(np.maximum(rows, 1e-30))).astype(np.float32)


def _area_resample(power: np.ndarray, centres: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean power of uniform bins at `centres` over the cells between consecutive `edges`.

    Both axes run in the same direction (descending velocity here); exact for piecewise-constant
    bins, so a cell spanning two FFT bins averages them instead of skipping one.
    """
    step = centres[1] - centres[0]
    src_edges = np.r_[centres - step / 2, centres[-1] + step / 2]
    cum = np.concatenate([np.zeros((1, power.shape[1])), np.cumsum(power, axis=0)])
    pos = np.clip((edges - src_edges[0]) / step, 0, len(centres))
    i = np.minimum(pos.astype(int), len(centres) - 1)
    frac = (pos - i)[:, None]
    at = cum[i] + frac * (cum[i + 1] - cum[i])
    return np.diff(at, axis=0) / np.diff(pos)[:, None]


PER_IMAGE_KEYS = ("speed_mps", "aspect_deg", "start_phase", "snr_db")


def sample_image_params(user: dict, seed: int, radar: RadarConfig = RadarConfig()) -> dict:
    """Within-person variation of one recording: speed, aspect, start phase, SNR."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1A6E]))
    return {
        "speed_mps": float(user["speed_mps"] * rng.normal(1.0, 0.04)),
        "aspect_deg": float(rng.uniform(-10.0, 10.0)),
        "start_phase": float(rng.uniform(0.0, 1.0)),
        "snr_db": float(radar.snr_db + rng.uniform(-3.0, 3.0)),
    }


def simulate_spectrogram(user: dict, seed: int, radar: RadarConfig = RadarConfig(), **overrides) -> Spectrogram:
    """Simulate one recording of `user` and return its dB spectrogram with ground truth.

    `seed` draws the per-image parameters (speed x N(1, 0.04), aspect +-10 deg, start phase,
    SNR +-3 dB) and all noise; `overrides` replace any of speed_mps, aspect_deg, start_phase,
    snr_db.
    """
    unknown = set(overrides) - set(PER_IMAGE_KEYS)
    if unknown:
        raise TypeError(f"unknown per-image parameter(s) {sorted(unknown)}; expected some of {PER_IMAGE_KEYS}")
    params = {**sample_image_params(user, seed, radar), **overrides}
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5C47]))
    lam = radar.wavelength_m
    win = int(round(radar.window_s * radar.prf_hz))
    n = int(round(radar.duration_s * radar.prf_hz)) + win
    # body geometry on a coarser grid (GEOMETRY_DECIMATION pulses apart), phases in between linear
    n_geo = -(-n // GEOMETRY_DECIMATION) + 1
    t_geo = np.arange(n_geo) * GEOMETRY_DECIMATION / radar.prf_hz

    L = segment_lengths(user)
    speed = params["speed_mps"]
    timing = gait_timing(speed, L["thigh"] + L["shank"], user["stride_coef"])
    joints = body_joints(user, speed, params["start_phase"] + t_geo / timing["cycle_s"])

    # world frame: radar at the origin looking along +x; the walker heads towards it (or away) at aspect_deg
    heading_deg = params["aspect_deg"] + (180.0 if radar.towards else 0.0)
    heading = np.deg2rad(heading_deg)
    direction = np.array([np.cos(heading), np.sin(heading), 0.0])
    start = np.array([radar.start_range_m, 0.0, -radar.radar_height_m])
    path = start[:, None] + direction[:, None] * speed * t_geo
    turn = _rotation("z", heading_deg)[:, :, 0]
    world = {k: turn @ v + path for k, v in joints.items()}

    # Ament's roughness factor: a surface of rms height h keeps exp(-(4 pi h / lambda)^2) of its
    # coherent (specular) power at normal incidence; the rest is scattered diffusely.
    specular = math.exp(-(4.0 * math.pi * radar.roughness_m / lam) ** 2)
    amps, ranges, phase0 = [], [], []
    for kind, a_name, b_name in SEGMENTS.values():
        a, b = world[a_name], world[b_name]
        axis = b - a
        length = np.linalg.norm(axis, axis=0)
        mid = 0.5 * (a + b)
        r_mid = np.linalg.norm(mid, axis=0)
        cos_theta = np.sum(axis * mid, axis=0) / (length * r_mid)
        radius, half = ELLIPSOID_RADIUS[kind], 0.5 * length.mean()
        rcs_scale = user["torso_rcs"] if kind in TORSO_KINDS else user["limb_rcs"]
        # two-way spreading: amplitude ~ sqrt(sigma)/R^2, normalised to the start range
        gain = np.sqrt(rcs_scale) * (radar.start_range_m / r_mid) ** 2 * _fading(rng, t_geo, radar)
        # specular return: Chen's ellipsoid RCS at the segment centre
        ranges.append(r_mid[None])
        amps.append((np.sqrt(ellipsoid_rcs(radius, half, cos_theta) * specular) * gain * _beam(mid, radar))[None])
        # diffuse return: glints spread along the segment share the rough-surface RCS
        k = max(2, int(round(radar.glints_per_m * 2 * half)))
        u = (np.arange(k) + rng.uniform(0.0, 1.0, k)) / k         # one glint per stretch of the segment
        w = rng.uniform(0.5, 1.5, k)                              # glints differ, none dominates
        w /= np.sqrt(np.sum(w**2))
        pts = a[:, None, :] + u[None, :, None] * axis[:, None, :]  # (3, k, n_geo)
        ranges.append(np.linalg.norm(pts, axis=0))                 # (k, n_geo)
        amps.append(w[:, None] * np.sqrt(diffuse_rcs(radius, half, cos_theta, radar.diffuse_reflectivity)) * gain
                    * _beam(pts, radar))
        phase0.append(rng.uniform(0, 2 * np.pi, k + 1))
    base = _coherent_sum(np.concatenate(amps), np.concatenate(ranges), np.concatenate(phase0), lam, n)

    x = base
    if radar.clutter_db is not None:
        p_signal = np.mean(np.abs(base) ** 2)
        x = x + np.sqrt(p_signal * 10 ** (radar.clutter_db / 10)) * np.exp(1j * rng.uniform(0, 2 * np.pi))
    # White noise scaled to the walker's own spectrogram: its strongest cell stands snr_db above
    # the mean noise power per cell (a white sample of variance s2 gives s2 * sum(window^2)).
    window = signal.windows.hann(win, sym=False)
    noise_var = _stft_power(base, radar)[0].max() / 10 ** (params["snr_db"] / 10) / np.sum(window**2)
    if radar.iq_image_db is not None:
        # receiver I/Q gain and phase mismatch: a mirrored copy conj(x) at the image rejection ratio
        x = x + 10 ** (radar.iq_image_db / 20) * np.conj(x)
    k = radar.range_bins
    noise = np.sqrt(noise_var / 2) * (rng.standard_normal((k, n)) + 1j * rng.standard_normal((k, n)))
    x = np.concatenate([x[None] + noise[:1], noise[1:]])
    if radar.mti_cutoff_mps is not None:
        sos = signal.butter(4, 2 * radar.mti_cutoff_mps / lam, "highpass", fs=radar.prf_hz, output="sos")
        x = signal.sosfiltfilt(sos, x, axis=-1)
    power, velocity, times = _stft_power(x, radar)
    power = power.mean(0)
    if radar.frames_averaged > 1:
        power = ndimage.uniform_filter1d(power, radar.frames_averaged, axis=1, mode="nearest")
    db = 10.0 * np.log10(np.maximum(power, 1e-30))
    db = (db - db.max()).astype(np.float32)
    toe_v = _peak_toe_velocity(world, t_geo)
    truth = {
        **params,
        "seed": seed,
        "radial_speed_mps": speed * math.cos(np.deg2rad(params["aspect_deg"])),
        "cycle_s": timing["cycle_s"],
        "step_s": timing["cycle_s"] / 2,
        "support_s": timing["support_s"],
        "relative_velocity": timing["rv"],
        "steps_per_image": 2 * radar.duration_s / timing["cycle_s"],
        "peak_toe_doppler_mps": toe_v,
    }
    return Spectrogram(db=db, velocity=velocity, time=times, truth=_to_builtin(truth), radar=radar)


def _beam(points: np.ndarray, radar: RadarConfig) -> np.ndarray:
    """Two-way amplitude gain of the antenna's elevation pattern at points (3, ...) in the radar frame.

    Gaussian main lobe: one-way gain -12 (theta / beamwidth)^2 dB for a full 3 dB beamwidth.
    """
    if radar.elevation_beamwidth_deg is None:
        return np.ones(points.shape[1:])
    elevation = np.degrees(np.arctan2(points[2], np.hypot(points[0], points[1])))
    return 10.0 ** (-24.0 * (elevation / radar.elevation_beamwidth_deg) ** 2 / 20.0)


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, std: float, step_s: float) -> np.ndarray:
    """A slowly varying Gaussian process: N(0, std) knots every step_s, joined linearly."""
    if std <= 0:
        return np.zeros_like(t)
    knots = np.arange(-1, math.ceil(t[-1] / step_s) + 2) * step_s
    return np.interp(t, knots, rng.normal(0.0, std, knots.size))


def _fading(rng: np.random.Generator, t: np.ndarray, radar: RadarConfig) -> np.ndarray:
    """Slow log-normal amplitude fading with std fading_db."""
    return 10.0 ** (_smooth_noise(rng, t, radar.fading_db, radar.fading_time_s) / 20.0)


def _coherent_sum(amp: np.ndarray, ranges: np.ndarray, phase0: np.ndarray, lam: float, n: int) -> np.ndarray:
    """sum_k amp_k exp(j(phase0_k - 4 pi R_k / lambda)) at every pulse, from the coarse grid.

    Amplitude and phase are linear between geometry samples; the phase is reduced modulo 2 pi
    in float64 on the coarse grid so that float32 keeps it exact to ~1e-6 rad in between.
    Works through time in blocks that stay in cache (twice as fast as whole arrays).
    """
    d = GEOMETRY_DECIMATION
    ph = phase0[:, None] - (4.0 * np.pi / lam) * ranges                 # (k, n_geo) float64
    frac = np.arange(d, dtype=np.float32) / d
    out = np.empty((ranges.shape[1] - 1) * d, dtype=np.complex128)
    for s0 in range(0, ranges.shape[1] - 1, 64):
        s1 = min(ranges.shape[1] - 1, s0 + 64)
        p = ph[:, s0:s1 + 1]
        p0 = np.mod(p[:, :-1], 2.0 * np.pi).astype(np.float32)
        phase = (p0[:, :, None] + np.diff(p, axis=1).astype(np.float32)[:, :, None] * frac).reshape(len(p), -1)
        a = amp[:, s0:s1 + 1].astype(np.float32)
        a = (a[:, :-1, None] + np.diff(a, axis=1)[:, :, None] * frac).reshape(len(a), -1)
        out[s0 * d:s1 * d].real = np.einsum("kn,kn->n", a, np.cos(phase))
        out[s0 * d:s1 * d].imag = np.einsum("kn,kn->n", a, np.sin(phase))
    return out[:n]


def _peak_toe_velocity(world: dict, t: np.ndarray) -> float:
    """Largest |Doppler velocity| of either toe (m/s), from the positions (ground truth)."""
    best = 0.0
    for side in "rl":
        r = np.linalg.norm(world[f"{side}_toe"], axis=0)
        best = max(best, float(np.max(np.abs(np.gradient(r, t)))))
    return best


def _stft_power(x: np.ndarray, radar: RadarConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hann STFT power, one frame per image column; rows sorted by descending Doppler velocity.

    x: (..., n) slow-time samples; power: (..., nfft, image_size).
    """
    win = int(round(radar.window_s * radar.prf_hz))
    starts = np.round(np.linspace(0, x.shape[-1] - win, radar.image_size)).astype(int)
    seg = np.lib.stride_tricks.sliding_window_view(x, win, axis=-1)[..., starts, :] * signal.windows.hann(win, sym=False)
    spec = np.fft.fft(seg, n=radar.nfft, axis=-1)                              # (..., frames, nfft)
    # fftshift and the flip to + velocity first as one gather of the bins, after the power: the same values
    # in the same rows, without rolling and flipping the complex array
    rows = np.fft.fftshift(np.arange(radar.nfft))[::-1]
    power = np.swapaxes((spec.real**2 + spec.imag**2)[..., rows], -1, -2)     # rows: + velocity first
    velocity = np.fft.fftshift(np.fft.fftfreq(radar.nfft, 1 / radar.prf_hz))[::-1] * radar.wavelength_m / 2
    times = (starts + win / 2) / radar.prf_hz - radar.window_s / 2
    return power, velocity, times


# --------------------------------------------------------------------------------------
# Image
# --------------------------------------------------------------------------------------

def spectrogram_to_rgb(spec_or_db, dynamic_range_db: float, size: int = 256) -> np.ndarray:
    """Paint a spectrogram with jet (mdgen.spectrogram): dB relative to the image maximum, clipped to the range.

    `spec_or_db` is a Spectrogram (cropped to its image velocity axis) or a dB array already on
    the image grid (rows: positive velocity first). Returns uint8 [size, size, 3], no axes.
    """
    if isinstance(spec_or_db, Spectrogram):
        db = spec_or_db.image_db(size)
    else:
        db = np.asarray(spec_or_db, dtype=np.float64)
        if db.shape != (size, size):
            img = Image.fromarray(db.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR)
            db = np.asarray(img, dtype=np.float64)
    return level_to_rgb(db_to_level(db, dynamic_range_db))


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG with fixed options and no metadata, so equal pixels give equal bytes.

    zlib level 1: much faster than level 6 for files a little larger (noise compresses badly; timings in
    benchmarks/README.md).
    """
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=1, optimize=False)
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------

def image_seed(seed: int, user_index: int, image_index: int) -> int:
    """Per-image seed, independent of process scheduling (keeps parallel runs deterministic)."""
    return int(np.random.SeedSequence([seed, user_index, image_index]).generate_state(1)[0])


def _render(job: tuple) -> dict:
    user, seed, radar, path = job
    spec = simulate_spectrogram(user, seed, radar)
    Path(path).write_bytes(png_bytes(spectrogram_to_rgb(spec, radar.dynamic_range_db, radar.image_size)))
    return spec.truth


def simulate_dataset(out_dir, n_users: int, images_per_user: int, seed: int,
                     radar: RadarConfig = RadarConfig(), progress: bool = True,
                     workers: int | None = None) -> dict:
    """Write out_dir/ID_<n>/<k>.png (n, k from 1) and out_dir/users.json, atomically.

    users.json holds the radar configuration, the image axes and, per user, the personal
    parameters plus the ground truth of each image. Same arguments give identical bytes.
    `workers` processes render in parallel (default: the CPUs available, at most 8).
    Returns a summary: users, images, seconds, seconds per image.
    """
    assert n_users >= 1 and images_per_user >= 1, f"need users and images, got {n_users} x {images_per_user}"
    users = sample_users(n_users, seed)
    if workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = min(8, cpus)
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    with atomic_path(out_dir, folder=True) as tmp:
        jobs = []
        for n, user in enumerate(users, start=1):
            (tmp / user["id"]).mkdir(parents=True)
            for k in range(1, images_per_user + 1):
                jobs.append((user, image_seed(seed, n, k), radar, str(tmp / user["id"] / f"{k}.png")))
        bar = tqdm(total=len(jobs), desc="simulate", unit="img", disable=not progress)
        if workers > 1:
            # spawn: the parent may hold torch/OpenMP threads that a fork would copy mid-state
            ctx = multiprocessing.get_context("spawn")
            with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                truths = []
                for truth in pool.map(_render, jobs, chunksize=8):
                    truths.append(truth)
                    bar.update()
        else:
            truths = []
            for job in jobs:
                truths.append(_render(job))
                bar.update()
        bar.close()

        manifest = {
            "seed": seed,
            "radar": dataclasses.asdict(radar),
            "image_axes": {
                "velocity_mps": {"top": float(image_velocity_axis(radar)[0]),
                                 "bottom": float(image_velocity_axis(radar)[-1]), "rows": radar.image_size,
                                 "zero_row": radar.image_v_top / (radar.image_v_top - radar.image_v_bottom)
                                 * radar.image_size - 0.5},
                "time_s": {"first": 0.0, "last": radar.duration_s, "columns": radar.image_size},
                "sign": "Doppler velocity, positive towards the radar, positive up; walkers "
                        + ("approach" if radar.towards else "move away"),
            },
            "users": [],
        }
        for n, user in enumerate(users):
            images = []
            for k in range(images_per_user):
                truth = truths[n * images_per_user + k]
                images.append({"file": f"{user['id']}/{k + 1}.png", **truth})
            manifest["users"].append({**user, "images": images})
        (tmp / "users.json").write_text(json.dumps(manifest, indent=2) + "\n")
    seconds = time.perf_counter() - t0
    return {"out_dir": str(out_dir), "users": n_users, "images": len(jobs), "seconds": round(seconds, 2),
            "s_per_image": round(seconds / len(jobs), 4), "workers": workers}
