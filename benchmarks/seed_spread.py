"""Quality of the trained default model over several sampling seeds: sample and evaluate again with
`seed` = 0..n-1 for sampling only (the model, the judge and the real data stay those of the pipeline), then
print per seed and on average the two headline figures: conditional accuracy / real val and FID / floor.

    python benchmarks/seed_spread.py [--seeds 4] [--out seeds.json]    # after `dvc repro`, in the repo root

Seed 0 reuses the pipeline's own metrics/evaluate.json when it is there (the same samples).
"""
import argparse
import json
import tempfile
from pathlib import Path

import yaml

from mdgen.stages import evaluate, sample


def one_seed(seed: int, tmp: Path) -> dict:
    if seed == 0 and Path("metrics/evaluate.json").is_file():
        return json.loads(Path("metrics/evaluate.json").read_text())
    p = yaml.safe_load(Path("params.yaml").read_text())
    p["seed"] = seed
    params_path = tmp / f"params_{seed}.yaml"
    params_path.write_text(yaml.safe_dump(p))
    samples = tmp / f"samples_{seed}"
    sample.main(str(params_path), out_dir=str(samples), plot_path=str(tmp / f"samples_{seed}.png"),
                metrics_path=str(tmp / f"sample_{seed}.json"))
    out = tmp / f"evaluate_{seed}.json"
    evaluate.main("params.yaml", samples_dir=str(samples), metrics_path=str(out), plots_dir=str(tmp / f"plots_{seed}"))
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="seed-spread-") as tmp:
        for seed in range(args.seeds):
            m = one_seed(seed, Path(tmp))
            c, d = m["conditional"], m["distribution"]
            rows.append({"seed": seed, "accuracy": c["generated_accuracy"], "real_val": c["real_val_accuracy"],
                         "accuracy_ratio": c["generated_accuracy"] / c["real_val_accuracy"],
                         "fid": d["fid"], "floor": d["fid_real_floor"], "fid_ratio": d["fid"] / d["fid_real_floor"]})
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "seed"}
    print("| sampling seed | conditional accuracy | × real val | FID | × floor |\n|---|---:|---:|---:|---:|")
    for r in rows + [{"seed": "mean", **mean}]:
        print(f"| {r['seed']} | {r['accuracy']:.3f} | {r['accuracy_ratio']:.3f} | {r['fid']:.2f} | {r['fid_ratio']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps({"seeds": rows, "mean": mean}, indent=2) + "\n")


if __name__ == "__main__":
    main()
