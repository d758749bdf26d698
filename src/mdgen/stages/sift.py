"""`sift` stage: data/samples + the judge + real train -> data/sifted/ID_<n>/*.png, metrics/details/sift.json.

The samples `sift.method` keeps (mdgen.sift), copied under their own names, for training classifiers: the
augmentation experiment of `evaluate` reads them, and so can yours. It reads real train images only, never
real val. `mdgen sift --samples DIR --out DIR` sifts other samples the same way.
"""
from __future__ import annotations

import shutil

import numpy as np

from mdgen import params
from mdgen.accel import set_threads
from mdgen.classifier import predict
from mdgen.images import load_images
from mdgen.io import atomic_path, exclusive_writer, write_json
from mdgen.metrics import gait_measures
from mdgen.scorecard import load_generated, load_judge
from mdgen.sift import gait_resolution, sift
from mdgen.spectrogram import image_axes
from mdgen.split import files_and_labels, read_split

KEYS = ["data.image_size", "data.axes", "classifier.threads", "sift"]


def main(params_path: str = "params.yaml", samples_dir: str = "data/samples", out_dir: str = "data/sifted",
         split_path: str = "data/split.json", classifier_path: str = "models/classifier.safetensors",
         details_path: str = "metrics/details/sift.json") -> dict:
    p = params.read(KEYS, params_path)
    config, size, axes = p["sift"], p["data.image_size"], p["data.axes"]
    set_threads(p["classifier.threads"])
    manifest = read_split(split_path)
    users = manifest["users"]
    model = load_judge(classifier_path, users)
    files, x_gen, y_gen = load_generated(samples_dir, users, size)
    train_files, y_train = files_and_labels(manifest, "train")
    velocity, times, _, _ = image_axes(manifest["data_dir"], size, size, axes.v_top_mps, axes.v_bottom_mps,
                                       axes.duration_s)
    probs = predict(model, x_gen)
    gen_gait = gait_measures(x_gen, velocity, times)
    train_gait = gait_measures(load_images(train_files, size), velocity, times)
    keep, z = sift(probs, y_gen, gen_gait, train_gait, y_train.numpy(), gait_resolution(velocity, times), config)

    with exclusive_writer(out_dir), atomic_path(out_dir, folder=True) as tmp:
        tmp.mkdir()
        for f, k in zip(files, keep):
            if k:
                (tmp / f.parent.name).mkdir(exist_ok=True)
                shutil.copyfile(f, tmp / f.parent.name / f.name)
    named = probs.argmax(1) == y_gen
    details = {
        "method": config.method, "min_prob": config.min_prob, "max_z": config.max_z,
        "samples": len(files), "kept": int(keep.sum()),
        "judge_names_requested": int(named.sum()), "gait_within_max_z": int((z <= config.max_z).sum()),
        "per_user": {users[c]: {"samples": int((y_gen == c).sum()), "kept": int(keep[y_gen == c].sum())}
                     for c in sorted(set(y_gen.tolist()))},
        "dropped": {f"{f.parent.name}/{f.name}": {"judge_prob": round(float(probs[i, y_gen[i]]), 4),
                                                  "gait_z": round(float(z[i]), 2) if np.isfinite(z[i]) else None}
                    for i, f in enumerate(files) if not keep[i]},
    }
    write_json(details_path, details)
    print(f"sift: kept {details['kept']} of {len(files)} samples ({config.method}; the judge names "
          f"{details['judge_names_requested']} right, {details['gait_within_max_z']} walk within {config.max_z:g} "
          f"std of their person) -> {out_dir}")
    return details
