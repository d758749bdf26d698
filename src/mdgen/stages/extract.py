"""`extract` stage: split.json + images + tokenizer -> data/latents/{train,val}.safetensors.

Also measures the tokenizer on this data (val PSNR/SSIM through the posterior mean) and
draws originals beside reconstructions, a few per user.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from mdgen import params
from mdgen.io import details_of, file_sha256, write_headline, write_json
from mdgen.latents import encode_files, reconstruct, save_latents
from mdgen.plots import image_grid
from mdgen.quality import psnr, ssim
from mdgen.split import files_and_labels, read_split
from mdgen.tokenizer import load_tokenizer, tokenizer_file

KEYS = ["seed", "data.image_size", "extract"]


def main(params_path: str = "params.yaml", split_path: str = "data/split.json", out_dir: str = "data/latents",
         metrics_path: str = "metrics/extract.json", plot_path: str = "plots/reconstructions.png",
         tokenizer_path: str = "models/tokenizer",
         details_path: str | None = None) -> dict:
    p = params.read(KEYS, params_path)
    manifest = read_split(split_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ckpt = tokenizer_file(tokenizer_path)  # the checkpoint the `tokenizer` stage chose (its folder), or a file
    model = load_tokenizer(ckpt, device=device)
    sha = file_sha256(ckpt)
    config = p["extract"]
    size = p["data.image_size"]
    t0 = time.perf_counter()
    n_images = 0
    for i, part in enumerate(("train", "val")):
        files, labels = files_and_labels(manifest, part)
        # a different noise stream per part, fixed by the seed
        tensors = encode_files(model, files, config, image_size=size, seed=p["seed"] + i, device=device,
                               desc=f"extract {part}", keep_mean=part == "val")
        if part == "val":
            val_means = tensors.pop("mean")
        save_latents(Path(out_dir) / f"{part}.safetensors", tensors, labels, users=manifest["users"],
                     tokenizer_sha256=sha, image_size=size, sample_posterior=config.sample_posterior,
                     extra={"flip": config.flip, "seed": str(p["seed"] + i),
                            # where the images and the tokenizer were, for the model card and from_pretrained
                            "data_dir": str(manifest["data_dir"]), "tokenizer_path": Path(ckpt).as_posix()})
        n_images += len(files) * len(tensors)
    encode_rate = n_images / (time.perf_counter() - t0)

    val_files, val_labels = files_and_labels(manifest, "val")
    # the val images' posterior means from their encoding above: decoded, not encoded a second time
    originals, recons, recon_rate = reconstruct(model, val_files, config, image_size=size, device=device,
                                                means=val_means)
    q_psnr, q_ssim = psnr(originals, recons), ssim(originals, recons)
    metrics = {
        "val_psnr_db": float(np.mean(q_psnr)),
        "val_ssim": float(np.mean(q_ssim)),
        "val_psnr_db_min": float(np.min(q_psnr)),
        "val_images": len(val_files),
        "encode_images_per_s": encode_rate,
        "decode_images_per_s": recon_rate,  # val: loaded and decoded
        "device": device.type,
        "latent_shape": list(tensors["latents"].shape[1:]),
    }
    write_json(details_path or details_of(metrics_path), metrics)
    write_headline(metrics_path, {"psnr": metrics["val_psnr_db"], "ssim": metrics["val_ssim"]})  # val, dB and SSIM

    rows, labels_txt = [], []
    for label, user in enumerate(manifest["users"]):
        idx = (val_labels == label).nonzero().flatten()[: config.plot_per_user].tolist()
        rows.append([im for i in idx for im in (originals[i], recons[i])])
        labels_txt.append(user)
    cols = [t for _ in range(config.plot_per_user) for t in ("real", "recon")]
    image_grid(plot_path, rows, labels_txt, cols)
    print(f"extract: {n_images} latents {metrics['latent_shape']} ({encode_rate:.1f} img/s on {device.type}); "
          f"val recon PSNR {metrics['val_psnr_db']:.2f} dB, SSIM {metrics['val_ssim']:.3f} -> {out_dir}")
    return metrics
