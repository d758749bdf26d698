"""`train` stage: latents + stats -> models/dit/{last.ckpt, ema.safetensors}, metrics/train/ (DVCLive)."""
from __future__ import annotations

import contextlib
import time

from mdgen import params
from mdgen.io import exclusive_writer, remove_stale_temps, write_json
from mdgen.dit_training import is_rank_zero, train

KEYS = ["seed", "model", "train"]


def main(params_path: str = "params.yaml", latents_dir: str = "data/latents", out_dir: str = "models/dit",
         metrics_dir: str = "metrics/train") -> dict:
    p = params.read(KEYS, params_path)
    # one writer of models/dit (and metrics/train) at a time; under DDP the other ranks are rank zero's
    # children, launched inside its lock, and only rank zero writes
    with exclusive_writer(out_dir) if is_rank_zero() else contextlib.nullcontext():
        if is_rank_zero():
            remove_stale_temps(metrics_dir)
        t0 = time.perf_counter()
        metrics = train(p["model"], p["train"], p["seed"], train_path=f"{latents_dir}/train.safetensors", val_path=f"{latents_dir}/val.safetensors",
                        stats_path=f"{latents_dir}/latents_stats.pt", out_dir=out_dir, metrics_dir=metrics_dir)
        metrics["train_wall_s"] = round(time.perf_counter() - t0, 1)
        if is_rank_zero():
            write_json(f"{metrics_dir}/summary.json", metrics)
            print(f"train: {metrics['step']} steps in {metrics['train_wall_s']} s, val loss "
                  f"{metrics.get('val/loss', float('nan')):.4f} (EMA {metrics.get('val/loss_ema', float('nan')):.4f}) "
                  f"-> {out_dir}")
    return metrics
