"""`classifier` stage: real train images -> models/classifier.safetensors, metrics/judge.json.

The judge of the `evaluate` stage. It sees only the real train split (never generated
samples, never val), so it depends on the data alone and stays cached across DiT experiments.
"""
from __future__ import annotations

import time
import numpy as np

from mdgen import params
from mdgen.accel import set_threads
from mdgen.classifier import predict, save_classifier, train_classifier
from mdgen.images import load_images
from mdgen.io import details_of, write_headline, write_json
from mdgen.metrics import per_class_accuracy
from mdgen.split import files_and_labels, read_split

KEYS = ["seed", "data.image_size", "classifier"]


def main(params_path: str = "params.yaml", split_path: str = "data/split.json",
         out: str = "models/classifier.safetensors", metrics_path: str = "metrics/judge.json",
         details_path: str | None = None) -> dict:
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

    t0 = time.perf_counter()
    model = train_classifier(x_train, y_train, len(users), config, p["seed"], progress="classifier")
    train_s = time.perf_counter() - t0
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
    }
    save_classifier(model, out, users=users)
    write_json(details_path or details_of(metrics_path), metrics)
    write_headline(metrics_path, {"val_acc": metrics["val_accuracy"]})  # the judge's accuracy on real val
    print(f"classifier: {len(users)} users, {len(train_files)} real train images, {config.steps} steps "
          f"in {train_s:.1f} s; real val accuracy {metrics['val_accuracy']:.3f} ({len(val_files)} images) -> {out}")
    return metrics
