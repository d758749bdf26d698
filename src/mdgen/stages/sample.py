"""`sample` stage: EMA DiT + stats + tokenizer -> data/samples/ID_<n>/*.png, plots/samples.png."""
from __future__ import annotations

import time
from pathlib import Path

from mdgen import params
from mdgen.accel import autocast_dtype, dtype_name
from mdgen.generator import SpectrogramGenerator, write_samples
from mdgen.images import load_image
from mdgen.io import exclusive_writer, list_images, write_json
from mdgen.plots import image_grid
from mdgen.split import read_split
from mdgen.tokenizer import tokenizer_file

KEYS = ["seed", "data.image_size", "sample"]


def main(params_path: str = "params.yaml", model_dir: str = "models/dit", stats_path: str = "data/latents/latents_stats.pt",
         split_path: str = "data/split.json", out_dir: str = "data/samples", plot_path: str = "plots/samples.png",
         metrics_path: str = "metrics/details/sample.json", tokenizer_path: str = "models/tokenizer") -> dict:
    p = params.read(KEYS, params_path)
    config = p["sample"]
    gen = SpectrogramGenerator.load(Path(model_dir) / "ema.safetensors", stats_path, tokenizer_file(tokenizer_path),
                                    image_size=p["data.image_size"])
    manifest = read_split(split_path)
    n = config.images_per_user
    with exclusive_writer(out_dir):
        t0 = time.perf_counter()
        run = write_samples(gen, out_dir, config, p["seed"])
        wall = time.perf_counter() - t0
    shown = config.plot_per_user
    rows = []
    for user in gen.users:
        real = [load_image(Path(manifest["data_dir"]) / f, p["data.image_size"]) for f in manifest["val"].get(user, [])[:shown]]
        rows.append(real + [load_image(f, p["data.image_size"]) for f in list_images(Path(out_dir) / user)[:shown]])
    made = run["generated_images"]
    amp = autocast_dtype(gen.device, config.precision)
    metrics = {"images": n * len(gen.users), "kept_from_interrupted_run": run["kept_users"] * n,
               "images_per_s": made / wall, "latent_images_per_s": made / max(run["sample_s"], 1e-9),
               "decode_images_per_s": made / max(run["decode_s"], 1e-9), "nfe_per_image": config.nfe(),
               "device": gen.device.type, "precision": dtype_name(amp)}
    write_json(metrics_path, metrics)
    cols = ["real"] * shown + ["generated"] * shown
    image_grid(plot_path, rows, gen.users, cols)
    print(f"sample: {metrics['images']} images ({n} per user, {config.method} {config.steps} steps, "
          f"cfg {config.cfg_scale}) at {metrics['images_per_s']:.2f} img/s -> {out_dir}")
    return metrics

