"""`train` stage: latents + stats -> models/dit/{last.ckpt, ema.safetensors, README.md}, metrics/train/ (DVCLive).

README.md is the model card (Hugging Face format): `templates/dit_card.md` filled in by `model_card`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import torch
import yaml

from mdgen import params
from mdgen.checkpoints import read_ema_meta
from mdgen.dit import LightningDiT
from mdgen.io import atomic_path, details_of, exclusive_writer, remove_stale_temps, write_headline, write_json
from mdgen.latents import read_latents_meta
from mdgen.params import ModelConfig, TrainConfig
from mdgen.dit_training import is_rank_zero, train

KEYS = ["seed", "model", "train"]
CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "dit_card.md"


def main(params_path: str = "params.yaml", latents_dir: str = "data/latents", out_dir: str = "models/dit",
         metrics_dir: str = "metrics/train", summary_path: str | None = None, details_path: str | None = None) -> dict:
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
            summary = summary_path or Path(metrics_dir).parent / "train.json"
            write_json(details_path or details_of(summary), metrics)
            # the headline: the final EMA validation loss (DVCLive's metrics.json in metrics_dir is not declared)
            write_headline(summary, {"ema_val": metrics["val/loss_ema"]})
            with atomic_path(Path(out_dir) / "README.md") as card:
                card.write_text(model_card(out_dir, latents_dir, p["model"], p["train"], p["seed"], metrics))
            print(f"train: {metrics['step']} steps in {metrics['train_wall_s']} s, val loss "
                  f"{metrics.get('val/loss', float('nan')):.4f} (EMA {metrics.get('val/loss_ema', float('nan')):.4f}) "
                  f"-> {out_dir}")
    return metrics


def model_card(out_dir: str | Path, latents_dir: str | Path, model: ModelConfig, config: TrainConfig, seed: int,
               metrics: dict) -> str:
    """models/dit/README.md: YAML front matter as a Hugging Face model card has it (`library_name`, `tags`, and
    mdgen's own keys), then `templates/dit_card.md` filled in from the model file's and the latents' metadata,
    the run's params and its final losses. Nothing in it changes between two runs of the same inputs (no times,
    no versions), so a rerun writes the same bytes and DVC sees the same output."""
    ema = Path(out_dir) / "ema.safetensors"
    meta = read_ema_meta(ema)
    with torch.device("meta"):  # the parameter count, without allocating the weights
        n_params = sum(t.numel() for t in LightningDiT(**meta["model_config"]).parameters())
    train_meta = read_latents_meta(Path(latents_dir) / "train.safetensors")
    val_meta = read_latents_meta(Path(latents_dir) / "val.safetensors")
    users, size = meta["users"], int(train_meta["image_size"])
    unknown = "(not recorded: latents of an older `extract`)"
    tokenizer = meta.get("tokenizer_path") or unknown
    front = {"library_name": "mdgen",
             "tags": ["lightningdit", "diffusion-transformer", "rectified-flow", "class-conditional", "radar",
                      "micro-doppler", "spectrogram", "dvc"],
             "mdgen": {"model": meta["model_name"], "parameters": n_params, "steps": meta["step"],
                       "persons": users, "image_size": size, "latent_shape": meta["latent_shape"],
                       "tokenizer": tokenizer, "tokenizer_sha256": meta.get("tokenizer_sha256") or None,
                       "stats": meta.get("stats_path"), "stats_sha256": meta.get("stats_sha256")}}
    run = {"seed": seed, "model": dataclasses.asdict(model),
           # the params.yaml keys of the section (TrainConfig also holds upstream's fixed values)
           "train": {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if "spec" in f.metadata}}
    template = CARD_TEMPLATE.read_text(encoding="utf-8")
    return template.format(
        front_matter=yaml.safe_dump(front, sort_keys=False, allow_unicode=True), model_name=meta["model_name"],
        params_m=n_params / 1e6, persons=len(users), person_list=", ".join(users), person=users[0],
        data_dir=train_meta.get("data_dir", unknown), image_size=size, model_dir=Path(out_dir).as_posix(),
        latents_dir=Path(latents_dir).as_posix(), n_train=train_meta["tensors"]["latents"][0],
        n_val=val_meta["tensors"]["latents"][0], latent_shape="×".join(map(str, meta["latent_shape"])),
        stats_path=meta.get("stats_path"), stats_sha=meta["stats_sha256"][:12],
        latent_multiplier=meta["latent_multiplier"], tokenizer_path=tokenizer,
        tokenizer_sha=(meta.get("tokenizer_sha256") or "?")[:12], steps=meta["step"],
        init_from=f", starting from `{config.init_from}`" if config.init_from else " from a random initialisation",
        recipe=yaml.safe_dump(run, sort_keys=False), val_loss=f"{metrics['val/loss']:.4f}",
        val_loss_ema=f"{metrics['val/loss_ema']:.4f}")
