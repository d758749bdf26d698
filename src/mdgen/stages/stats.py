"""`stats` stage: train latents -> data/latents/latents_stats.pt (upstream format) + metrics."""
from __future__ import annotations

import torch

from mdgen import params
from mdgen.errors import ParamsError
from mdgen.io import read_safetensors, write_json
from mdgen.latents import compute_stats, load_stats, save_stats

KEYS = ["stats"]


def summarize(stats: dict[str, torch.Tensor]) -> dict:
    mean, std = stats["mean"].flatten(), stats["std"].flatten()
    return {"mean": [round(v, 6) for v in mean.tolist()], "std": [round(v, 6) for v in std.tolist()],
            "mean_abs_max": float(mean.abs().max()), "std_min": float(std.min()), "std_max": float(std.max()),
            "std_mean": float(std.mean())}


def main(params_path: str = "params.yaml", latents_path: str = "data/latents/train.safetensors",
         out: str = "data/latents/latents_stats.pt", metrics_path: str = "metrics/details/stats.json") -> dict:
    config = params.read(KEYS, params_path)["stats"]
    if config.source == "reference" and not config.reference:
        raise ParamsError("stats.source = 'reference' needs stats.reference: <path to latents_stats.pt>")
    latents = read_safetensors(latents_path, "latents file")[1]["latents"]
    data_stats = compute_stats(latents)
    metrics = {"source": config.source, "latents": list(latents.shape), "data": summarize(data_stats)}
    chosen = data_stats
    if config.reference:
        ref = load_stats(config.reference, channels=latents.shape[1])
        d_mean = (data_stats["mean"] - ref["mean"]).flatten()
        log_ratio = torch.log(data_stats["std"] / ref["std"]).flatten()
        metrics["reference"] = {"path": config.reference, **summarize(ref),
                                "mean_l2_distance": float(d_mean.norm()),
                                "std_log_ratio_rms": float(log_ratio.pow(2).mean().sqrt())}
        if config.source == "reference":
            chosen = ref
    save_stats(out, chosen)
    write_json(metrics_path, metrics)
    s = metrics["data"]
    print(f"stats: {latents.shape[0]} train latents, channel std {s['std_min']:.3f}..{s['std_max']:.3f}; "
          f"using {config.source} stats -> {out}")
    return metrics
