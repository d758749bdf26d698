"""How good are generated spectrograms: identity, distribution, memorisation, kinematics, usefulness.

Feature metrics run in the penultimate space of the identification classifier
(`mdgen.classifier.features`), not Inception's: ImageNet features say little about
micro-Doppler, while this space is built to separate the people we generate. Numbers are
therefore comparable across runs that share the classifier, not with published FIDs.

All functions take plain arrays (features float [N, D], uint8 images [N, H, W, 3], integer
labels) and return plain dicts/floats; the `evaluate` stage wires them to files.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from mdgen.classifier import Job, fit_and_score, resize_images
from mdgen.errors import DataError
from mdgen.kinematics import measure_gait
from mdgen.params import ClassifierConfig
from mdgen.spectrogram import jet_to_level

# --------------------------------------------------------------------------------------
# Distribution metrics in feature space
# --------------------------------------------------------------------------------------


def _check_feats(*feats: np.ndarray, min_n: int = 2) -> list[np.ndarray]:
    out = [np.asarray(f, dtype=np.float64) for f in feats]
    for f in out:
        if f.ndim != 2 or f.shape[0] < min_n:
            raise ValueError(f"expected features [N >= {min_n}, D], got shape {f.shape}")
    if len({f.shape[1] for f in out}) != 1:
        raise ValueError(f"feature dimensions differ: {[f.shape[1] for f in out]}")
    return out


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a (numerically) positive semi-definite matrix."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID formula: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
    symmetric PSD matrix S_a^(1/2) S_b S_a^(1/2) (same spectrum as S_a S_b). Unlike
    scipy.linalg.sqrtm this stays real and exact when N < D leaves the covariances singular,
    which is the normal case here (~100 samples, 128-256 features).
    """
    a, b = _check_feats(feats_a, feats_b)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ra = _sqrt_psd(sa)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(ra @ sb @ ra), 0, None)).sum()
    return float(max(mu @ mu + np.trace(sa) + np.trace(sb) - 2 * cross, 0.0))


def fid_floor(train_feats: np.ndarray, val_feats: np.ndarray, n: int, seed: int, subsets: int = 1) -> tuple[float, float]:
    """FID of real train vs real val with `n` train samples: the floor for `n` generated ones, as (mean, std)
    over up to `subsets` disjoint train subsets of `n` (one seeded permutation; fewer when train is short).

    FID is biased by the sample count, so the floor takes as many train samples as there are generated;
    one draw of them moves the floor by as much as the generated FID moves with the sampling seed.
    """
    rng = np.random.default_rng(seed)
    n = min(len(train_feats), n)
    order = rng.permutation(len(train_feats))
    k = max(1, min(subsets, len(train_feats) // n))
    values = [frechet_distance(train_feats[np.sort(order[i * n:(i + 1) * n])], val_feats) for i in range(k)]
    return float(np.mean(values)), float(np.std(values))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** degree
    kyy = (y @ y.T / d + 1) ** degree
    kxy = (x @ y.T / d + 1) ** degree
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_inception_distance(feats_a: np.ndarray, feats_b: np.ndarray, *, subsets: int = 100,
                              subset_size: int = 1000, degree: int = 3, seed: int = 0) -> dict:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y/d + 1)^3, over random subsets.

    Each of `subsets` draws min(subset_size, N_a, N_b) points from each set without
    replacement; returns the mean and std over subsets. Unbiased, so it can go slightly
    negative, and its expectation is 0 when both sets come from one distribution, whatever N.
    """
    a, b = _check_feats(feats_a, feats_b)
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    vals = np.array([_mmd2_unbiased(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)],
                                    degree) for _ in range(subsets)])
    return {"kid": float(vals.mean()), "kid_std": float(vals.std()), "subset_size": m}


def _kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point to its k-th nearest other point of the same set."""
    if len(x) <= k:
        raise DataError(f"need more than k={k} points for k-NN radii, got {len(x)}")
    d = cdist(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    Each set's manifold is the union of balls around its points with radius the distance to
    the k-th nearest neighbour in that set. Precision: share of fake points inside the real
    manifold (fidelity). Recall: share of real points inside the fake manifold (diversity).
    """
    real, fake = _check_feats(real, fake)
    r_real, r_fake = _kth_neighbour_radius(real, k), _kth_neighbour_radius(fake, k)
    d = cdist(fake, real)  # (fake, real)
    precision = np.mean((d <= r_real[None, :]).any(axis=1))
    recall = np.mean((d <= r_fake[:, None]).any(axis=0))
    return {"precision": float(precision), "recall": float(recall)}


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict:
    """Density and coverage (Naeem et al. 2020), with balls around the real points only.

    Density: mean number of real balls containing each fake point, over k (about 1 when the
    distributions match, above 1 when fakes crowd into dense real regions; robust to real
    outliers, unlike precision). Coverage: share of real points whose ball holds a fake point.
    """
    real, fake = _check_feats(real, fake)
    r_real = _kth_neighbour_radius(real, k)
    inside = cdist(fake, real) <= r_real[None, :]  # (fake, real)
    return {"density": float(inside.sum() / (k * len(fake))), "coverage": float(inside.any(axis=0).mean())}


# --------------------------------------------------------------------------------------
# Memorisation
# --------------------------------------------------------------------------------------

def memorisation_share(gen_feats: np.ndarray, train_feats: np.ndarray, val_feats: np.ndarray,
                       percentile: float = 5.0, n_pairs: int = 8) -> dict:
    """Share of generated samples closer to their nearest train sample than real unseen data usually is.

    The threshold is the `percentile` of the nearest-train distances of real val samples:
    fresh real recordings of the same people fall below it `percentile` % of the time, so a
    generator that makes new samples should score about percentile/100 (`expected`), and one
    that copies its training set scores far more. Returns the share, the threshold, and the
    `n_pairs` closest (generated index, train index, distance) pairs, closest first.
    """
    gen, train, val = _check_feats(gen_feats, train_feats, val_feats, min_n=1)
    d_val = cdist(val, train).min(axis=1)
    threshold = float(np.percentile(d_val, percentile))
    d_gen = cdist(gen, train)
    nearest = d_gen.argmin(axis=1)
    dist = d_gen[np.arange(len(gen)), nearest]
    order = np.argsort(dist, kind="stable")[:n_pairs]
    return {
        "share": float(np.mean(dist < threshold)),
        "expected": percentile / 100.0,
        "threshold": threshold,
        "median_gen_to_train": float(np.median(dist)),
        "median_val_to_train": float(np.median(d_val)),
        "pairs": [(int(i), int(nearest[i]), float(dist[i])) for i in order],
    }


# --------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------

def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts int64 [num_classes, num_classes]: row = true (requested) class, column = predicted."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(true, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Top-1 accuracy per true class (NaN for a class without samples)."""
    cm = confusion_matrix(true, pred, num_classes)
    n = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.diag(cm) / np.maximum(n, 1), np.nan)


# --------------------------------------------------------------------------------------
# Kinematics
# --------------------------------------------------------------------------------------

GAIT_KEYS = ("torso_speed_mps", "cycle_s", "envelope_mps")


def gait_measures(images: np.ndarray, velocity: np.ndarray, time: np.ndarray) -> dict[str, np.ndarray]:
    """Per image: torso speed |torso Doppler velocity|, gait cycle and limb envelope (mdgen.kinematics).

    Images whose gait cycle cannot be measured (too short an axis) raise, naming the reason;
    a generated image that is noise still gets numbers -- wrong ones, which is the point.
    """
    out = {k: [] for k in GAIT_KEYS}
    for im in images:
        m = measure_gait(jet_to_level(im), velocity, time)
        out["torso_speed_mps"].append(abs(m.torso_velocity))
        out["cycle_s"].append(m.cycle_s)
        out["envelope_mps"].append(m.envelope_mps)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def _mean_std(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return {"mean": float(values.mean()), "std": float(values.std())} if len(values) else {"mean": None, "std": None}


def compare_gait(sources: dict[str, tuple[dict[str, np.ndarray], np.ndarray]], users: list[str],
                 classes: list[int], reference: str = "real") -> dict:
    """Per-user mean and std of each gait measure for each source, and how far each source is from `reference`.

    `sources` maps a name (e.g. real, generated, truth) to (measures as `gait_measures` returns,
    labels); a source may lack some measures (the simulator's truth has no limb envelope).
    `mae` holds, per source other than the reference and per measure, the mean over users of
    |source mean - reference mean|: how well the per-person gait is reproduced.
    """
    per_user = {users[c]: {name: {k: _mean_std(v[lab == c]) for k, v in meas.items()}
                           for name, (meas, lab) in sources.items()} for c in classes}
    ref_meas = sources[reference][0]
    mae = {}
    for name, (meas, _) in sources.items():
        if name == reference:
            continue
        for k in meas:
            if k not in ref_meas:
                continue
            d = [abs(per_user[u][name][k]["mean"] - per_user[u][reference][k]["mean"]) for u in per_user
                 if per_user[u][name][k]["mean"] is not None and per_user[u][reference][k]["mean"] is not None]
            mae[f"{k}_mae_{name}_vs_{reference}"] = float(np.mean(d)) if d else None
    return {"per_user": per_user, "mae": mae}


# --------------------------------------------------------------------------------------
# Augmentation gain
# --------------------------------------------------------------------------------------

def fewshot_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """`per_class` indices of each class (all of a class that has fewer), drawn with `seed`, sorted."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picks.append(rng.choice(idx, min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(picks))


def mix_real(x_real: np.ndarray, y_real: np.ndarray, x_gen: np.ndarray, y_gen: np.ndarray,
             real_share: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Real and generated images as one training set. `real_share`: the share of real images a batch should
    hold, reached by repeating the real ones a whole number of times (at least once; None: each image once).
    Repetition keeps the classifier's epoch walk unchanged, only what an epoch holds."""
    reps = 1
    if real_share is not None and len(x_gen) and len(x_real):
        reps = max(1, round(real_share / (1.0 - real_share) * len(x_gen) / len(x_real)))
    return (np.concatenate([x_real] * reps + [x_gen]),
            np.concatenate([np.asarray(y_real)] * reps + [np.asarray(y_gen)]))


def gain_arms(*, seed: int, fewshot_per_user: int, seeds: int, fewshot_steps: int, full_seeds: int,
              full_steps: int) -> dict[str, dict]:
    """The two arms of the augmentation experiment: per arm its real train images per person (None: all), its
    seeds (from `seed` on) and steps. few-shot: `fewshot_per_user` images, `seeds` draws, `fewshot_steps`; full:
    every image, `full_seeds` seeds, `full_steps` (the judge's recipe). An arm of no seeds is left out."""
    arms = {"fewshot": dict(per_user=fewshot_per_user, seeds=[seed + i for i in range(seeds)], steps=fewshot_steps),
            "full": dict(per_user=None, seeds=[seed + i for i in range(full_seeds)], steps=full_steps)}
    return {arm: a for arm, a in arms.items() if a["seeds"]}


def baseline_record(arms: dict[str, dict], scores: dict[str, list[dict[str, float]]], recipe: dict,
                    judge_sha256: str) -> dict:
    """What the `classifier` stage keeps of the arms' real-only classifiers (`gain_jobs` without samples: they
    depend on real data alone) so that `evaluate` trains only the ones with samples: the recipe, per arm its
    settings and each seed's scores, and the judge trained beside them (by its file's hash), whose data they share."""
    return {"judge_sha256": judge_sha256, "classifier": recipe,
            "arms": {arm: {"per_user": a["per_user"], "steps": a["steps"],
                           "scores": {str(sd): sc for sd, sc in zip(a["seeds"], scores[arm])}}
                     for arm, a in arms.items()}}


def baseline_scores(record: dict | None, arms: dict[str, dict], recipe: dict,
                    judge_sha256: str) -> dict[str, list[dict[str, float]]]:
    """The real-only scores `record` (`baseline_record`) holds for `arms`, per arm and seed in order: only arms
    whose settings it has and every seed of them, and none when it came with another judge or recipe."""
    if not record or record.get("judge_sha256") != judge_sha256 or record.get("classifier") != recipe:
        return {}
    out = {}
    for arm, a in arms.items():
        kept = record.get("arms", {}).get(arm)
        if kept and kept["per_user"] == a["per_user"] and kept["steps"] == a["steps"] \
                and all(str(sd) in kept["scores"] for sd in a["seeds"]):
            out[arm] = [kept["scores"][str(sd)] for sd in a["seeds"]]
    return out


def gain_jobs(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray, val_labels: np.ndarray,
              generated: dict[str, tuple[np.ndarray, np.ndarray]], *, per_user: int | None, seeds: list[int],
              image_size: int, steps: int | None = None, real_share: float | None = None,
              real_only: bool = True) -> list[Job]:
    """The classifiers of `augmentation_gain`, seed by seed, each seed's real only first and then one per set of
    `generated`; `gain_summary` reads their scores back. Images are resized to `image_size` once, here.
    `real_only` False: without the real-only ones, whose scores the caller has (`baseline_scores`)."""
    if len(seeds) < 1:
        raise ValueError("augmentation_gain: need at least one seed")
    train_labels, val_labels = np.asarray(train_labels), np.asarray(val_labels)
    train_images, val_images = resize_images(train_images, image_size), resize_images(val_images, image_size)
    generated = {k: (resize_images(x, image_size), np.asarray(y)) for k, (x, y) in generated.items()}
    jobs = []
    for seed in seeds:
        idx = (np.arange(len(train_labels)) if per_user is None
               else fewshot_indices(train_labels, per_user, seed))
        rest = np.setdiff1d(np.arange(len(train_labels)), idx)
        tests = {"val": (val_images, val_labels)}
        if len(rest):
            tests["heldout"] = (train_images[rest], train_labels[rest])
        x, y = train_images[idx], train_labels[idx]
        sets = [(x, y)] if real_only else []
        sets += [mix_real(x, y, xg, yg, real_share) for xg, yg in generated.values()]
        jobs += [Job(xs, ys, seed, tests, steps) for xs, ys in sets]
    return jobs


def gain_summary(scores: list[dict[str, float]], generated: dict[str, tuple[np.ndarray, np.ndarray]], *,
                 per_user: int | None, seeds: list[int], real_share: float | None = None,
                 real_only_scores: list[dict[str, float]] | None = None) -> dict:
    """`augmentation_gain`'s figures from the scores of `gain_jobs`' classifiers (`fit_and_score`, in job order);
    `real_only_scores`: the real-only classifiers' scores, one per seed, when `gain_jobs` left them out."""
    if real_only_scores is not None:
        k = len(generated)
        scores = [s for seed_scores in zip(real_only_scores, *(scores[i::k] for i in range(k))) for s in seed_scores]
    names = ["real_only", *generated]
    if len(scores) != len(seeds) * len(names):
        raise ValueError(f"gain_summary: {len(scores)} scores for {len(seeds)} seeds x {len(names)} training sets")
    runs = {name: {"val": [], "heldout": []} for name in names}
    for i, score in enumerate(scores):  # jobs run seed by seed, each seed's in `names` order
        for part, acc in score.items():
            runs[names[i % len(names)]][part].append(acc)
    base = {k: np.array(v) for k, v in runs["real_only"].items()}
    out = {"per_user": per_user, "seeds": [int(s) for s in seeds], "real_share": real_share,
           "real_only": base["val"].tolist(), "real_only_mean": float(base["val"].mean()), "sets": {}}
    for name, (xg, _) in generated.items():
        acc = {k: np.array(v) for k, v in runs[name].items()}
        gain = acc["val"] - base["val"]
        row = {"generated_images": int(len(xg)), "accuracy": acc["val"].tolist(),
               "accuracy_mean": float(acc["val"].mean()),
               "gain_mean": float(gain.mean()), "gain_std": float(gain.std()), "gain_ci95": _t_interval(gain)}
        if len(base["heldout"]):
            held = acc["heldout"] - base["heldout"]
            row.update(heldout_gain_mean=float(held.mean()), heldout_gain_ci95=_t_interval(held))
        out["sets"][name] = row
    return out


def augmentation_gain(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray,
                      val_labels: np.ndarray, generated: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int,
                      *, per_user: int | None, seeds: list[int], classifier: ClassifierConfig,
                      real_share: float | None = None, workers: int = 1, say=None) -> dict:
    """Do generated samples help a classifier on real val, beside the same classifier on real images alone?

    Per seed: take `per_user` real train images per user (drawn with the seed; None: every train image, the
    full arm), train a classifier as `classifier` says on them alone, and on them plus each set of
    `generated` ({name: (images, labels)}, mixed by `real_share`: `mix_real`), and test each on real val.
    Every arm takes the same optimiser steps and seed, so the difference is the data. The few-shot arm also
    scores every classifier on the real train images left out of the draw (`heldout_*`): what a choice of
    samples, sifting or mix can be judged on without looking at real val. `workers`: classifiers trained side
    by side (`mdgen.classifier.fit_and_score`); `say`: a line per classifier. (`gain_jobs` and `gain_summary`
    are its two halves, for a caller that trains these classifiers in one pool with others.)

    Returns per set: per-seed accuracies, the mean of each arm, and the paired gain's mean, (population) std
    and 95 % Student-t interval over the seeds (null for one seed).
    """
    jobs = gain_jobs(train_images, train_labels, val_images, val_labels, generated, per_user=per_user, seeds=seeds,
                     image_size=classifier.image_size, real_share=real_share)
    scores = fit_and_score(jobs, num_classes, classifier, workers, say)
    return gain_summary(scores, generated, per_user=per_user, seeds=seeds, real_share=real_share)


def _t_interval(x: np.ndarray, level: float = 0.95) -> list[float] | None:
    """Student-t interval of the mean of `x` (sample std): the seeds are few, so not the normal 1.96."""
    if len(x) < 2:
        return None
    from scipy import stats

    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return [float(x.mean() - half), float(x.mean() + half)]
