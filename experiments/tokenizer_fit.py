"""Does fitting the tokenizer to a user's radar pay? The `tokenizer` stage on spectrograms of a radar the shipped
tokenizer never saw, against the shipped tokenizer on the same held-out images.

    python experiments/tokenizer_fit.py [--steps 1500 4500] [--work DIR] [--out fit.json]

The stand-in for a user's own radar (OTHER_RADAR): a 24 GHz K-band sensor instead of 77 GHz (a 3.2x coarser
Doppler resolution for the same frame), an 80 ms Doppler frame (nfft 1024), and a 60 dB colour range over a 66 dB
peak SNR, so the noise floor shows as textured blue instead of flat navy. Everything else (population, split,
judge recipe, fit recipe) comes from params.yaml; `--steps` overrides tokenizer.fit.steps, one fit per value.
For each tokenizer: val PSNR/SSIM through the posterior mean, the judge's accuracy on the reconstructions (the
judge is trained on the real train split, as the `classifier` stage does) against real val, FID/floor, fit time.
The data, split, judge and fits stay in --work and are reused by a later call.
"""
import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import yaml

from mdgen.simulate import RadarConfig, simulate_dataset
from mdgen.stages import classifier as classifier_stage
from mdgen.stages import split as split_stage
from mdgen.stages import tokenizer as tokenizer_stage
from tokenizer_ceiling import ceiling

OTHER_RADAR = RadarConfig(carrier_hz=24e9, window_s=0.08, nfft=1024, dynamic_range_db=60.0, snr_db=66.0)


def write_params(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, nargs="+", help="tokenizer.fit.steps of each fit (default: params.yaml's)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mdgen-tokenizer-fit"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    tree = yaml.safe_load(Path("params.yaml").read_text())
    work = args.work
    data = work / "data"
    if not (data / "users.json").is_file():
        simulate_dataset(data, tree["simulate"]["users"], tree["simulate"]["images_per_user"], seed=tree["seed"],
                         radar=OTHER_RADAR)
    tree["data"]["dir"] = str(data)
    base = write_params(work / "params.yaml", tree)
    split, judge = work / "split.json", work / "classifier.safetensors"
    if not split.is_file():
        split_stage.main(str(base), out=str(split))
    if not judge.is_file():
        classifier_stage.main(str(base), split_path=str(split), out=str(judge), metrics_path=str(work / "classifier.json"))

    size, seed = tree["data"]["image_size"], tree["seed"]
    rows = [{"name": "shipped", **ceiling(tree["tokenizer"]["checkpoint"], split, judge, size, seed)}]
    for steps in args.steps or [tree["tokenizer"]["fit"]["steps"]]:
        tree["tokenizer"]["fit"]["steps"] = steps
        params = write_params(work / f"params_{steps}.yaml", tree)
        out = work / f"fit_{steps}"
        t0 = time.perf_counter()
        fit = tokenizer_stage.main(str(params), split_path=str(split), out_dir=str(out),
                                   metrics_path=str(out / "metrics.json"))
        rows.append({"name": f"fitted, {steps} steps", "fit_minutes": round((time.perf_counter() - t0) / 60, 2),
                     "train_crop_psnr_db": fit["train_crop_psnr_db"],
                     **ceiling(out / "tokenizer.safetensors", split, judge, size, seed)})

    print(f"\nradar: {dataclasses.asdict(OTHER_RADAR)}\nval images: {rows[0]['images']}, torch threads "
          f"{torch.get_num_threads()}\n")
    print("| tokenizer | fit (min) | val PSNR (dB) | val SSIM | judge on recons | judge on real val | FID / floor |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r.get('fit_minutes', '-')} | {r['psnr_db']:.2f} | {r['ssim']:.3f} | "
              f"{r['judge_accuracy_reconstructions']:.3f} | {r['judge_accuracy_real_val']:.3f} | {r['fid_ratio']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps({"radar": dataclasses.asdict(OTHER_RADAR), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
