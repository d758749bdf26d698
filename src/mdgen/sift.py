"""Sifting generated spectrograms before they train a classifier: keep a sample only where it is plausibly the
person it was asked for.

Two tests, each with a reason a radar researcher can check:

  judge       -- a classifier that never saw real val (the pipeline's judge: real train only) names the
                 requested person, with at least `min_prob` of its probability;
  kinematics  -- the sample's gait (torso speed, gait cycle, limb envelope: `mdgen.kinematics`) lies within
                 `max_z` standard deviations of the requested person's real train images, in each measure.

Erol, Gurbuz and Amin (2020) sifted kinematically implausible GAN spectrograms out before augmenting and
report the gain only after it; the judge test is the classifier-guided filtering of the same idea. Neither
looks at real val: the thresholds are rules fixed here, not tuned on what they are scored with.

    keep, z = sift(probs, gen_labels, gen_gait, train_gait, train_labels, config)
"""
from __future__ import annotations

import numpy as np

from mdgen.metrics import GAIT_KEYS
from mdgen.params import SiftConfig


def judge_keep(probs: np.ndarray, labels: np.ndarray, min_prob: float) -> np.ndarray:
    """Samples the judge names as their requested person (its argmax) with probability >= min_prob."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    own = probs[np.arange(len(labels)), labels]
    return (probs.argmax(1) == labels) & (own >= min_prob)


def gait_z(gen: dict[str, np.ndarray], gen_labels: np.ndarray, real: dict[str, np.ndarray],
           real_labels: np.ndarray, resolution: dict[str, float]) -> np.ndarray:
    """Per sample, the largest |z| over the gait measures against its person's real train images.

    A person's spread is floored at the measure's resolution (one image row of velocity, one column of time):
    a simulated person walks at a nearly fixed speed, and a std under one row would call a sample one row off
    implausible. A measure that cannot be taken on a sample (NaN) makes it implausible (z = inf); a person
    with fewer than two finite real values is not tested on that measure.
    """
    gen_labels, real_labels = np.asarray(gen_labels), np.asarray(real_labels)
    z = np.zeros(len(gen_labels))
    for key in GAIT_KEYS:
        if key not in gen or key not in real:
            continue
        for c in np.unique(gen_labels):
            ref = real[key][real_labels == c]
            ref = ref[np.isfinite(ref)]
            if len(ref) < 2:
                continue
            mine = gen_labels == c
            zc = np.abs(gen[key][mine] - ref.mean()) / max(ref.std(ddof=1), resolution[key])
            z[mine] = np.maximum(z[mine], np.where(np.isfinite(zc), zc, np.inf))
    return z


def gait_resolution(velocity: np.ndarray, time: np.ndarray) -> dict[str, float]:
    """The finest step of each gait measure on images of these axes: one row of velocity, one column of time."""
    row = abs(float(velocity[0] - velocity[1]))
    return {"torso_speed_mps": row, "envelope_mps": row, "cycle_s": abs(float(time[1] - time[0]))}


def sift(probs: np.ndarray, gen_labels: np.ndarray, gen_gait: dict[str, np.ndarray],
         train_gait: dict[str, np.ndarray], train_labels: np.ndarray, resolution: dict[str, float],
         config: SiftConfig) -> tuple[np.ndarray, np.ndarray]:
    """(keep mask, gait z per sample) under `config.method`: none, judge, kinematics or both."""
    z = gait_z(gen_gait, gen_labels, train_gait, train_labels, resolution)
    keep = np.ones(len(gen_labels), bool)
    if config.method in ("judge", "both"):
        keep &= judge_keep(probs, gen_labels, config.min_prob)
    if config.method in ("kinematics", "both"):
        keep &= z <= config.max_z
    return keep, z
