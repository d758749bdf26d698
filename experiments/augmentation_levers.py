"""The levers of the augmentation experiment, measured one at a time on a finished run: how many samples per
person, sifting (judge, kinematics, both), the real share of each batch, and the guidance scale the samples were
drawn with (one pool of samples per scale, made beforehand with `mdgen sample` and its own params file).

    python experiments/augmentation_levers.py --pool cfg1.5=/tmp/pool15 --pool cfg3=/tmp/pool3 \\
        --per-user 24 48 96 --sift none judge kinematics both --real-share none 0.5 --arm fewshot --seeds 6

Run in a repository after `dvc repro` (it reads params.yaml, data/split.json, models/classifier.safetensors).
Each pool's first `per-user` images of each person (by file name) are used. Prints one row per lever setting:
mean accuracy on real val, the paired gain with its 95 % interval, and the gain on the real train images left
out of the few-shot draw -- the figure a lever is chosen on, since real val must never choose anything.
"""
import argparse
import itertools
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mdgen import params
from mdgen.accel import set_threads
from mdgen.classifier import predict
from mdgen.metrics import augmentation_gain, gait_measures
from mdgen.params import SiftConfig
from mdgen.scorecard import load_generated, load_inputs
from mdgen.sift import gait_resolution, sift
from mdgen.spectrogram import image_axes


def first_per_user(labels: np.ndarray, n: int) -> np.ndarray:
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:n] for c in np.unique(labels)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", action="append", required=True, help="name=samples_dir (one per guidance scale)")
    ap.add_argument("--per-user", type=int, nargs="+", default=[24])
    ap.add_argument("--sift", nargs="+", default=["none"], choices=["none", "judge", "kinematics", "both"])
    ap.add_argument("--min-prob", type=float, default=0.0)
    ap.add_argument("--max-z", type=float, default=3.0)
    ap.add_argument("--real-share", nargs="+", default=["none"])
    ap.add_argument("--arm", choices=["fewshot", "full"], default="fewshot")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--workers", type=int, default=1, help="classifiers trained side by side")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    p = params.load("params.yaml")
    set_threads(p.classifier.threads)
    size = p.data.image_size
    d = load_inputs(size, "data/split.json", "models/classifier.safetensors",
                    args.pool[0].split("=", 1)[1])
    velocity, times, _, _ = image_axes(d.data_dir, size, size, p.data.axes.v_top_mps, p.data.axes.v_bottom_mps,
                                       p.data.axes.duration_s)
    resolution = gait_resolution(velocity, times)
    t0 = time.perf_counter()
    train_gait = gait_measures(d.x_train, velocity, times)
    print(f"gait of {len(d.x_train)} train images: {time.perf_counter() - t0:.0f} s", flush=True)

    generated = {}
    for pool in args.pool:
        name, folder = pool.split("=", 1)
        _, x, y = load_generated(folder, d.users, size)
        probs, gait = predict(d.model, x), gait_measures(x, velocity, times)
        for n, method in itertools.product(args.per_user, args.sift):
            take = first_per_user(y, n)
            keep, _ = sift(probs[take], y[take], {k: v[take] for k, v in gait.items()}, train_gait, d.y_train,
                           resolution, SiftConfig(method, args.min_prob, args.max_z))
            generated[f"{name} {n}/person sift={method}"] = (x[take][keep], y[take][keep])
            print(f"{name} {n}/person sift={method}: kept {keep.sum()} of {len(take)}", flush=True)

    fewshot = args.arm == "fewshot"
    clf = replace(p.classifier, steps=p.evaluate.fewshot_steps) if fewshot else p.classifier
    rows = []
    for share in args.real_share:
        share = None if share == "none" else float(share)
        t0 = time.perf_counter()
        res = augmentation_gain(d.x_train, d.y_train, d.x_val, d.y_val, generated, len(d.users), workers=args.workers,
                                per_user=p.evaluate.fewshot_per_user if fewshot else None,
                                seeds=[p.seed + i for i in range(args.seeds)], classifier=clf, real_share=share)
        print(f"real share {share}: {time.perf_counter() - t0:.0f} s", flush=True)
        for name, r in res["sets"].items():
            rows.append({"set": name, "real_share": share, "real_only": res["real_only_mean"], **r})
    print(f"\n{args.arm} arm, {args.seeds} seeds\n| samples | real share | kept | real only | + samples | gain | 95 % "
          "interval | held-out train gain |\n|---|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        ci = r["gain_ci95"] or [float("nan")] * 2
        held = r.get("heldout_gain_mean")
        print(f"| {r['set']} | {r['real_share'] or '-'} | {r['generated_images']} | {r['real_only']:.3f} | "
              f"{r['accuracy_mean']:.3f} | {r['gain_mean']:+.3f} | [{ci[0]:+.3f}, {ci[1]:+.3f}] | "
              f"{'-' if held is None else f'{held:+.3f}'} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
