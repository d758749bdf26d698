"""`evaluate` stage: generated samples + the judge + real data -> metrics/evaluate.json, plots/evaluate/.

The six sections (conditional, tstr, distribution, memorisation, kinematics, augmentation) are
`mdgen.scorecard`'s; this reads params, runs them, and writes the metrics and the figures.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from mdgen import params
from mdgen.accel import set_threads
from mdgen.io import details_of, write_headline, write_json
from mdgen.plots import errorbar_panels, image_grid
from mdgen.scorecard import Inputs, evaluate, headline, load_inputs

KEYS = ["seed", "data.image_size", "data.axes", "classifier", "evaluate"]

PLOTS = {
    "accuracy": "accuracy_per_user.json",
    "confusion_data": "confusion.json",
    "confusion_val_data": "confusion_real_val.json",
    "pairs": "closest_pairs.png",
    "kinematics": "kinematics.png",
}


def write_plots(out: Path, d: Inputs, accuracy: dict, pairs: list[tuple[int, int, float]], gait_panels: dict) -> None:
    """plots/evaluate/: the judge's accuracy per person on samples and on real val, the confusion of samples and
    of real val beside it (data that DVC draws and compares between experiments), closest pairs, kinematics."""
    req_users = [d.users[c] for c in d.requested]
    finite = lambda x: float(x) if np.isfinite(x) else None  # noqa: E731 -- a person without val images: no accuracy
    write_json(out / PLOTS["accuracy"], [{"user": u, "generated": finite(g), "real_val": finite(r)}
                                         for u, g, r in zip(req_users, accuracy["generated"], accuracy["real_val"])])
    # the samples' confusion beside the judge's own errors on real images: a sample's confusion is only as
    # telling as the judge's is clean
    for key, true, pred in (("confusion_data", d.y_gen, accuracy["predicted"]),
                            ("confusion_val_data", d.y_val, accuracy["predicted_val"])):
        write_json(out / PLOTS[key], [{"actual": d.users[a], "predicted": d.users[b]}
                                      for a, b in zip(true.tolist(), pred.tolist())])
    image_grid(out / PLOTS["pairs"], [[d.x_gen[g], d.x_train[t]] for g, t, _ in pairs],
               [f"{d.gen_files[g].parent.name}/{d.gen_files[g].name}\nd={dist:.3g}" for g, _, dist in pairs],
               ["generated", "nearest train"], cell=1.8)
    errorbar_panels(out / PLOTS["kinematics"], req_users, gait_panels)


def main(params_path: str = "params.yaml", split_path: str = "data/split.json",
         classifier_path: str = "models/classifier.safetensors", samples_dir: str = "data/samples",
         sifted_dir: str | None = "data/sifted", baselines_path: str | None = "models/classifier_baselines.json",
         metrics_path: str = "metrics/evaluate.json", plots_dir: str = "plots/evaluate",
         details_path: str | None = None) -> dict:
    p = params.read(KEYS, params_path)
    set_threads(p["classifier"].threads)
    t0 = time.perf_counter()

    def say(what: str) -> None:  # a progress line per section: the stage runs for minutes
        print(f"evaluate: {what} ({time.perf_counter() - t0:.0f} s)", flush=True)

    d = load_inputs(p["data.image_size"], split_path, classifier_path, samples_dir, sifted_dir, baselines_path)
    say(f"{len(d.gen_files)} samples ({len(d.x_aug)} kept by `sift`), {len(d.x_train)} real train and "
        f"{len(d.x_val)} real val images loaded")
    metrics, figures = evaluate(d, p["classifier"], p["evaluate"], p["seed"], p["data.image_size"],
                                p["data.axes"], say)
    write_plots(Path(plots_dir), d, figures["accuracy"], figures["pairs"], figures["gait_panels"])
    write_json(details_path or details_of(metrics_path), metrics)
    write_headline(metrics_path, headline(metrics))  # last: the metrics appear only once every plot is written

    conditional, dist, mem, aug = (metrics[k] for k in ("conditional", "distribution", "memorisation", "augmentation"))
    print(f"evaluate: {len(d.gen_files)} samples of {len(d.requested)} users: conditional accuracy "
          f"{conditional['generated_accuracy']:.3f} (real val {conditional['real_val_accuracy']:.3f}); "
          f"TSTR {metrics['tstr']['tstr_accuracy']:.3f} (TRTR {metrics['tstr']['trtr_accuracy']:.3f}); "
          f"FID {dist['fid']:.2f} "
          f"(floor {dist['fid_real_floor']:.2f} +- {dist['fid_real_floor_std']:.2f}); memorised {mem['share']:.3f} "
          f"(expected {mem['expected']:.2f}); augmentation gain "
          + ("; ".join(f"{arm} {aug[arm]['gain_mean']:+.3f} +- {aug[arm]['gain_std']:.3f}" for arm in ("fewshot", "full")
                       if arm in aug) or aug.get("skipped", "none measured")) + "; "
          f"{time.perf_counter() - t0:.1f} s -> {metrics_path}")
    return metrics
