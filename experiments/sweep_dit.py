"""Compare DiT training / sampling settings with the `evaluate` judge, outside DVC (the sweep tables of benchmarks/README.md).

Run in a repository where `dvc repro` has run (it reads data/latents, data/split.json, the tokenizer
and models/classifier.safetensors). Trains one DiT per call (or takes a trained one with "ema"), then
samples `--per-user` images per person for each sampling setting and prints the judge's conditional
accuracy and FID against real val, with the real train-vs-val floor drawn as `evaluate` draws it:

    python experiments/sweep_dit.py lr2e3 '{"train": {"lr": 0.002, "max_steps": 2400}, "samples": [{"cfg_scale": 1.5}]}'
    python experiments/sweep_dit.py old '{"ema": "models/dit/ema.safetensors", "samples": [{}, {"cfg_scale": 3}]}'

"train" overrides fields of `mdgen.dit_training.TrainConfig` (defaults: from params.yaml, as the stage);
each sample setting overrides those of `SpectrogramGenerator.images`. THREADS sets torch's threads
(two sweeps side by side on a 2-core machine: THREADS=1 each). Outputs go to sweeps/<tag>/.
"""
import argparse
import dataclasses
import json
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from mdgen import params
from mdgen.classifier import features, load_classifier, predict
from mdgen.metrics import fid_floor, frechet_distance
from mdgen.generator import SpectrogramGenerator
from mdgen.images import load_images
from mdgen.split import files_and_labels, read_split
from mdgen.dit_training import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tag")
    ap.add_argument("spec", help='JSON: {"train": {...} | "ema": path, "samples": [{...}, ...]}')
    ap.add_argument("--per-user", type=int, default=24)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", torch.get_num_threads())))
    spec = json.loads(args.spec)
    p = params.load(args.params)
    out = f"sweeps/{args.tag}"
    if "train" in spec:
        # resume: a sweep continued to more steps reuses its own last.ckpt
        config = dataclasses.replace(p.train, resume="auto", **spec["train"])
        t0 = time.perf_counter()
        m = train(p.model, config, p.seed, train_path="data/latents/train.safetensors", val_path="data/latents/val.safetensors",
                  stats_path="data/latents/latents_stats.pt", out_dir=f"{out}/dit", metrics_dir=f"{out}/metrics",
                  progress=False)
        print(args.tag, "train", json.dumps({**m, "wall_s": round(time.perf_counter() - t0, 1)}), flush=True)
    gen = SpectrogramGenerator.load(spec.get("ema", f"{out}/dit/ema.safetensors"), "data/latents/latents_stats.pt",
                                    p.tokenizer.checkpoint, device="cpu")
    manifest = read_split("data/split.json")
    val_files, _ = files_and_labels(manifest, "val")
    train_files, _ = files_and_labels(manifest, "train")
    judge, _ = load_classifier("models/classifier.safetensors")
    size = judge.config.image_size
    f_val, f_train = features(judge, load_images(val_files, size)), features(judge, load_images(train_files, size))
    for setting in spec.get("samples", [{}]):
        config = dataclasses.replace(p.sample, **setting)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            files, labels = [], []
            for label, user in enumerate(gen.users):
                imgs, _ = gen.images(user, args.per_user, config, p.seed)
                for k, im in enumerate(imgs):  # through PNG files, as `evaluate` reads the samples
                    files.append(f"{tmp}/{user}_{k}.png")
                    Image.fromarray(im).save(files[-1])
                    labels.append(label)
            images = load_images(files, size)
        f_gen = features(judge, images)
        acc = float((predict(judge, images).argmax(1) == np.asarray(labels)).mean())
        fid = frechet_distance(f_gen, f_val)
        floor, _ = fid_floor(f_train, f_val, len(f_gen), p.seed, subsets=p.evaluate.floor_subsets)  # as `evaluate`
        print(f"{args.tag} sample {json.dumps(setting)}: accuracy {acc:.3f}, FID {fid:.2f} "
              f"(floor {floor:.2f}, {fid / floor:.1f}x), {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
