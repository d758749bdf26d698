"""What the tokenizer lets any DiT reach: the real val images of the pipeline's split, reconstructed through the
posterior mean, judged like generated samples. Prints PSNR/SSIM, the judge's accuracy on the reconstructions
against real val, and their FID in the judge's features against the real-vs-real floor (train vs val, drawn
at the same count, as `evaluate` does).

    python benchmarks/tokenizer_ceiling.py [--tokenizer PATH] [--out ceiling.json]   # after `dvc repro`

Reads params.yaml (tokenizer.checkpoint, data.image_size, seed), data/split.json and the judge
models/classifier.safetensors.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from mdgen.classifier import features, load_classifier, predict
from mdgen.evaluation import fid_floor, frechet_distance
from mdgen.images import load_images
from mdgen.latents import reconstruct
from mdgen.quality import psnr, ssim
from mdgen.split import files_and_labels, read_split
from mdgen.tokenizer import load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="checkpoint (default: params.yaml tokenizer.checkpoint)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    p = yaml.safe_load(Path("params.yaml").read_text())
    size, seed = p["data"]["image_size"], p["seed"]
    path = args.tokenizer or p["tokenizer"]["checkpoint"]
    manifest = read_split("data/split.json")
    judge, _ = load_classifier("models/classifier.safetensors")
    train_files, _ = files_and_labels(manifest, "train")
    val_files, y_val = files_and_labels(manifest, "val")
    originals, recons, _ = reconstruct(load_tokenizer(path), val_files, image_size=size, batch_size=16,
                                       precision="fp32")
    y_val = y_val.numpy()
    f_train, f_val, f_rec = (features(judge, x) for x in (load_images(train_files, size), originals, recons))
    acc_val = float(np.mean(predict(judge, originals).argmax(1) == y_val))
    acc_rec = float(np.mean(predict(judge, recons).argmax(1) == y_val))
    fid, (floor, _) = frechet_distance(f_rec, f_val), fid_floor(f_train, f_val, len(f_rec), seed, subsets=3)
    out = {"tokenizer": path, "images": len(val_files), "psnr_db": float(np.mean(psnr(originals, recons))),
           "ssim": float(np.mean(ssim(originals, recons))), "judge_accuracy_real_val": acc_val,
           "judge_accuracy_reconstructions": acc_rec, "fid": fid, "fid_real_floor": floor, "fid_ratio": fid / floor}
    print(f"{path}: {len(val_files)} val images, PSNR {out['psnr_db']:.2f} dB, SSIM {out['ssim']:.3f}; judge "
          f"accuracy {acc_rec:.3f} on reconstructions, {acc_val:.3f} on the originals; FID {fid:.2f} against "
          f"a floor of {floor:.2f} ({fid / floor:.2f}x)")
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
