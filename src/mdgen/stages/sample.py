"""`sample` stage: EMA DiT + stats + tokenizer -> data/samples/ID_<n>/*.png, plots/samples.png."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from mdgen import params
from mdgen.accel import autocast_dtype
from mdgen.generation import SpectrogramGenerator
from mdgen.images import load_image, save_png
from mdgen.io import atomic_path, write_json
from mdgen.plots import image_grid
from mdgen.sampling import SamplingOptions
from mdgen.split import read_split

KEYS = ["seed", "data.image_size", "tokenizer.checkpoint", "sample.images_per_user", "sample.plot_per_user",
        *params.keys_for(SamplingOptions, "sample")]


def main(params_path: str = "params.yaml", model_dir: str = "models/dit", stats_path: str = "data/latents/latents_stats.pt",
         split_path: str = "data/split.json", out_dir: str = "data/samples", plot_path: str = "plots/samples.png",
         metrics_path: str = "metrics/sample.json") -> dict:
    p = params.read(KEYS, params_path)
    options = params.as_dataclass(SamplingOptions, p, "sample")
    gen = SpectrogramGenerator.load(Path(model_dir) / "ema.safetensors", stats_path, p["tokenizer.checkpoint"])
    manifest = read_split(split_path)
    n = p["sample.images_per_user"]
    t0 = time.perf_counter()
    sample_s = decode_s = 0.0
    rows, shown = [], p["sample.plot_per_user"]
    with atomic_path(out_dir) as tmp:
        for user in gen.users:
            imgs, timing = gen.images(user, n, seed=p["seed"], **asdict(options))
            sample_s += timing["sample_s"]
            decode_s += timing["decode_s"]
            for k, im in enumerate(imgs):
                save_png(tmp / user / f"{k:05d}.png", im)
            real = [load_image(Path(manifest["data_dir"]) / f, p["data.image_size"]) for f in manifest["val"].get(user, [])[:shown]]
            rows.append(real + list(imgs[:shown]))
    wall = time.perf_counter() - t0
    total = n * len(gen.users)
    metrics = {"images": total, "images_per_s": total / wall, "latent_images_per_s": total / max(sample_s, 1e-9),
               "decode_images_per_s": total / max(decode_s, 1e-9), "nfe_per_image": options.nfe(),
               "device": gen.device.type,
               "precision": "bf16" if autocast_dtype(gen.device, p["sample.precision"]) else "fp32"}
    write_json(metrics_path, metrics)
    cols = ["real"] * shown + ["generated"] * shown
    image_grid(plot_path, rows, gen.users, cols)
    print(f"sample: {total} images ({n} per user, {p['sample.method']} {p['sample.steps']} steps, "
          f"cfg {p['sample.cfg_scale']}) at {metrics['images_per_s']:.2f} img/s -> {out_dir}")
    return metrics

