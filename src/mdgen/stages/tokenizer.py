"""`tokenizer` stage: tokenizer.checkpoint (and, to fit, the train split of data.dir) -> models/tokenizer/.

What `extract` and `sample` encode and decode with is the checkpoint models/tokenizer/tokenizer.json names
(`mdgen.tokenizer.prepared_tokenizer`). With `tokenizer.fit.steps: 0` (the default) that is tokenizer.checkpoint
itself, by path and sha256: nothing is copied, so the released 2.15 GB VA-VAE `.pt` stays where it is and
out of the DVC cache. With steps > 0 it is models/tokenizer/tokenizer.safetensors, fitted: tokenizer.checkpoint
fine-tuned, or an architecture of `tokenizer.fit.model` trained from scratch, on the *train* files of
data/split.json only (the val images stay unseen, so extract's val PSNR/SSIM and every figure after it are
held-out figures for this tokenizer too). Also writes a model card (README.md), metrics/details/tokenizer.json,
and, while fitting, models/.tokenizer.resume.pt beside the folder (not an output: a killed fit resumes from it).
"""
from __future__ import annotations

import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

from mdgen import params
from mdgen.accel import torch_threads
from mdgen.errors import ParamsError
from mdgen.io import atomic_path, exclusive_writer, file_sha256, write_json
from mdgen.params import TokenizerFitConfig, TokenizerRecipe
from mdgen.split import files_and_labels, read_split
from mdgen.tokenizer import CONFIGS, PREPARED, SAVE_DTYPES, load_tokenizer, save_tokenizer
from mdgen.vae_training import train_tokenizer

KEYS = ["seed", "data.image_size", "tokenizer"]
CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "fitted_tokenizer_card.md"
PREPARED_CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "prepared_tokenizer_card.md"


def main(params_path: str = "params.yaml", split_path: str = "data/split.json", out_dir: str = "models/tokenizer",
         metrics_path: str = "metrics/details/tokenizer.json") -> dict:
    p = params.read(KEYS, params_path)
    tok = p["tokenizer"]
    out = Path(out_dir)
    if tok.fit.steps == 0:
        with exclusive_writer(out):
            metrics = prepare(Path(tok.checkpoint), out)
            write_json(metrics_path, metrics)
        print(f"tokenizer: {tok.checkpoint} as it is (tokenizer.fit.steps 0) -> {out}/{PREPARED}")
        return metrics
    return fit_tokenizer(tok.checkpoint, tok.fit, p["seed"], p["data.image_size"], split_path, out, metrics_path)


def prepare(checkpoint: Path, out: Path) -> dict:
    """models/tokenizer/ naming the configured checkpoint, unfitted (its path and sha256), and its card."""
    model = load_tokenizer(checkpoint)  # checks it loads: a broken checkpoint fails here, naming it
    sha = file_sha256(checkpoint)
    (out / "tokenizer.safetensors").unlink(missing_ok=True)  # an earlier fit's, no longer the one in use
    write_json(out / PREPARED, {"fitted": False, "checkpoint": checkpoint.as_posix(), "sha256": sha})
    metrics = {"start": "as-is", "checkpoint": str(checkpoint), "checkpoint_sha256": sha, "steps": 0,
               "params_m": round(sum(x.numel() for x in model.parameters()) / 1e6, 3)}
    template = PREPARED_CARD_TEMPLATE.read_text(encoding="utf-8")
    with atomic_path(out / "README.md") as card:
        card.write_text(template.format(m=metrics, sha=sha[:12]))
    return metrics


def fit_tokenizer(checkpoint: str, fit: TokenizerFitConfig, seed: int, size: int, split_path: str, out: Path,
                  metrics_path: str) -> dict:
    """models/tokenizer/ fitted to the train split: `checkpoint` fine-tuned, or `fit.model` from scratch."""
    manifest = read_split(split_path)
    files, _ = files_and_labels(manifest, "train")  # never the val part
    if fit.device == "cuda" and not torch.cuda.is_available():
        raise ParamsError("tokenizer.fit.device = 'cuda', but torch sees no CUDA device (use auto or cpu)")
    device = torch.device("cuda" if fit.device != "cpu" and torch.cuda.is_available() else "cpu")
    init = Path(checkpoint)
    if fit.model == "init":
        model, model_config, start = load_tokenizer(init), None, f"fine-tuned from `{init}`"
        init_sha = file_sha256(init)
    else:
        model, model_config = None, {**CONFIGS[fit.model], "resolution": size}
        start, init_sha = f"{fit.model} trained from scratch", None

    with exclusive_writer(out):  # one fit writes models/tokenizer at a time
        with torch_threads(fit.threads):
            t0 = time.perf_counter()
            model, history = train_tokenizer(
                files, fit, seed, model=model, model_config=model_config, image_size=size, device=device,
                state_path=out.parent / f".{out.name}.resume.pt", checkpoint_every=fit.checkpoint_every,
                resume=fit.resume == "auto")
            seconds = time.perf_counter() - t0
            used_threads = torch.get_num_threads()

        last = history[-1]
        metrics = {
            "start": fit.model, "init": str(init) if init_sha else None, "init_sha256": init_sha,
            "train_images": len(files), "steps": last["step"], "params_m": round(sum(x.numel() for x in model.parameters()) / 1e6, 3),
            # PSNR of the last logged window of training crops through posterior samples: a training figure; the
            # held-out ones are extract's val_psnr_db / val_ssim
            "train_crop_psnr_db": round(last["psnr"], 3), "train_rec_loss": last["rec"], "train_kl": last["kl"],
            # seconds of this call: after a resume, only the steps run now
            "seconds": round(seconds, 1), "device": device.type, "threads": used_threads if device.type == "cpu" else None,
        }
        history_brief = [{k: h[k] for k in ("step", "crop", "lr", "rec", "kl", "psnr")} for h in history]
        save_tokenizer(model, out / "tokenizer.safetensors", dtype=SAVE_DTYPES[fit.save_dtype],
                       metadata={"mdgen_fit": {"params": asdict(fit), "seed": seed, "image_size": size, **metrics,
                                               "torch": torch.__version__}, "mdgen_history": history_brief})
        write_json(out / PREPARED, {"fitted": True, "sha256": file_sha256(out / "tokenizer.safetensors")})
        with atomic_path(out / "README.md") as card:
            card.write_text(model_card(fit, metrics, history, start, data_dir=manifest["data_dir"], image_size=size))
        write_json(metrics_path, metrics)
    print(f"tokenizer: {start} on {len(files)} train images of {manifest['data_dir']}, {last['step']} steps in "
          f"{seconds / 60:.1f} min on {device.type}; train-crop PSNR {last['psnr']:.2f} dB -> {out}/tokenizer.safetensors")
    return metrics


def model_card(fit: TokenizerFitConfig, metrics: dict, history: list[dict], start: str, data_dir: str,
               image_size: int) -> str:
    """The model card of a fitted tokenizer: `templates/fitted_tokenizer_card.md` filled in."""
    rows = history[:: max(1, len(history) // 12)]
    rows += [h for h in history[-1:] if h is not rows[-1]]
    curve = "\n".join(f"| {h['step']} | {h['crop']} | {h['lr']:.2e} | {h['rec']:.4f} | {h['psnr']:.2f} |" for h in rows)
    recipe = ", ".join(f"{f.name} {getattr(fit, f.name)}" for f in fields(TokenizerRecipe)
                       if f.name not in ("init_logvar", "zero_init_residual") or fit.model != "init")

    def windows(crop: int) -> str:
        return "whole images" if crop >= image_size else f"random {crop}-px crops on the latent grid"

    trained_on = windows(fit.crop)
    if fit.final_steps:
        trained_on += f", the last {fit.final_steps} steps on {windows(fit.final_crop)}"
    template = CARD_TEMPLATE.read_text(encoding="utf-8")
    return template.format(start=start, data_dir=data_dir, m=metrics, recipe=recipe, curve=curve,
                           windows=trained_on, minutes=metrics["seconds"] / 60)
