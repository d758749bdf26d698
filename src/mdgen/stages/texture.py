"""`texture` stage: the texture card of every image of data/split.json against a reference card -> metrics/texture.json.

It reads the files `split` checked (train, val and dropped: the whole of ${data.dir}), so it runs after
`split` and never meets an image that `split` did not decode.
"""
from __future__ import annotations

from mdgen import params, texture
from mdgen.io import details_of, write_headline, write_json
from mdgen.split import dataset_files, read_split

KEYS = ["seed", "texture"]


def main(params_path: str = "params.yaml", metrics_path: str = "metrics/texture.json",
         split_path: str = "data/split.json", details_path: str | None = None) -> dict:
    p = params.read(KEYS, params_path)
    config = p["texture"]
    reference = texture.read_reference(config.reference) if config.reference else None
    manifest = read_split(split_path)
    card = texture.card(dataset_files(manifest), config.images, seed=p["seed"])
    metrics = {**card, "reference": config.reference}
    if reference is not None:
        z = texture.distances(card, reference)
        metrics["distance_in_reference_std"] = z
        metrics["max_distance"] = max(max(v) if isinstance(v, list) else v for v in z.values())
    write_json(details_path or details_of(metrics_path), metrics)
    # the headline: the worst distance to the real set, in its std (none without a reference)
    write_headline(metrics_path, {"tex_z": metrics["max_distance"]} if reference is not None else {})
    far = "" if reference is None else f", largest distance to the reference {metrics['max_distance']:.2f} std"
    print(f"texture: {card['images']} images of {manifest['data_dir']}{far} -> {metrics_path}")
    return metrics
