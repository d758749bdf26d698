"""The judge's recipe (`mdgen.classifier.train_classifier`) in fp32 and in bf16 autocast: time per step.

    PYTHONPATH=src python benchmarks/classifier_speed.py [--steps 100] [--repeats 2] [--threads 1]

Trains params.yaml's `classifier` recipe for `--steps` steps on random 64 px images of 8 persons (speed does
not depend on the pixels), the precisions alternated `--repeats` times in one process, one thread as
`evaluate` runs each classifier. Prints seconds per step of each run and the fp32/bf16 ratio of the medians.
bf16 is only fast on CPUs with native bf16 (AVX512-BF16, AMX: `mdgen.accel.cpu_has_native_bf16`); elsewhere
autocast emulates it and `precision: auto` picks fp32.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from mdgen import params
from mdgen.accel import cpu_has_native_bf16
from mdgen.classifier import train_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=723, help="the default run's real train images")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = params.load(args.params).classifier
    rng = np.random.default_rng(0)
    size = recipe.image_size
    x = rng.integers(0, 256, (args.images, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 8, args.images)
    train_classifier(x, y, 8, replace(recipe, steps=5, precision="fp32"), seed=0)  # warm-up: oneDNN's first calls
    per_step = {"fp32": [], "bf16": []}
    for r in range(args.repeats):
        for precision in per_step:
            t0 = time.perf_counter()
            train_classifier(x, y, 8, replace(recipe, steps=args.steps, precision=precision), seed=r)
            per_step[precision].append((time.perf_counter() - t0) / args.steps)
            print(f"{precision}: {1000 * per_step[precision][-1]:.1f} ms/step (batch {recipe.batch_size}, "
                  f"{size} px, width {recipe.width}, {args.threads} thread(s))", flush=True)
    fp32, bf16 = (statistics.median(v) for v in per_step.values())
    print(f"median fp32 {1000 * fp32:.1f} ms/step, bf16 {1000 * bf16:.1f} ms/step: bf16 {fp32 / bf16:.2f}x faster "
          f"(native bf16 on this CPU: {cpu_has_native_bf16()})")


if __name__ == "__main__":
    main()
