"""`texture` stage: the texture and shape cards of the images of data/split.json against a real set's -> metrics/texture.json.

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
    shape_reference = (texture.read_reference(config.shape_reference, texture.SHAPE_FIGURES)
                       if config.shape_reference else None)
    manifest = read_split(split_path)
    card = texture.card(dataset_files(manifest), config.images, seed=p["seed"], shape=True)
    shape = {**card.pop("shape"), "reference": config.shape_reference}
    metrics = {**card, "reference": config.reference, "shape": shape}
    worst = {}
    for part, ref, names, card_name in ((metrics, reference, texture.FIGURES, "texture"),
                                        (shape, shape_reference, texture.SHAPE_FIGURES, "shape")):
        if ref is not None:
            z = texture.distances(part, ref, names)
            part["distance_in_reference_std"] = z
            part["max_distance"] = worst[card_name] = max(max(v) if isinstance(v, list) else v for v in z.values())
    write_json(details_path or details_of(metrics_path), metrics)
    # the headline: the worst distance to the real set over both cards, in its std (none without a reference);
    # one number, so that `dvc metrics show` keeps to 200 columns: `dvc metrics diff --targets
    # metrics/details/texture.json` shows every figure's
    write_headline(metrics_path, {"real_z": max(worst.values())} if worst else {})
    far = "".join(f", {k} card {v:.2f}" for k, v in worst.items())
    print(f"texture: {card['images']} images of {manifest['data_dir']}{far} (largest distances to the real set, "
          f"in its std) -> {metrics_path}")
    return metrics
