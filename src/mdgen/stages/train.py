"""`train` stage: latents + stats -> models/dit/{last.ckpt, ema.safetensors}, metrics/train/ (DVCLive)."""
from __future__ import annotations

import time

from mdgen import params
from mdgen.io import write_json
from mdgen.training import train

KEYS = ["seed", "model.name", "model.class_dropout_prob", "model.use_qknorm", "train.max_steps",
        "train.batch_size", "train.lr", "train.weight_decay", "train.beta2", "train.warmup_steps",
        "train.lr_schedule", "train.lr_decay_fraction",
        "train.grad_clip", "train.ema_decay", "train.t_sampling", "train.cos_weight", "train.latent_multiplier",
        "train.use_flip", "train.checkpoint_every", "train.val_every", "train.resume", "train.accelerator",
        "train.devices", "train.num_nodes", "train.strategy", "train.precision", "train.compile",
        "train.deterministic", "train.num_workers", "train.init_from"]


def train_kwargs(p: dict, latents_dir: str = "data/latents", out_dir: str = "models/dit",
                 metrics_dir: str = "metrics/train") -> dict:
    """Keyword arguments of `mdgen.training.train` from the stage's params (also used by benchmarks/sweep_dit.py)."""
    return dict(
        train_path=f"{latents_dir}/train.safetensors", val_path=f"{latents_dir}/val.safetensors",
        stats_path=f"{latents_dir}/latents_stats.pt", out_dir=out_dir, metrics_dir=metrics_dir,
        model_name=p["model.name"],
        model_kwargs={"class_dropout_prob": p["model.class_dropout_prob"], "use_qknorm": p["model.use_qknorm"]},
        max_steps=p["train.max_steps"], batch_size=p["train.batch_size"], lr=p["train.lr"],
        weight_decay=p["train.weight_decay"], betas=(0.9, p["train.beta2"]), warmup_steps=p["train.warmup_steps"],
        lr_schedule=p["train.lr_schedule"], lr_decay_fraction=p["train.lr_decay_fraction"],
        grad_clip=p["train.grad_clip"], ema_decay=p["train.ema_decay"], t_sampling=p["train.t_sampling"],
        cos_weight=p["train.cos_weight"], latent_multiplier=p["train.latent_multiplier"],
        use_flip=p["train.use_flip"], checkpoint_every=p["train.checkpoint_every"], val_every=p["train.val_every"],
        resume=p["train.resume"], accelerator=p["train.accelerator"], devices=p["train.devices"],
        num_nodes=p["train.num_nodes"], strategy=p["train.strategy"], precision=p["train.precision"],
        compile=p["train.compile"], deterministic=p["train.deterministic"], seed=p["seed"],
        num_workers=p["train.num_workers"], init_from=p["train.init_from"],
    )


def main(params_path: str = "params.yaml", latents_dir: str = "data/latents", out_dir: str = "models/dit",
         metrics_dir: str = "metrics/train") -> dict:
    p = params.read(KEYS, params_path)
    t0 = time.perf_counter()
    metrics = train(**train_kwargs(p, latents_dir, out_dir, metrics_dir))
    metrics["train_wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(f"{metrics_dir}/summary.json", metrics)
    print(f"train: {metrics['step']} steps in {metrics['train_wall_s']} s, val loss {metrics.get('val/loss', float('nan')):.4f} "
          f"(EMA {metrics.get('val/loss_ema', float('nan')):.4f}) -> {out_dir}")
    return metrics
