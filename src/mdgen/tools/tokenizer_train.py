"""`mdgen tokenizer-train`: simulate spectrograms, train the default tokenizer, ship it with a model card.

    mdgen tokenizer-train --params data/pretrained/mdgen-vae-f16d32-sim.yaml

Not a DVC stage: its output is committed to git (`data/pretrained/`), so a fresh clone needs no
training. Everything it does follows from the config file beside the checkpoint: the simulated
training and held-out data (seeds other than the pipeline's `seed: 0`, so the pipeline's own images
are never trained on), the architecture and the optimisation. Writes, atomically,
`<config>.safetensors` (fp16 weights + config + metrics in the metadata) and `<config>.md` (model card).
"""
from __future__ import annotations

import dataclasses
import json
import platform
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from mdgen.errors import MissingFileError
from mdgen.accel import torch_threads
from mdgen.io import atomic_path
from mdgen.params import Bool, Float, Int, ParamsError, Spec, load_params
from mdgen.simulate import RadarConfig, simulate_dataset
from mdgen.tokenizer import SAVE_DTYPES, save_tokenizer
from mdgen.vae_training import collect_files, evaluate_tokenizer, linear_codec_psnr, train_tokenizer

DEFAULT_CONFIG = "data/pretrained/mdgen-vae-f16d32-sim.yaml"
CARD_TEMPLATE = "templates/tokenizer_card.md"  # in the mdgen package
LINEAR_COMPONENTS = (32, 64, 128, 256)  # numbers per 16x16 patch for the linear (PCA) yardstick


def IntList(lo: int = 1) -> Spec:
    return Spec(list, lambda v: len(v) > 0 and all(isinstance(x, int) and not isinstance(x, bool) and x >= lo
                                                   for x in v), f"a non-empty list of integers >= {lo}")


# every key the config must have; the defaults live in the config file only
SCHEMA: dict[str, Spec] = {
    "model.ch": Int(32),
    "model.ch_mult": IntList(1),
    "model.num_res_blocks": Int(1, 8),
    "model.attn_resolutions": Spec(list, lambda v: all(isinstance(x, int) and x >= 1 for x in v),
                                   "a list of integers >= 1"),
    "model.dropout": Float(0.0, 1.0, hi_open=True),
    "model.z_channels": Int(1),
    "model.embed_dim": Int(1),
    "data.image_size": Int(16, 4096),
    "data.train_users": Int(1),
    "data.train_images_per_user": Int(1),
    "data.train_seed": Int(0),
    "data.heldout_users": Int(1),
    "data.heldout_images_per_user": Int(1),
    "data.heldout_seed": Int(0),
    "train.seed": Int(0),
    "train.steps": Int(1),
    "train.batch_size": Int(1),
    "train.lr": Float(0.0, 1.0, lo_open=True),
    "train.min_lr_ratio": Float(0.0, 1.0),
    "train.warmup_steps": Int(0),
    "train.weight_decay": Float(0.0),
    "train.beta1": Float(0.0, 1.0, hi_open=True),
    "train.beta2": Float(0.0, 1.0, hi_open=True),
    "train.kl_weight": Float(0.0),
    "train.l1_weight": Float(0.0),
    "train.l2_weight": Float(0.0),
    "train.grad_clip": Float(0.0, lo_open=True, optional=True),
    "train.crop": Int(16),
    "train.final_crop": Int(16, optional=True),
    "train.final_steps": Int(0),
    "train.init_logvar": Float(-30.0, 20.0, optional=True),
    "train.zero_init_residual": Bool(),
    "train.threads": Int(1, optional=True),
    "train.log_every": Int(1),
    "save.dtype": Spec(str, lambda v: v in SAVE_DTYPES, "one of " + " | ".join(SAVE_DTYPES)),
}


def read_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """The validated config as {section: {key: value}}, by `mdgen.params` with this file's SCHEMA.

    Unknown or missing keys and bad values are errors naming the file, the key, the value and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"tokenizer training config {path} not found")
    config: dict[str, dict[str, Any]] = {s: {} for s in sorted({key.split(".")[0] for key in SCHEMA})}
    for key, value in load_params(path, schema=SCHEMA).items():
        section, name = key.split(".", 1)
        config[section][name] = value
    model = config["model"]
    bad = [model["ch"] * m for m in model["ch_mult"] if model["ch"] * m % 32]
    if bad:
        raise ParamsError(f"{path}: model.ch = {model['ch']} x model.ch_mult = {model['ch_mult']} gives widths {bad}: "
                          f"every width must be a multiple of 32 (GroupNorm with 32 groups)")
    return config


def model_card(name: str, config: dict, metrics: dict, history: list[dict], info: dict) -> str:
    """Markdown model card: what the checkpoint is, what it was trained on and how well it reconstructs.

    The text is `templates/tokenizer_card.md`; this computes what goes into its {fields}.
    """
    d, t, m = config["data"], config["train"], metrics
    linear = m["linear_codec_psnr"]
    curve = "\n".join(f"| {h['step']} | {h['crop']} | {h['lr']:.2e} | {h['rec']:.4f} | {h['kl']:.1f} | "
                      f"{h['psnr']:.2f} |" for h in history[:: max(1, len(history) // 12)] + history[-1:])
    final_phase = (f", the last {t['final_steps']} steps on {t['final_crop']}² crops (batch scaled to about the "
                   "same pixels per step)") if t["final_steps"] else ""
    template = resources.files("mdgen").joinpath(CARD_TEMPLATE).read_text(encoding="utf-8")
    return template.format(
        name=name, model=config["model"], d=d, t=t, m=m, info=info, curve=curve, final_phase=final_phase,
        params_m=info["params"] / 1e6, torch_version=torch.__version__,
        train_minutes=info["train_seconds"] / 60, total_minutes=info["total_seconds"] / 60,
        train_images=d["train_users"] * d["train_images_per_user"],
        l2_term=f" + {t['l2_weight']}·L2" if t["l2_weight"] else "",
        dead_channels=m["dead_channels"] or "none",
        linear_sizes=" | ".join(str(k) for k in linear), linear_rule="---:|" * len(linear),
        linear_psnr=" | ".join(f"{v:.2f}" for v in linear.values()))


def _crops_seen(t: dict) -> int:
    """Training crops processed (the final phase scales its batch to keep pixels per step)."""
    final = max(1, round(t["batch_size"] * t["crop"] ** 2 / t["final_crop"] ** 2)) if t["final_steps"] else 0
    return (t["steps"] - t["final_steps"]) * t["batch_size"] + t["final_steps"] * final


def main(params_path: str = DEFAULT_CONFIG, out: str | None = None, card: str | None = None,
         work_dir: str | None = None, progress: bool = True) -> dict:
    """Train the tokenizer described by `params_path`; write `out` (.safetensors) and `card` (.md).

    `out` and `card` default to the config's path with those suffixes; the simulated images live in
    `work_dir` (a fresh temporary folder, removed afterwards, if not given).
    """
    t_total = time.perf_counter()
    config_path = Path(params_path)
    config = read_config(config_path)
    out = Path(out) if out else config_path.with_suffix(".safetensors")
    card = Path(card) if card else config_path.with_suffix(".md")
    d, t = config["data"], config["train"]

    with tempfile.TemporaryDirectory(prefix="mdgen-tokenizer-", dir=work_dir) as tmp:
        tmp = Path(tmp)
        for part in ("train", "heldout"):
            simulate_dataset(tmp / part, d[f"{part}_users"], d[f"{part}_images_per_user"], seed=d[f"{part}_seed"],
                             progress=progress)
        with torch_threads(t["threads"]):
            t_train = time.perf_counter()
            model_config = {**config["model"], "resolution": d["image_size"]}
            model, history = train_tokenizer(
                tmp / "train", model_config=model_config, image_size=d["image_size"], progress=progress,
                **{k: v for k, v in t.items() if k != "threads"})
            train_seconds = time.perf_counter() - t_train
            heldout = collect_files(tmp / "heldout")
            metrics = evaluate_tokenizer(model, heldout, image_size=d["image_size"], seed=t["seed"])
            # the same budget spent linearly: what the data itself asks of a codec (see the card)
            metrics["linear_codec_psnr"] = linear_codec_psnr(collect_files(tmp / "train"), heldout,
                                                             patch=model.downsample_factor,
                                                             components=LINEAR_COMPONENTS, image_size=d["image_size"])
            used_threads = torch.get_num_threads()

    steps_run = history[-1]["step"]
    summary = {"steps": steps_run, "train_seconds": round(train_seconds, 1),
               "images_per_s": round(_crops_seen(t) / train_seconds, 2)}
    headline = {k: metrics[k] for k in ("psnr", "psnr_min", "ssim", "psnr_sample", "ssim_sample", "channel_std_min",
                                        "channel_std_mean", "dead_channels", "images", "linear_codec_psnr")}
    save_tokenizer(model, out, dtype=SAVE_DTYPES[config["save"]["dtype"]],
                   metadata={"mdgen_training": {**config, **summary, "torch": torch.__version__},
                             "mdgen_metrics": headline})
    info = {"file_mb": out.stat().st_size / 1e6, "dtype": config["save"]["dtype"],
            "params": sum(p.numel() for p in model.parameters()), "config_file": f"`{config_path.name}`",
            "radar": ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(RadarConfig()).items()
                               if k in ("prf_hz", "duration_s", "dynamic_range_db", "snr_db")),
            "machine": f"{platform.machine()} CPU",  # training runs on the CPU whatever else the box has
            "threads": used_threads, "total_seconds": time.perf_counter() - t_total, **summary}
    with atomic_path(card) as tmp_card:
        tmp_card.write_text(model_card(out.stem, config, metrics, history, info))
    result = {**summary, **headline, "file_mb": round(info["file_mb"], 2), "checkpoint": str(out)}
    print(f"tokenizer-train: {steps_run} steps in {train_seconds / 60:.1f} min ({summary['images_per_s']} crops/s); "
          f"held-out PSNR {metrics['psnr']:.2f} dB (sample {metrics['psnr_sample']:.2f}), SSIM {metrics['ssim']:.4f}; "
          f"channel std min {metrics['channel_std_min']:.3f} / mean {metrics['channel_std_mean']:.3f}, "
          f"{len(metrics['dead_channels'])} dead -> {out} ({info['file_mb']:.2f} MB)")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
