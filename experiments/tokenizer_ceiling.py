"""What the tokenizer lets any DiT reach: the real val images of the pipeline's split, reconstructed through the
posterior mean, judged like generated samples. Prints PSNR/SSIM, the judge's accuracy on the reconstructions
against real val, and their FID in the judge's features against the real-vs-real floor (train vs val, drawn
at the same count, as `evaluate` does).

    python experiments/tokenizer_ceiling.py [--tokenizer PATH] [--out ceiling.json]   # after `dvc repro`

Reads params.yaml (tokenizer.checkpoint, data.image_size, seed), data/split.json and the judge
models/classifier.safetensors. `experiments/tokenizer_fit.py` calls `ceiling` for several tokenizers.
"""
import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import yaml

from mdgen import params
from mdgen.classifier import features, load_classifier, predict
from mdgen.images import load_images
from mdgen.latents import reconstruct
from mdgen.metrics import fid_floor, frechet_distance
from mdgen.quality import psnr, ssim
from mdgen.split import files_and_labels, read_split
from mdgen.tokenizer import load_tokenizer


def ceiling(tokenizer: str | Path, split_path: str | Path, judge_path: str | Path, image_size: int, seed: int) -> dict:
    """PSNR/SSIM of the val split through `tokenizer`, the judge's accuracy on them and their FID/floor."""
    manifest = read_split(split_path)
    judge, _ = load_classifier(judge_path)
    train_files, _ = files_and_labels(manifest, "train")
    val_files, y_val = files_and_labels(manifest, "val")
    extract = dataclasses.replace(params.load().extract, batch_size=16, precision="fp32")
    originals, recons, _ = reconstruct(load_tokenizer(tokenizer), val_files, extract, image_size=image_size)
    y_val = y_val.numpy()
    f_train, f_val, f_rec = (features(judge, x) for x in (load_images(train_files, image_size), originals, recons))
    acc_val = float(np.mean(predict(judge, originals).argmax(1) == y_val))
    acc_rec = float(np.mean(predict(judge, recons).argmax(1) == y_val))
    fid, (floor, _) = frechet_distance(f_rec, f_val), fid_floor(f_train, f_val, len(f_rec), seed, subsets=3)
    return {"tokenizer": str(tokenizer), "images": len(val_files), "psnr_db": float(np.mean(psnr(originals, recons))),
            "ssim": float(np.mean(ssim(originals, recons))), "judge_accuracy_real_val": acc_val,
            "judge_accuracy_reconstructions": acc_rec, "fid": fid, "fid_real_floor": floor, "fid_ratio": fid / floor}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="checkpoint (default: params.yaml tokenizer.checkpoint)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    p = yaml.safe_load(Path("params.yaml").read_text())
    path = args.tokenizer or p["tokenizer"]["checkpoint"]
    out = ceiling(path, "data/split.json", "models/classifier.safetensors", p["data"]["image_size"], p["seed"])
    print(f"{path}: {out['images']} val images, PSNR {out['psnr_db']:.2f} dB, SSIM {out['ssim']:.3f}; judge accuracy "
          f"{out['judge_accuracy_reconstructions']:.3f} on reconstructions, {out['judge_accuracy_real_val']:.3f} on "
          f"the originals; FID {out['fid']:.2f} against a floor of {out['fid_real_floor']:.2f} ({out['fid_ratio']:.2f}x)")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
