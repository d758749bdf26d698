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
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from mdgen.accel import torch_threads
from mdgen.errors import MissingFileError
from mdgen.io import atomic_path
from mdgen.params import Float, Int, IntList, ParamsError, Spec, TokenizerRecipe, load, setting
from mdgen.simulate import RadarConfig, simulate_dataset
from mdgen.tokenizer import SAVE_DTYPES, save_tokenizer
from mdgen.vae_training import collect_files, evaluate_tokenizer, linear_codec_psnr, train_tokenizer

DEFAULT_CONFIG = "data/pretrained/mdgen-vae-f16d32-sim.yaml"
CARD_TEMPLATE = "templates/tokenizer_card.md"  # in the mdgen package
LINEAR_COMPONENTS = (32, 64, 128, 256)  # numbers per 16x16 patch for the linear (PCA) yardstick


# the config file's sections; every key is required, the values live in the file only


@dataclass(frozen=True)
class ModelSection:
    """AutoencoderKL constructor arguments (upstream names); resolution = data.image_size."""
    ch: int = setting(Int(32), "base width; GroupNorm(32): every level width ch * ch_mult must be a multiple of 32")
    ch_mult: list = setting(IntList(1), "width multiplier per level (5 levels = f16)")
    num_res_blocks: int = setting(Int(1, 8), "residual blocks per encoder level; the decoder has one more")
    attn_resolutions: list = setting(IntList(1, empty=True), "feature-map sides with attention")
    dropout: float = setting(Float(0.0, 1.0, hi_open=True), "dropout in the residual blocks")
    z_channels: int = setting(Int(1), "latent channels before quant_conv")
    embed_dim: int = setting(Int(1), "latent channels")


@dataclass(frozen=True)
class DataSection:
    """Simulated with mdgen.simulate (default RadarConfig)."""
    image_size: int = setting(Int(16, 4096), "image side")
    train_users: int = setting(Int(1), "simulated persons to train on")
    train_images_per_user: int = setting(Int(1), "images per training person")
    train_seed: int = setting(Int(0), "simulation seed of the training set (not the pipeline's)")
    heldout_users: int = setting(Int(1), "simulated persons to measure on")
    heldout_images_per_user: int = setting(Int(1), "images per held-out person")
    heldout_seed: int = setting(Int(0), "simulation seed of the held-out set")


@dataclass(frozen=True)
class TrainSection(TokenizerRecipe):
    seed: int = setting(Int(0), "init, crop positions, posterior noise")
    threads: int | None = setting(Int(1, optional=True), "torch threads; null: torch's default (the weights "
                                                        "depend on it bitwise)")
    log_every: int = setting(Int(1), "steps per history row")


@dataclass(frozen=True)
class SaveSection:
    dtype: str = setting(Spec(str, lambda v: v in SAVE_DTYPES, "one of " + " | ".join(SAVE_DTYPES)), "weights on disk")


@dataclass(frozen=True)
class ReleaseConfig:
    model: ModelSection
    data: DataSection
    train: TrainSection
    save: SaveSection


def read_config(path: str | Path) -> ReleaseConfig:
    """The validated config, by `mdgen.params` with this file's sections.

    Unknown or missing keys and bad values are errors naming the file, the key, the value and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"tokenizer training config {path} not found")
    config = load(path, root=ReleaseConfig)
    model = config.model
    bad = [model.ch * m for m in model.ch_mult if model.ch * m % 32]
    if bad:
        raise ParamsError(f"{path}: model.ch = {model.ch} x model.ch_mult = {model.ch_mult} gives widths {bad}: "
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
    release = read_config(config_path)
    config = dataclasses.asdict(release)  # the card and the checkpoint's metadata take plain dicts
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
            model, history = train_tokenizer(tmp / "train", release.train, release.train.seed,
                                             model_config=model_config, image_size=d["image_size"],
                                             log_every=release.train.log_every, progress=progress)
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
