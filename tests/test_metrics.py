import json

import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from mdgen.metrics import (augmentation_gain, mix_real, compare_gait, confusion_matrix, density_coverage, fewshot_indices,
                              frechet_distance, gait_measures, kernel_inception_distance,
                              memorisation_share, per_class_accuracy, precision_recall)
from mdgen.io import write_json
from tests.conftest import REPO
from mdgen.kinematics import measure_gait
from mdgen.simulate import image_time_axis, image_velocity_axis, sample_users, simulate_spectrogram, spectrogram_to_rgb
from mdgen.spectrogram import JET_LUT, jet_to_level
from mdgen.split import make_split
from tests.conftest import split_config, write_params


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread beats two (conftest)


def gauss(n, d=16, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(shift, 1.0, (n, d))


# --------------------------------------------------------------------------------------
# Feature metrics
# --------------------------------------------------------------------------------------

def test_fid_zero_on_itself_and_floor_below_noise():
    a, b = gauss(400, seed=0), gauss(400, seed=1)
    noise = gauss(400, shift=1.0, seed=2) * 2
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    floor = frechet_distance(a, b)
    assert floor < 0.2 * frechet_distance(a, noise)


def test_floor_averages_disjoint_subsets():
    from mdgen.metrics import fid_floor

    train, val = gauss(300, d=8, seed=0), gauss(100, d=8, seed=1)
    one, zero_std = fid_floor(train, val, 100, seed=0, subsets=1)
    mean, std = fid_floor(train, val, 100, seed=0, subsets=5)   # only 3 disjoint subsets of 100 fit in 300
    assert zero_std == 0.0 and std > 0 and mean != one
    assert fid_floor(train, val, 100, seed=0, subsets=3) == (mean, std)


def test_fid_matches_sqrtm_when_covariances_are_full_rank():
    a, b = gauss(300, d=6, seed=0), gauss(300, d=6, shift=0.3, seed=1) @ np.diag([1, 2, 1, 1, 0.5, 1])
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(sa + sb - 2 * scipy.linalg.sqrtm(sa @ sb).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)


def test_fid_stays_finite_with_fewer_samples_than_dimensions():
    assert np.isfinite(frechet_distance(gauss(20, d=64, seed=0), gauss(20, d=64, seed=1)))


def test_kid_unbiased_near_zero_for_one_distribution():
    same = [kernel_inception_distance(gauss(100, seed=s), gauss(100, seed=s + 50), subsets=20, seed=s)["kid"]
            for s in range(5)]
    diff = kernel_inception_distance(gauss(100, seed=0), gauss(100, shift=0.5, seed=1), subsets=20)["kid"]
    assert abs(np.mean(same)) < 0.05 * diff
    assert min(same) < 0 < diff or abs(min(same)) < 0.05 * diff  # unbiased: not bounded below by 0
    r = kernel_inception_distance(gauss(30), gauss(50, seed=1), subset_size=1000)
    assert r["subset_size"] == 30


def test_precision_recall_density_coverage_sanity():
    real = gauss(200, seed=0)
    far = gauss(200, shift=50.0, seed=1)
    assert precision_recall(real, real, k=3) == {"precision": 1.0, "recall": 1.0}
    assert precision_recall(real, far, k=3) == {"precision": 0.0, "recall": 0.0}
    dc = density_coverage(real, real, k=5)
    assert dc["coverage"] == 1.0 and 0.8 < dc["density"] < 1.5
    assert density_coverage(real, far, k=5) == {"density": 0.0, "coverage": 0.0}
    # a generator covering half the real modes: full precision, about half recall
    two_modes = np.concatenate([gauss(100, d=2, seed=3), gauss(100, d=2, shift=20.0, seed=4)])
    one_mode = gauss(100, d=2, seed=5)
    pr = precision_recall(two_modes, one_mode, k=3)
    assert pr["precision"] > 0.9 and 0.35 < pr["recall"] < 0.65
    with pytest.raises(ValueError, match="more than k=5 points"):
        density_coverage(real[:5], real, k=5)


def test_memorisation_share_detects_planted_copies():
    train, val = gauss(200, seed=0), gauss(60, seed=1)
    fresh = gauss(60, seed=2)
    copied = [3, 17, 42, 99, 150]
    gen = np.concatenate([fresh, train[copied] + 1e-3 * gauss(5, seed=3)])
    m = memorisation_share(gen, train, val, percentile=5, n_pairs=5)
    assert m["expected"] == 0.05
    assert m["share"] >= 5 / 65
    assert sorted(t for _, t, _ in m["pairs"]) == copied
    assert all(g >= 60 for g, _, _ in m["pairs"])
    clean = memorisation_share(fresh, train, val, percentile=5)
    assert clean["share"] < 0.2


def test_confusion_and_per_class_accuracy():
    cm = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    acc = per_class_accuracy([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 4)
    assert acc[:3].tolist() == [0.5, 1.0, 0.0] and np.isnan(acc[3])


def test_fewshot_indices_per_class_and_seeded():
    labels = np.repeat([0, 1, 2], [10, 3, 7])
    idx = fewshot_indices(labels, 4, seed=0)
    assert np.bincount(labels[idx]).tolist() == [4, 3, 4]
    assert np.array_equal(idx, fewshot_indices(labels, 4, seed=0))
    assert not np.array_equal(idx, fewshot_indices(labels, 4, seed=1))


def test_augmentation_gain_reports_each_seed():
    from tests.test_classifier import toy_set

    (x, y), (xv, yv), (xg, yg) = toy_set(6, 0), toy_set(4, 1), toy_set(4, 2)
    # width 8, not 4: torch 2.13's oneDNN corrupts the heap in single-threaded convolution backward with
    # 4 channels on AVX2-only CPUs (free(): invalid pointer); 8 and 16 (the default) run clean there
    from dataclasses import replace

    from tests.test_classifier import TINY
    recipe = replace(TINY, steps=3, batch_size=8, lr=1e-3, weight_decay=0.0, image_size=16, width=8, augment=False)
    r = augmentation_gain(x, y, xv, yv, {"gen": (xg, yg), "half": (xg[::2], yg[::2])}, 3, per_user=2,
                          seeds=[0, 1, 2], classifier=recipe)
    assert len(r["real_only"]) == 3 and set(r["sets"]) == {"gen", "half"}
    row = r["sets"]["gen"]
    assert len(row["accuracy"]) == 3 and row["generated_images"] == len(xg)
    gains = np.array(row["accuracy"]) - np.array(r["real_only"])
    assert row["gain_mean"] == pytest.approx(gains.mean()) and row["gain_std"] == pytest.approx(gains.std())
    lo, hi = row["gain_ci95"]
    # t(0.975, 2 dof) = 4.303
    half = 4.303 * gains.std(ddof=1) / np.sqrt(3)
    assert lo == pytest.approx(gains.mean() - half, abs=1e-3) and hi == pytest.approx(gains.mean() + half, abs=1e-3)
    # the few-shot arm leaves train images out of its draw and scores on them too: the lever-choosing figure
    assert "heldout_gain_mean" in row and len(row["heldout_gain_ci95"]) == 2
    one = augmentation_gain(x, y, xv, yv, {"gen": (xg, yg)}, 3, per_user=2, seeds=[0], classifier=recipe)
    assert one["sets"]["gen"]["gain_ci95"] is None
    # the full arm: every real train image, nothing held out
    full = augmentation_gain(x, y, xv, yv, {"gen": (xg, yg)}, 3, per_user=None, seeds=[0, 1], classifier=recipe)
    assert full["per_user"] is None and "heldout_gain_mean" not in full["sets"]["gen"]


def test_mix_real_repeats_real_images_to_the_asked_share():
    xr, yr = np.zeros((4, 2, 2, 3), np.uint8), np.zeros(4, int)
    xg, yg = np.ones((12, 2, 2, 3), np.uint8), np.ones(12, int)
    x, y = mix_real(xr, yr, xg, yg, None)
    assert len(x) == 16 and (y == 0).sum() == 4
    x, y = mix_real(xr, yr, xg, yg, 0.5)  # 4 real against 12 generated: three copies of each real image
    assert len(x) == 24 and (y == 0).sum() == 12 and (x[y == 1] == 1).all()
    x, y = mix_real(xr, yr, xg[:2], yg[:2], 0.5)  # already more real than generated: each once
    assert (y == 0).sum() == 4


# --------------------------------------------------------------------------------------
# Kinematics through the evaluation path
# --------------------------------------------------------------------------------------

def test_gait_measures_are_the_kinematics_measures():
    """The evaluation path is mdgen.kinematics' (whose own tests check it against the simulator's
    ground truth over many recordings): equal numbers, and near the truth on one simulated image."""
    spec = simulate_spectrogram(sample_users(2, seed=0)[1], seed=0)
    image = spectrogram_to_rgb(spec, spec.radar.dynamic_range_db)
    v, t = image_velocity_axis(spec.radar), image_time_axis(spec.radar)
    m = gait_measures(image[None], v, t)
    ref = measure_gait(jet_to_level(image), v, t)
    assert m["torso_speed_mps"][0] == abs(ref.torso_velocity) and m["cycle_s"][0] == ref.cycle_s
    assert m["envelope_mps"][0] == ref.envelope_mps
    assert abs(m["torso_speed_mps"][0] / spec.truth["radial_speed_mps"] - 1) < 0.1
    assert abs(m["cycle_s"][0] / spec.truth["cycle_s"] - 1) < 0.1


def test_compare_gait_per_user_and_mae():
    real = ({"cycle_s": np.array([1.0, 1.2, 2.0, 2.0]), "envelope_mps": np.array([3.0, 3.0, 4.0, 4.0])},
            np.array([0, 0, 1, 1]))
    gen = ({"cycle_s": np.array([1.3, 2.4]), "envelope_mps": np.array([3.0, 4.0])}, np.array([0, 1]))
    truth = ({"cycle_s": np.array([1.1, 2.0])}, np.array([0, 1]))
    r = compare_gait({"real": real, "generated": gen, "truth": truth}, ["ID_1", "ID_2"], [0, 1], reference="real")
    assert r["per_user"]["ID_1"]["real"]["cycle_s"] == pytest.approx({"mean": 1.1, "std": 0.1})
    assert r["mae"]["cycle_s_mae_generated_vs_real"] == pytest.approx((0.2 + 0.4) / 2)
    assert r["mae"]["envelope_mps_mae_generated_vs_real"] == pytest.approx(0.0)
    assert r["mae"]["cycle_s_mae_truth_vs_real"] == pytest.approx(0.0)
    assert "envelope_mps_mae_truth_vs_real" not in r["mae"]


# --------------------------------------------------------------------------------------
# The classifier and evaluate stages on a tiny workspace
# --------------------------------------------------------------------------------------

TINY_PARAMS = {
    "data": {"image_size": 32},
    "classifier": {"image_size": 16, "width": 4, "steps": 6, "batch_size": 8},
    "evaluate": {"fewshot_per_user": 2, "fewshot_steps": 3, "seeds": 3, "full_seeds": 2, "kid_subsets": 5,
                 "precision_recall_k": 2, "density_coverage_k": 2, "plot_pairs": 3},
}


def _jet_image(rng, row: int, size: int = 32) -> np.ndarray:
    level = rng.uniform(0, 0.2, (size, size))
    level[row:row + 3] = rng.uniform(0.8, 1.0, (3, size))
    return JET_LUT[(level * 255).astype(int)]


def _user_folders(root, users: int, per_user: int, seed: int, with_truth: bool = False):
    rng = np.random.default_rng(seed)
    manifest = {"users": []}
    for u in range(1, users + 1):
        (root / f"ID_{u}").mkdir(parents=True)
        for k in range(1, per_user + 1):
            Image.fromarray(_jet_image(rng, (4 + 9 * u) % 28)).save(root / f"ID_{u}" / f"{k}.png")
        manifest["users"].append({"id": f"ID_{u}", "images": [{"radial_speed_mps": 1.0 + u / 10, "cycle_s": 1.1}]})
    if with_truth:
        manifest["image_axes"] = {"velocity_mps": {"top": 3.78515625, "bottom": -3.78515625, "rows": 256},
                                  "time_s": {"first": 0.0, "last": 2.3, "columns": 256}}
        (root / "users.json").write_text(json.dumps(manifest))
    return root


def test_classifier_and_evaluate_stages_write_all_metrics(tmp_path):
    from mdgen.stages import classifier as classifier_stage
    from mdgen.stages import evaluate as evaluate_stage

    data = _user_folders(tmp_path / "data", users=2, per_user=8, seed=0, with_truth=True)
    samples = _user_folders(tmp_path / "samples", users=2, per_user=3, seed=1)
    write_json(tmp_path / "split.json", make_split(data, split_config(0.25, mode="random"), 0))
    params = write_params(tmp_path / "params.yaml", {**TINY_PARAMS, "data": {"dir": str(data), "image_size": 32}})

    baselines = tmp_path / "classifier_baselines.json"
    cm = classifier_stage.main(params_path=params, split_path=tmp_path / "split.json",
                               out=tmp_path / "classifier.safetensors", metrics_path=tmp_path / "judge.json",
                               baselines_path=baselines)
    assert set(cm["val_accuracy_per_user"]) == {"ID_1", "ID_2"}
    assert json.loads((tmp_path / "details" / "judge.json").read_text())["val_images"] == 4
    assert json.loads((tmp_path / "judge.json").read_text()) == {"val_acc": pytest.approx(cm["val_accuracy"], rel=1e-3)}
    # the judge and the arms' real-only classifiers (3 few-shot seeds, 2 full; the judge is the first full one)
    record = json.loads(baselines.read_text())
    assert cm["classifiers"] == 5 and {a: sorted(r["scores"]) for a, r in record["arms"].items()} == \
        {"fewshot": ["0", "1", "2"], "full": ["0", "1"]}
    assert record["arms"]["full"]["scores"]["0"] == {"val": pytest.approx(cm["val_accuracy"])}
    assert set(record["arms"]["fewshot"]["scores"]["1"]) == {"val", "heldout"}

    m = evaluate_stage.main(params_path=params, split_path=tmp_path / "split.json",
                            classifier_path=tmp_path / "classifier.safetensors", samples_dir=samples,
                            sifted_dir=None, baselines_path=baselines, metrics_path=tmp_path / "evaluate.json",
                            plots_dir=tmp_path / "plots")
    written = json.loads((tmp_path / "details" / "evaluate.json").read_text())
    assert written == json.loads(json.dumps(m))
    # the kept real-only scores are the ones `evaluate` trains when it has none: the same metrics, to the digit
    alone = evaluate_stage.main(params_path=params, split_path=tmp_path / "split.json",
                                classifier_path=tmp_path / "classifier.safetensors", samples_dir=samples,
                                sifted_dir=None, baselines_path=None, metrics_path=tmp_path / "alone" / "e.json",
                                plots_dir=tmp_path / "alone")
    assert alone == m
    # the declared metrics: numbers a researcher compares between runs, no per-person or per-seed detail
    headline = json.loads((tmp_path / "evaluate.json").read_text())
    assert len(headline) == 14 and all(isinstance(v, (int, float)) for v in headline.values())
    assert headline["acc_x"] == pytest.approx(m["conditional"]["ratio"], rel=1e-3)  # 4 significant digits
    assert headline["fid_x"] == pytest.approx(m["distribution"]["fid_ratio"], rel=1e-3)
    assert headline["gain_lo"] == pytest.approx(m["augmentation"]["fewshot"]["gain_ci95"][0], rel=1e-3)
    assert headline["full"] == pytest.approx(m["augmentation"]["full"]["gain_mean"], rel=1e-3, abs=1e-4)
    assert {"generated_accuracy", "real_val_accuracy", "ratio", "per_user"} <= set(m["conditional"])
    assert {"fid", "fid_real_floor", "fid_real_floor_std", "fid_ratio", "kid", "kid_real_floor",
            "precision", "recall", "density", "coverage", "per_user_kid"} <= set(m["distribution"])
    t = m["tstr"]
    assert t["trtr_accuracy"] == m["conditional"]["real_val_accuracy"] and 0 <= t["tstr_accuracy"] <= 1
    assert t["val_images"] == 4 and t["train_images"] == 6 and set(t["per_user"]) == {"ID_1", "ID_2"}
    assert "wall_s" not in m  # the metrics file is deterministic: a rerun gives the same bytes
    assert set(m["distribution"]["per_user_kid"]) == {"ID_1", "ID_2"}
    assert {"share", "expected", "threshold"} <= set(m["memorisation"])
    assert m["kinematics"]["axes"] == "users.json"
    assert {"torso_speed_mps_mae_generated_vs_real", "cycle_s_mae_generated_vs_truth"} <= set(m["kinematics"])
    assert m["kinematics"]["per_user"]["ID_2"]["truth_torso_speed_mps"] == pytest.approx(1.2)
    aug = m["augmentation"]
    assert aug["generated_images"] == 6  # sifted_dir None: every sample trains the augmented classifiers
    assert len(aug["fewshot"]["per_seed"]) == 3 and len(aug["full"]["per_seed"]) == 2
    assert {"real_only_mean", "real_plus_generated_mean", "gain_mean", "gain_std", "gain_ci95",
            "heldout_gain_mean"} <= set(aug["fewshot"])
    assert aug["full"]["real_train_per_user"] is None and aug["full"]["steps"] == 6
    val_rows = json.loads((tmp_path / "plots" / evaluate_stage.PLOTS["confusion_val_data"]).read_text())
    assert len(val_rows) == 4 and {r["actual"] for r in val_rows} == {"ID_1", "ID_2"}
    for name in evaluate_stage.PLOTS.values():
        assert (tmp_path / "plots" / name).is_file(), name


def test_kept_baselines_serve_only_the_judge_recipe_and_arms_they_were_trained_for():
    from mdgen.metrics import baseline_record, baseline_scores, gain_arms

    def arms(**kw):
        return gain_arms(**{**dict(seed=0, fewshot_per_user=8, seeds=3, fewshot_steps=150, full_seeds=2,
                                   full_steps=400), **kw})

    kept = arms()
    scores = {arm: [{"val": 0.5 + s / 10} for s in a["seeds"]] for arm, a in kept.items()}
    record = json.loads(json.dumps(baseline_record(kept, scores, {"lr": 0.002}, "abc")))  # as written and read
    assert baseline_scores(record, kept, {"lr": 0.002}, "abc") == scores
    # a later seed range inside the kept one (release/seed_spread.py's runs), fewer seeds, no full arm
    assert baseline_scores(record, arms(seed=1, seeds=2, full_seeds=0), {"lr": 0.002}, "abc") == \
        {"fewshot": [{"val": 0.6}, {"val": 0.7}]}
    assert baseline_scores(record, arms(seeds=4), {"lr": 0.002}, "abc") == {"full": scores["full"]}
    assert baseline_scores(record, arms(fewshot_steps=100), {"lr": 0.002}, "abc") == {"full": scores["full"]}
    assert baseline_scores(record, arms(fewshot_per_user=4, full_steps=300), {"lr": 0.002}, "abc") == {}
    assert baseline_scores(record, kept, {"lr": 0.003}, "abc") == {}  # another recipe
    assert baseline_scores(record, kept, {"lr": 0.002}, "abd") == {}  # another judge: other data
    assert baseline_scores(None, kept, {"lr": 0.002}, "abc") == {}
    assert gain_arms(seed=0, fewshot_per_user=8, seeds=0, fewshot_steps=150, full_seeds=0, full_steps=400) == {}


def test_gain_summary_from_kept_real_only_scores_is_the_summary_of_all():
    from mdgen.metrics import gain_summary

    generated = {"a": (np.zeros((3, 4, 4, 3), np.uint8), np.zeros(3)), "b": (np.zeros((5, 4, 4, 3), np.uint8), None)}
    rng = np.random.default_rng(0)
    scores = [{"val": v, "heldout": h} for v, h in rng.uniform(0.5, 1.0, (12, 2))]  # 4 seeds x (real, a, b)
    whole = gain_summary(scores, generated, per_user=8, seeds=[0, 1, 2, 3])
    split = gain_summary([s for i, s in enumerate(scores) if i % 3], generated, per_user=8, seeds=[0, 1, 2, 3],
                         real_only_scores=scores[::3])
    assert split == whole and whole["sets"]["b"]["generated_images"] == 5
    with pytest.raises(ValueError, match="9 scores for 4 seeds x 3 training sets"):  # a seed's real only missing
        gain_summary([s for i, s in enumerate(scores) if i % 3], generated, per_user=8, seeds=[0, 1, 2, 3],
                     real_only_scores=scores[::3][:3])


def test_evaluate_rejects_samples_of_unknown_users(tmp_path):
    from mdgen.scorecard import load_generated

    samples = _user_folders(tmp_path / "samples", users=3, per_user=1, seed=0)
    with pytest.raises(ValueError, match="ID_3: not a user"):
        load_generated(samples, ["ID_1", "ID_2"], 32)


def test_augmentation_without_sifted_samples_is_said_not_faked():
    from types import SimpleNamespace

    from mdgen.params import load
    from mdgen.scorecard import augmentation, augmentation_arms

    p = load(REPO / "params.yaml")
    d = SimpleNamespace(x_aug=np.zeros((0, 32, 32, 3), np.uint8), y_aug=np.zeros(0, int))
    arms = augmentation_arms(d, p.classifier, p.evaluate, 0)
    assert arms == {}  # no classifier to train on nothing generated
    section = augmentation(d, arms, {}, p.evaluate.real_share)
    assert section["generated_images"] == 0 and "sift` kept no sample" in section["skipped"]
    assert "fewshot" not in section and "full" not in section
    assert {k: v for k, v in headline_of(section).items() if k.startswith(("gain", "full"))} == \
        {"gain": None, "gain_lo": None, "full": None, "full_lo": None}


def test_sifted_folder_missing_names_the_sift_stage_and_empty_means_none_kept(tmp_path):
    from mdgen.errors import MissingFileError
    from mdgen.scorecard import sifted

    x, y = np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1])
    with pytest.raises(MissingFileError, match="no such folder.*`sift` stage"):
        sifted(tmp_path / "sifted", ["ID_1", "ID_2"], 32, x, y)
    (tmp_path / "sifted").mkdir()
    xs, ys = sifted(tmp_path / "sifted", ["ID_1", "ID_2"], 32, x, y)
    assert xs.shape == (0, 32, 32, 3) and ys.shape == (0,)


def headline_of(augmentation_section: dict) -> dict:
    from mdgen.scorecard import HEADLINE_NAMES, headline

    metrics = {}
    for section, key in HEADLINE_NAMES.values():
        metrics.setdefault(section, {})[key] = 0.0
    return headline({**metrics, "augmentation": augmentation_section})
