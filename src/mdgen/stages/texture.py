"""`texture` stage: the texture card of ${data.dir} against a reference card -> metrics/texture.json."""
from __future__ import annotations

from mdgen import params, texture
from mdgen.io import list_dataset_images, write_json

KEYS = ["seed", "data.dir", "texture.images", "texture.reference"]


def main(params_path: str = "params.yaml", metrics_path: str = "metrics/texture.json") -> dict:
    p = params.read(KEYS, params_path)
    reference = texture.read_reference(p["texture.reference"]) if p["texture.reference"] else None
    card = texture.card(list_dataset_images(p["data.dir"]), p["texture.images"], seed=p["seed"])
    metrics = {**card, "reference": p["texture.reference"]}
    if reference is not None:
        z = texture.distances(card, reference)
        metrics["distance_in_reference_std"] = z
        metrics["max_distance"] = max(max(v) if isinstance(v, list) else v for v in z.values())
    write_json(metrics_path, metrics)
    far = "" if reference is None else f", largest distance to the reference {metrics['max_distance']:.2f} std"
    print(f"texture: {card['images']} images of {p['data.dir']}{far} -> {metrics_path}")
    return metrics
