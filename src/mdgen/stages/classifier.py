"""`classifier` stage: real train images -> models/classifier.safetensors, models/classifier_baselines.json,
metrics/judge.json.

The judge of the `evaluate` stage. It sees only the real train split (never generated
samples, never val), so it depends on the data alone and stays cached across DiT experiments.
So do the real-only classifiers of `evaluate`'s augmentation experiment, trained here beside it in one pool
(the judge is the full arm's real-only classifier of the first seed): a DiT experiment's `evaluate` trains
only the classifiers with samples.
"""
from __future__ import annotations

import time
import numpy as np

from mdgen import params
from mdgen.accel import set_threads
from dataclasses import asdict

from mdgen.classifier import Job, fit_classifiers, predict, save_classifier
from mdgen.images import load_images
from mdgen.io import details_of, file_sha256, write_headline, write_json
from mdgen.metrics import baseline_record, gain_arms, gain_jobs, per_class_accuracy
from mdgen.split import files_and_labels, read_split

KEYS = ["seed", "data.image_size", "classifier", "evaluate.fewshot_per_user", "evaluate.seeds",
        "evaluate.fewshot_steps", "evaluate.full_seeds", "evaluate.workers"]


def main(params_path: str = "params.yaml", split_path: str = "data/split.json",
         out: str = "models/classifier.safetensors", metrics_path: str = "metrics/judge.json",
         details_path: str | None = None, baselines_path: str = "models/classifier_baselines.json") -> dict:
    p = params.read(KEYS, params_path)
    config = p["classifier"]
    set_threads(config.threads)
    manifest = read_split(split_path)
    users = manifest["users"]
    train_files, train_labels = files_and_labels(manifest, "train")
    val_files, val_labels = files_and_labels(manifest, "val")
    size = p["data.image_size"]
    x_train, x_val = load_images(train_files, size), load_images(val_files, size)
    y_train, y_val = train_labels.numpy(), val_labels.numpy()

    arms = gain_arms(seed=p["seed"], fewshot_per_user=p["evaluate.fewshot_per_user"], seeds=p["evaluate.seeds"],
                     fewshot_steps=p["evaluate.fewshot_steps"], full_seeds=p["evaluate.full_seeds"],
                     full_steps=config.steps)
    jobs = {arm: gain_jobs(x_train, y_train, x_val, y_val, {}, per_user=a["per_user"], seeds=a["seeds"],
                           image_size=config.image_size, steps=a["steps"]) for arm, a in arms.items()}
    pool = [j for arm_jobs in jobs.values() for j in arm_jobs]
    # the judge: every real train image, the recipe, the seed: the full arm's first real-only classifier, if any
    full = jobs.get("full", [])
    judge = full[0] if full else Job(x_train, y_train, p["seed"], {"val": (x_val, y_val)})
    judge.keep_model = True
    if not full:
        pool.append(judge)
    t0 = time.perf_counter()
    results = fit_classifiers(pool, len(users), config, p["evaluate.workers"],
                              lambda line: print(f"classifier: {line} ({time.perf_counter() - t0:.0f} s)", flush=True))
    train_s = time.perf_counter() - t0
    model = next(m for _, m in results if m is not None)
    rest = iter(score for score, _ in results)  # the arms' scores, in the order their jobs went in
    kept = {arm: [next(rest) for _ in arm_jobs] for arm, arm_jobs in jobs.items()}
    pred_val = predict(model, x_val).argmax(1)
    pred_train = predict(model, x_train).argmax(1)
    per_user = per_class_accuracy(y_val, pred_val, len(users))
    metrics = {
        "val_accuracy": float(np.mean(pred_val == y_val)),
        "train_accuracy": float(np.mean(pred_train == y_train)),
        "val_accuracy_per_user": {u: float(a) for u, a in zip(users, per_user)},
        "train_images": len(train_files),
        "val_images": len(val_files),
        "parameters": sum(t.numel() for t in model.parameters()),
        "train_s": round(train_s, 1),
        "classifiers": len(pool),  # the judge and the real-only classifiers of `evaluate`'s augmentation arms
    }
    save_classifier(model, out, users=users)
    write_json(baselines_path, baseline_record(arms, kept, asdict(config), file_sha256(out)))
    write_json(details_path or details_of(metrics_path), metrics)
    write_headline(metrics_path, {"val_acc": metrics["val_accuracy"]})  # the judge's accuracy on real val
    print(f"classifier: {len(users)} users, {len(train_files)} real train images, {config.steps} steps; real val "
          f"accuracy {metrics['val_accuracy']:.3f} ({len(val_files)} images); with {len(pool) - 1} real-only "
          f"classifiers of the augmentation arms in {train_s:.1f} s -> {out}, {baselines_path}")
    return metrics
