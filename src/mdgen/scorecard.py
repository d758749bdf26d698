"""The evaluation of a set of generated spectrograms against the real data and the judge: six questions,
each a section of metrics/evaluate.json (`evaluate` runs them, `mdgen.stages.evaluate` writes them).

  conditional   -- does a sample show the requested person? (the judge's top-1, vs on real val)
  tstr          -- can a classifier learn the persons from samples alone? (train on synthetic, test on
                   real val, beside the judge trained on real: TRTR)
  distribution  -- do samples look like real data? (FID/KID/precision/recall/density/coverage
                   in the judge's features, next to the real-vs-real floor)
  memorisation  -- are samples copies of training images?
  kinematics    -- do samples walk like the person? (torso speed, gait cycle, limb envelope)
  augmentation  -- do the (sifted) samples help a classifier on real val, with a few real images per person
                   and with all of them?

The math of each figure is `mdgen.metrics`'; this module gathers the inputs and fills the sections.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mdgen.classifier import Job, SpectrogramResNet, features, fit_and_score, load_classifier, predict
from mdgen.errors import BadFileError, DataError, MissingFileError
from mdgen.images import load_images
from mdgen.io import file_sha256, list_images, list_users, read_json
from mdgen.metrics import (GAIT_KEYS, baseline_scores, compare_gait, density_coverage, fid_floor, frechet_distance,
                           gain_arms, gain_jobs, gain_summary, gait_measures, kernel_inception_distance,
                           memorisation_share, per_class_accuracy, precision_recall)
from mdgen.params import AxesConfig, ClassifierConfig, EvaluateConfig
from mdgen.spectrogram import image_axes
from mdgen.split import files_and_labels, read_split


@dataclass
class Inputs:
    """What every section reads: uint8 images [N, H, W, 3] and labels in the classifier's user order."""
    users: list[str]
    data_dir: str
    model: SpectrogramResNet
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    gen_files: list[Path]
    x_gen: np.ndarray
    y_gen: np.ndarray
    x_aug: np.ndarray   # the samples that train classifiers in `augmentation`: the sifted ones, or all of them
    y_aug: np.ndarray
    judge_sha256: str = ""
    baselines: dict | None = None  # the `classifier` stage's real-only classifiers (`metrics.baseline_record`)

    @property
    def requested(self) -> list[int]:
        """Labels of the users the samples were generated for."""
        return sorted(set(self.y_gen.tolist()))


def load_generated(samples_dir: str | Path, users: list[str],
                   image_size: int) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Files, uint8 images and labels of samples_dir/<user>/*; every user folder must be a classifier user."""
    files, labels = [], []
    for user in list_users(samples_dir):
        if user not in users:
            raise DataError(f"{samples_dir}/{user}: not a user of the real data / classifier ({', '.join(users)})")
        for f in list_images(Path(samples_dir) / user):
            files.append(f)
            labels.append(users.index(user))
    if not files:
        raise MissingFileError(f"{samples_dir} holds no generated images (run the `sample` stage)")
    return files, load_images(files, image_size), np.asarray(labels, dtype=np.int64)


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


def sifted(sifted_dir: str | Path | None, users: list[str], image_size: int, x_gen: np.ndarray,
           y_gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of `sift`'s output (every sample where `sifted_dir` is None); none where it kept none."""
    if sifted_dir is None:
        return x_gen, y_gen
    if not Path(sifted_dir).is_dir():
        raise MissingFileError(f"{sifted_dir}: no such folder (run the `sift` stage)")
    if not any(Path(sifted_dir).iterdir()):
        return x_gen[:0], y_gen[:0]
    _, x, y = load_generated(sifted_dir, users, image_size)
    return x, y


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def load_judge(classifier_path: str | Path, users: list[str]) -> SpectrogramResNet:
    """The judge, which must have been trained for the split's users, in its order."""
    model, meta = load_classifier(classifier_path)
    if meta["users"] != users:
        raise BadFileError(f"{classifier_path} was trained for users {meta['users']}, the split has {users} "
                           "(re-run the `classifier` stage)")
    return model


def load_inputs(image_size: int, split_path: str | Path, classifier_path: str | Path,
                samples_dir: str | Path, sifted_dir: str | Path | None = None,
                baselines_path: str | Path | None = None) -> Inputs:
    """The split's real images, the generated ones (and those `sift` kept: `sifted_dir`, None: all of them), the
    judge, whose users must be the split's, and the real-only classifiers' scores trained beside it
    (`baselines_path`; None or no such file: `evaluate` trains them)."""
    manifest = read_split(split_path)
    users = manifest["users"]
    model = load_judge(classifier_path, users)
    train_files, y_train = files_and_labels(manifest, "train")
    val_files, y_val = files_and_labels(manifest, "val")
    x_train, x_val = load_images(train_files, image_size), load_images(val_files, image_size)
    gen_files, x_gen, y_gen = load_generated(samples_dir, users, image_size)
    baselines = None
    if baselines_path is not None and Path(baselines_path).is_file():
        baselines = read_json(baselines_path)
    return Inputs(users, manifest["data_dir"], model, x_train, y_train.numpy(), x_val, y_val.numpy(),
                  gen_files, x_gen, y_gen, *sifted(sifted_dir, users, image_size, x_gen, y_gen),
                  file_sha256(classifier_path), baselines)


def conditional_accuracy(d: Inputs) -> tuple[dict, dict]:
    """Section `conditional` (classifier top-1 on samples vs on real val), and what its plots draw."""
    n_cls, requested = len(d.users), d.requested
    pred_gen, pred_val = predict(d.model, d.x_gen).argmax(1), predict(d.model, d.x_val).argmax(1)
    acc_gen_u = per_class_accuracy(d.y_gen, pred_gen, n_cls)
    acc_val_u = per_class_accuracy(d.y_val, pred_val, n_cls)
    on_req = np.isin(d.y_val, requested)
    acc_gen, acc_val = float(np.mean(pred_gen == d.y_gen)), float(np.mean(pred_val[on_req] == d.y_val[on_req]))
    section = {
        "generated_accuracy": acc_gen,
        "real_val_accuracy": acc_val,
        "ratio": acc_gen / acc_val if acc_val > 0 else None,
        "generated_images": len(d.gen_files),
        "per_user": {d.users[c]: {"generated": _none_if_nan(acc_gen_u[c]), "real_val": _none_if_nan(acc_val_u[c])}
                     for c in requested},
    }
    plot = {"generated": [acc_gen_u[c] for c in requested], "real_val": [acc_val_u[c] for c in requested],
            "predicted": pred_gen, "predicted_val": pred_val}
    return section, plot


def synthetic_to_real_job(d: Inputs, seed: int) -> Job:
    """The classifier of section `tstr`: the judge's recipe trained on the generated samples alone, scored on the
    requested persons' real val images, all of them and each person's."""
    on_req = np.isin(d.y_val, d.requested)
    tests = {"val": (d.x_val[on_req], d.y_val[on_req]),
             **{f"user_{c}": (d.x_val[d.y_val == c], d.y_val[d.y_val == c]) for c in d.requested}}
    return Job(d.x_gen, d.y_gen, seed, tests)


def synthetic_to_real(d: Inputs, score: dict[str, float], trtr: float) -> dict:
    """Section `tstr` from its classifier's `score` (train on synthetic, test on real), beside the judge itself,
    trained on real train, on the same val images (TRTR: `trtr`)."""
    tstr = score["val"]
    return {"tstr_accuracy": tstr, "trtr_accuracy": trtr, "ratio": tstr / trtr if trtr > 0 else None,
            "train_images": len(d.gen_files), "val_images": int(np.isin(d.y_val, d.requested).sum()),
            "per_user": {d.users[c]: _none_if_nan(score[f"user_{c}"]) for c in d.requested}}


def distribution(d: Inputs, feats: dict[str, np.ndarray], config: EvaluateConfig, seed: int) -> dict:
    """Section `distribution`: FID, KID, precision/recall, density/coverage of samples vs real val in the
    classifier's features, next to the real train-vs-val floors, overall and KID per user."""
    f_train, f_val, f_gen = feats["train"], feats["val"], feats["gen"]
    kid_kw = dict(subsets=config.kid_subsets, subset_size=config.kid_subset_size, seed=seed)
    kid = kernel_inception_distance(f_gen, f_val, **kid_kw)
    kid_floor = kernel_inception_distance(f_train, f_val, **kid_kw)
    fid = frechet_distance(f_gen, f_val)
    floor, floor_std = fid_floor(f_train, f_val, len(f_gen), seed, subsets=config.floor_subsets)
    section = {
        "fid": fid,
        "fid_real_floor": floor, "fid_real_floor_std": floor_std, "fid_ratio": fid / floor if floor > 0 else None,
        "kid": kid["kid"], "kid_std": kid["kid_std"],
        "kid_real_floor": kid_floor["kid"], "kid_real_floor_std": kid_floor["kid_std"],
        **precision_recall(f_val, f_gen, k=config.precision_recall_k),
        **density_coverage(f_val, f_gen, k=config.density_coverage_k),
        "per_user_kid": {},
    }
    for c in d.requested:
        g, v, t = f_gen[d.y_gen == c], f_val[d.y_val == c], f_train[d.y_train == c]
        if min(len(g), len(v), len(t)) >= 2:
            section["per_user_kid"][d.users[c]] = {
                "generated": kernel_inception_distance(g, v, **kid_kw)["kid"],
                "real_floor": kernel_inception_distance(t, v, **kid_kw)["kid"]}
    return section


def memorisation(feats: dict[str, np.ndarray], config: EvaluateConfig) -> tuple[dict, list[tuple[int, int, float]]]:
    """Section `memorisation` (samples nearer a train image than real val usually is), and the closest pairs."""
    mem = memorisation_share(feats["gen"], feats["train"], feats["val"],
                             percentile=config.memorisation_percentile, n_pairs=config.plot_pairs)
    section = {k: mem[k] for k in ("share", "expected", "threshold", "median_gen_to_train", "median_val_to_train")}
    return section, mem["pairs"]


def kinematics(d: Inputs, image_size: int, axes: AxesConfig) -> tuple[dict, dict]:
    """Section `kinematics` (gait measured on samples vs real val, and vs the simulator's truth when there
    is one), and the per-user mean/std panels of its plot. `axes`: those of images without a users.json."""
    velocity, times, sim_manifest, axes_source = image_axes(d.data_dir, image_size, image_size, axes.v_top_mps,
                                                            axes.v_bottom_mps, axes.duration_s)
    sources = {"real": (gait_measures(d.x_val, velocity, times), d.y_val),
               "generated": (gait_measures(d.x_gen, velocity, times), d.y_gen)}
    if sim_manifest is not None:
        sources["truth"] = simulator_truth(sim_manifest, d.users)
    # generated vs real per person; with the simulator's truth also both vs truth (real vs truth is
    # the measurement's own error, the floor for generated vs truth)
    gait = compare_gait(sources, d.users, d.requested, reference="truth" if "truth" in sources else "real")
    if "truth" in sources:
        gait["mae"].update(compare_gait({k: sources[k] for k in ("real", "generated")}, d.users, d.requested,
                                        reference="real")["mae"])
    section = {"axes": axes_source, **gait["mae"],
               "per_user": {u: {f"{name}_{k}": v["mean"] for name, m in row.items() for k, v in m.items()}
                            for u, row in gait["per_user"].items()}}
    req_users = [d.users[c] for c in d.requested]
    panels = {k: {name: ([gait["per_user"][u][name][k]["mean"] for u in req_users],
                         [gait["per_user"][u][name][k]["std"] for u in req_users])
                  for name in sources if k in sources[name][0]} for k in GAIT_KEYS}
    return section, panels


def augmentation_arms(d: Inputs, classifier: ClassifierConfig, config: EvaluateConfig,
                      seed: int) -> dict[str, tuple[dict, list[Job]]]:
    """The classifiers of section `augmentation`, per arm: few-shot (a few real train images per person,
    `evaluate.seeds` draws, `evaluate.fewshot_steps`) and full (every real train image, the judge's recipe,
    `evaluate.full_seeds` seeds; 0 leaves it out), each trained on real images alone and with the (sifted)
    samples `d.x_aug`. Per arm: (its settings, its jobs); none when there is nothing to add. An arm whose
    real-only scores the `classifier` stage kept (`d.baselines`, for this judge and recipe) trains only the
    classifiers with samples, and its settings carry those scores (`baseline`)."""
    if not len(d.x_aug):
        return {}
    arms = gain_arms(seed=seed, fewshot_per_user=config.fewshot_per_user, seeds=config.seeds,
                     fewshot_steps=config.fewshot_steps, full_seeds=config.full_seeds, full_steps=classifier.steps)
    kept = baseline_scores(d.baselines, arms, asdict(classifier), d.judge_sha256)
    return {arm: ({**a, "baseline": kept.get(arm)},
                  gain_jobs(d.x_train, d.y_train, d.x_val, d.y_val, {"samples": (d.x_aug, d.y_aug)},
                            per_user=a["per_user"], seeds=a["seeds"], image_size=classifier.image_size,
                            steps=a["steps"], real_share=config.real_share, real_only=arm not in kept))
            for arm, a in arms.items()}


def augmentation(d: Inputs, arms: dict[str, tuple[dict, list[Job]]], scores: dict[str, list[dict[str, float]]],
                 real_share: float | None) -> dict:
    """Section `augmentation` from the scores of `augmentation_arms`' classifiers, per arm."""
    section = {"generated_images": int(len(d.x_aug)), "real_share": real_share}
    if not len(d.x_aug):  # no gain to measure: said, not a classifier trained on nothing generated
        section["skipped"] = ("`sift` kept no sample (metrics/details/sift.json says why): loosen sift.method, "
                              "sift.min_prob or sift.max_z, or train the DiT longer")
        return section
    for arm, (a, _) in arms.items():
        aug = gain_summary(scores[arm], {"samples": (d.x_aug, d.y_aug)}, per_user=a["per_user"], seeds=a["seeds"],
                           real_share=real_share, real_only_scores=a["baseline"])
        row = aug["sets"]["samples"]
        section[arm] = {
            "real_train_per_user": a["per_user"], "steps": a["steps"],
            "real_only_mean": aug["real_only_mean"], "real_plus_generated_mean": row["accuracy_mean"],
            "gain_mean": row["gain_mean"], "gain_std": row["gain_std"], "gain_ci95": row["gain_ci95"],
            **{k: row[k] for k in ("heldout_gain_mean", "heldout_gain_ci95") if k in row},
            "per_seed": {f"seed_{s}": {"real_only": r, "real_plus_generated": g}
                         for s, r, g in zip(aug["seeds"], aug["real_only"], row["accuracy"])},
        }
    return section


def evaluate(d: Inputs, classifier: ClassifierConfig, config: EvaluateConfig, seed: int, image_size: int,
             axes: AxesConfig, say: Callable[[str], None] = print) -> tuple[dict, dict]:
    """Every section of metrics/evaluate.json, and what the stage's figures draw: `(metrics, figures)`.

    `classifier`: the judge's recipe, which also trains the train-on-synthetic and the few-shot classifiers;
    `say` gets a line as each section starts (the whole takes minutes)."""
    conditional, accuracy = conditional_accuracy(d)
    feats = {part: features(d.model, x) for part, x in (("train", d.x_train), ("val", d.x_val), ("gen", d.x_gen))}
    say("conditional accuracy and judge features done")
    metrics = {"conditional": conditional}
    # every classifier of `tstr` and `augmentation` in one pool (`evaluate.workers` processes)
    arms = augmentation_arms(d, classifier, config, seed)
    jobs = [synthetic_to_real_job(d, seed), *(j for _, arm_jobs in arms.values() for j in arm_jobs)]
    kept = [arm for arm, (a, _) in arms.items() if a["baseline"] is not None]
    say(f"{len(jobs)} classifiers: train on synthetic, test on real; augmentation gain (few-shot: {config.seeds} "
        f"seeds, full: {config.full_seeds} seeds; "
        + (f"the real-only ones of {' and '.join(kept)} from the `classifier` stage)" if kept else "x 2 classifiers)"))
    scores = fit_and_score(jobs, len(d.users), classifier, config.workers, say)
    metrics["tstr"] = synthetic_to_real(d, scores[0], conditional["real_val_accuracy"])
    rest = iter(scores[1:])  # the arms' scores, in the order their jobs went in
    by_arm = {arm: [next(rest) for _ in arm_jobs] for arm, (_, arm_jobs) in arms.items()}
    say("distribution (FID and its floor over train subsets, KID, precision/recall)")
    metrics["distribution"] = distribution(d, feats, config, seed)
    say("memorisation")
    metrics["memorisation"], pairs = memorisation(feats, config)
    say("kinematics")
    metrics["kinematics"], gait_panels = kinematics(d, image_size, axes)
    metrics["augmentation"] = augmentation(d, arms, by_arm, config.real_share)
    return metrics, {"accuracy": accuracy, "pairs": pairs, "gait_panels": gait_panels}


# the names `dvc metrics show` prints for evaluate's headline numbers: short, so that every declared metric of
# the pipeline fits one 200-column row (README "Metrics"); the full names are metrics/details/evaluate.json's
HEADLINE_NAMES = {
    "acc": ("conditional", "generated_accuracy"), "acc_x": ("conditional", "ratio"),
    "tstr": ("tstr", "tstr_accuracy"), "tstr_x": ("tstr", "ratio"),
    "fid": ("distribution", "fid"), "fid_flr": ("distribution", "fid_real_floor"),
    "fid_x": ("distribution", "fid_ratio"),
    "prec": ("distribution", "precision"), "recall": ("distribution", "recall"),
    "memo": ("memorisation", "share"),
}


def headline(metrics: dict) -> dict:
    """The numbers of `evaluate` a researcher compares between runs (`dvc metrics show`), under short names
    (`HEADLINE_NAMES`), without per-person, per-seed, kinematics or count details (those stay in the full set)."""
    out = {name: metrics[section][key] for name, (section, key) in HEADLINE_NAMES.items()}
    # each arm's gain with its interval's lower end: the gain is real where that is above zero
    for arm, short in (("fewshot", "gain"), ("full", "full")):
        a = metrics["augmentation"].get(arm, {})  # absent: no full arm, or nothing sifted to add
        out[short], out[f"{short}_lo"] = a.get("gain_mean"), (a.get("gain_ci95") or (None,))[0]
    return out
