"""`split` stage: ${data.dir} -> data/split.json (per-user train/val file lists).

Every image is decoded here, once, and every problem of the folder is reported in one error, so no later
stage meets an unreadable image; images that are not data.image_size square are reported on stdout with
what extract will do to them (split.json itself does not depend on the sizes).
"""
from __future__ import annotations

from mdgen import params
from mdgen.io import write_json
from mdgen.split import check_data, make_split, size_report

KEYS = ["seed", "data.dir", "data.image_size", "split"]


def main(params_path: str = "params.yaml", out: str = "data/split.json") -> dict:
    p = params.read(KEYS, params_path)
    sizes = check_data(p["data.dir"])
    manifest = make_split(p["data.dir"], p["split"], p["seed"], verify_images=False)
    write_json(out, manifest)
    c = manifest["counts"]
    print(f"split: {len(manifest['users'])} users, {c['train']} train / {c['val']} val images "
          f"({p['split'].mode}, {c['dropped']} dropped as val neighbours) -> {out}")
    if report := size_report(sizes, p["data.image_size"], p["data.dir"]):
        print("split: " + "\n".join(report))
    return manifest
