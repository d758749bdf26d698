"""`evaluate` stage: generated samples + the classifier + real data -> metrics/evaluate.json, plots/evaluate/.

Five questions, each a section of the metrics:
  conditional   -- does a sample show the requested person? (classifier top-1, vs real val)
  distribution  -- do samples look like real data? (FID/KID/precision/recall/density/coverage
                   in classifier features, next to the real-vs-real floor)
  memorisation  -- are samples copies of training images?
  kinematics    -- do samples walk like the person? (torso speed, gait cycle, limb envelope)
  augmentation  -- do samples help a few-shot classifier on real val?
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from mdgen import params
from mdgen.classifier import features, load_classifier, load_images, predict
from mdgen.evaluation import (GAIT_KEYS, augmentation_gain, compare_gait, confusion_matrix, density_coverage,
                              fid_floor, frechet_distance, gait_measures, kernel_inception_distance,
                              memorisation_share, per_class_accuracy, precision_recall)
from mdgen.io import list_images, list_users, write_json
from mdgen.plots import confusion_heatmap, errorbar_panels, grouped_bars, image_grid
from mdgen.simulate import RadarConfig, image_time_axis, image_velocity_axis
from mdgen.stages.classifier import RECIPE_KEYS, recipe, set_threads
from mdgen.stages.extract import files_and_labels, read_split

# the classifier recipe (less its length) is read for the few-shot runs of the augmentation gain
KEYS = ["seed", "data.image_size", "classifier.threads", *RECIPE_KEYS, "evaluate.fewshot_per_user",
        "evaluate.fewshot_steps", "evaluate.seeds", "evaluate.kid_subsets", "evaluate.kid_subset_size",
        "evaluate.precision_recall_k", "evaluate.density_coverage_k", "evaluate.memorisation_percentile",
        "evaluate.plot_pairs"]

PLOTS = {
    "accuracy": "accuracy_per_user.png",
    "confusion": "confusion.png",
    "confusion_data": "confusion.json",
    "pairs": "closest_pairs.png",
    "kinematics": "kinematics.png",
}


def load_generated(samples_dir: str | Path, users: list[str],
                   image_size: int) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Files, uint8 images and labels of samples_dir/<user>/*; every user folder must be a classifier user."""
    files, labels = [], []
    for user in list_users(samples_dir):
        if user not in users:
            raise ValueError(f"{samples_dir}/{user}: not a user of the real data / classifier ({', '.join(users)})")
        for f in list_images(Path(samples_dir) / user):
            files.append(f)
            labels.append(users.index(user))
    if not files:
        raise ValueError(f"{samples_dir} holds no generated images (run the `sample` stage)")
    return files, load_images(files, image_size), np.asarray(labels, dtype=np.int64)


def image_axes(data_dir: str | Path, height: int, width: int) -> tuple[np.ndarray, np.ndarray, dict | None, str]:
    """(velocity per row, time per column, users.json or None, source) for images of height x width.

    Simulated data: the axes its users.json records (`image_axes`: row-centre velocities of the
    top and bottom rows, first and last column times), rescaled to the image size. Other data:
    the simulator's default axes are assumed, so absolute numbers are approximate while the
    generated-vs-real comparison stays on one scale.
    """
    manifest_path = Path(data_dir) / "users.json"
    if not manifest_path.is_file():
        radar = RadarConfig()
        return image_velocity_axis(radar, height), image_time_axis(radar, width), None, "assumed (simulator defaults)"
    manifest = json.loads(manifest_path.read_text())
    try:
        v, t = manifest["image_axes"]["velocity_mps"], manifest["image_axes"]["time_s"]
        step = (v["top"] - v["bottom"]) / (v["rows"] - 1)
        top_edge, bottom_edge = v["top"] + step / 2, v["bottom"] - step / 2
        first, last = t["first"], t["last"]
    except (KeyError, TypeError, ZeroDivisionError) as e:
        raise ValueError(f"{manifest_path}: no usable image_axes ({e!r}); "
                         "expected the simulator's users.json") from None
    velocity = top_edge - (np.arange(height) + 0.5) * (top_edge - bottom_edge) / height
    return velocity, np.linspace(first, last, width), manifest, "users.json"


def simulator_truth(sim_manifest: dict, users: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Ground-truth torso speed and gait cycle of every simulated image, as (measures, labels)."""
    speed, cycle, labels = [], [], []
    for u in sim_manifest["users"]:
        if u["id"] in users:
            for im in u["images"]:
                speed.append(im["radial_speed_mps"])
                cycle.append(im["cycle_s"])
                labels.append(users.index(u["id"]))
    return ({"torso_speed_mps": np.array(speed, float), "cycle_s": np.array(cycle, float)},
            np.array(labels, dtype=np.int64))


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def main(params_path: str = "params.yaml", split_path: str = "data/split.json",
         classifier_path: str = "models/classifier.safetensors", samples_dir: str = "data/samples",
         metrics_path: str = "metrics/evaluate.json", plots_dir: str = "plots/evaluate") -> dict:
    p = params.read(KEYS, params_path)
    set_threads(p["classifier.threads"])
    t0 = time.perf_counter()
    manifest = read_split(split_path)
    users = manifest["users"]
    model, meta = load_classifier(classifier_path)
    if meta["users"] != users:
        raise ValueError(f"{classifier_path} was trained for users {meta['users']}, the split has {users} "
                         "(re-run the `classifier` stage)")
    size, n_cls = p["data.image_size"], len(users)
    train_files, y_train = files_and_labels(manifest, "train")
    val_files, y_val = files_and_labels(manifest, "val")
    x_train, x_val = load_images(train_files, size), load_images(val_files, size)
    y_train, y_val = y_train.numpy(), y_val.numpy()
    gen_files, x_gen, y_gen = load_generated(samples_dir, users, size)
    requested = sorted(set(y_gen.tolist()))
    req_users = [users[c] for c in requested]

    # ---- conditional accuracy ---------------------------------------------------------
    pred_gen, pred_val = predict(model, x_gen).argmax(1), predict(model, x_val).argmax(1)
    acc_gen_u = per_class_accuracy(y_gen, pred_gen, n_cls)
    acc_val_u = per_class_accuracy(y_val, pred_val, n_cls)
    on_req = np.isin(y_val, requested)
    acc_gen, acc_val = float(np.mean(pred_gen == y_gen)), float(np.mean(pred_val[on_req] == y_val[on_req]))
    cm = confusion_matrix(y_gen, pred_gen, n_cls)
    conditional = {
        "generated_accuracy": acc_gen,
        "real_val_accuracy": acc_val,
        "ratio": acc_gen / acc_val if acc_val > 0 else None,
        "generated_images": len(gen_files),
        "per_user": {users[c]: {"generated": _none_if_nan(acc_gen_u[c]), "real_val": _none_if_nan(acc_val_u[c])}
                     for c in requested},
    }

    # ---- distribution in classifier features ------------------------------------------
    f_train, f_val, f_gen = features(model, x_train), features(model, x_val), features(model, x_gen)
    kid_kw = dict(subsets=p["evaluate.kid_subsets"], subset_size=p["evaluate.kid_subset_size"], seed=p["seed"])
    kid = kernel_inception_distance(f_gen, f_val, **kid_kw)
    kid_floor = kernel_inception_distance(f_train, f_val, **kid_kw)
    distribution = {
        "fid": frechet_distance(f_gen, f_val),
        "fid_real_floor": fid_floor(f_train, f_val, len(f_gen), p["seed"]),
        "kid": kid["kid"], "kid_std": kid["kid_std"],
        "kid_real_floor": kid_floor["kid"], "kid_real_floor_std": kid_floor["kid_std"],
        **precision_recall(f_val, f_gen, k=p["evaluate.precision_recall_k"]),
        **density_coverage(f_val, f_gen, k=p["evaluate.density_coverage_k"]),
        "per_user_kid": {},
    }
    for c in requested:
        g, v, t = f_gen[y_gen == c], f_val[y_val == c], f_train[y_train == c]
        if min(len(g), len(v), len(t)) >= 2:
            distribution["per_user_kid"][users[c]] = {
                "generated": kernel_inception_distance(g, v, **kid_kw)["kid"],
                "real_floor": kernel_inception_distance(t, v, **kid_kw)["kid"]}

    # ---- memorisation ------------------------------------------------------------------
    mem = memorisation_share(f_gen, f_train, f_val, percentile=p["evaluate.memorisation_percentile"],
                             n_pairs=p["evaluate.plot_pairs"])
    memorisation = {k: mem[k] for k in ("share", "expected", "threshold", "median_gen_to_train", "median_val_to_train")}

    # ---- kinematics --------------------------------------------------------------------
    velocity, times, sim_manifest, axes_source = image_axes(manifest["data_dir"], size, size)
    sources = {"real": (gait_measures(x_val, velocity, times), y_val),
               "generated": (gait_measures(x_gen, velocity, times), y_gen)}
    if sim_manifest is not None:
        sources["truth"] = simulator_truth(sim_manifest, users)
    # generated vs real per person; with the simulator's truth also both vs truth (real vs truth is
    # the measurement's own error, the floor for generated vs truth)
    gait = compare_gait(sources, users, requested, reference="truth" if "truth" in sources else "real")
    if "truth" in sources:
        gait["mae"].update(compare_gait({k: sources[k] for k in ("real", "generated")}, users, requested,
                                        reference="real")["mae"])
    kinematics = {"axes": axes_source, **gait["mae"],
                  "per_user": {u: {f"{name}_{k}": v["mean"] for name, m in row.items() for k, v in m.items()}
                               for u, row in gait["per_user"].items()}}

    # ---- augmentation gain -------------------------------------------------------------
    fewshot_recipe = {**recipe(p), "steps": p["evaluate.fewshot_steps"]}
    aug = augmentation_gain(x_train, y_train, x_val, y_val, x_gen, y_gen, n_cls,
                            fewshot_per_user=p["evaluate.fewshot_per_user"],
                            seeds=[p["seed"] + i for i in range(p["evaluate.seeds"])], recipe=fewshot_recipe)
    augmentation = {k: v for k, v in aug.items() if not isinstance(v, list)}
    augmentation["per_seed"] = {f"seed_{s}": {"real_only": a, "real_plus_generated": b}
                                for s, a, b in zip(aug["seeds"], aug["real_only"], aug["real_plus_generated"])}

    metrics = {"conditional": conditional, "distribution": distribution, "memorisation": memorisation,
               "kinematics": kinematics, "augmentation": augmentation,
               "wall_s": round(time.perf_counter() - t0, 1)}

    # ---- plots -------------------------------------------------------------------------
    out = Path(plots_dir)
    grouped_bars(out / PLOTS["accuracy"], req_users,
                 {"real val": [acc_val_u[c] for c in requested], "generated": [acc_gen_u[c] for c in requested]},
                 ylabel="classifier top-1", title="identification accuracy per user")
    confusion_heatmap(out / PLOTS["confusion"], cm, users, title="generated samples: requested vs predicted user",
                      ylabel="requested")
    write_json(out / PLOTS["confusion_data"], [{"actual": users[a], "predicted": users[b]}
                                               for a, b in zip(y_gen.tolist(), pred_gen.tolist())])
    image_grid(out / PLOTS["pairs"], [[x_gen[g], x_train[t]] for g, t, _ in mem["pairs"]],
               [f"{gen_files[g].parent.name}/{gen_files[g].name}\nd={d:.3g}" for g, _, d in mem["pairs"]],
               ["generated", "nearest train"], cell=1.8)
    errorbar_panels(out / PLOTS["kinematics"], req_users,
                    {k: {name: ([gait["per_user"][u][name][k]["mean"] for u in req_users],
                                [gait["per_user"][u][name][k]["std"] for u in req_users])
                         for name in sources if k in sources[name][0]} for k in GAIT_KEYS})
    write_json(metrics_path, metrics)  # last: the metrics appear only once every plot is written

    print(f"evaluate: {len(gen_files)} samples of {len(requested)} users: conditional accuracy {acc_gen:.3f} "
          f"(real val {acc_val:.3f}); FID {distribution['fid']:.2f} (floor {distribution['fid_real_floor']:.2f}); "
          f"memorised {memorisation['share']:.3f} (expected {memorisation['expected']:.2f}); few-shot gain "
          f"{aug['gain_mean']:+.3f} +- {aug['gain_std']:.3f}; {metrics['wall_s']} s -> {metrics_path}")
    return metrics
