"""`split` stage: ${data.dir} -> data/split.json (per-user train/val file lists)."""
from __future__ import annotations

from mdgen import params
from mdgen.io import write_json
from mdgen.split import make_split

KEYS = ["seed", "data.dir", "split.val_fraction", "split.mode", "split.block_size", "split.gap"]


def main(params_path: str = "params.yaml", out: str = "data/split.json") -> dict:
    p = params.read(KEYS, params_path)
    manifest = make_split(p["data.dir"], p["split.val_fraction"], p["seed"], p["split.mode"],
                          p["split.block_size"], p["split.gap"])
    write_json(out, manifest)
    c = manifest["counts"]
    print(f"split: {len(manifest['users'])} users, {c['train']} train / {c['val']} val images "
          f"({p['split.mode']}, {c['dropped']} dropped as val neighbours) -> {out}")
    return manifest
