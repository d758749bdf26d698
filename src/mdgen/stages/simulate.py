"""`simulate` stage: params simulate.* -> data/simulated/ID_<n>/*.png and users.json."""
from __future__ import annotations

import time

from mdgen import params
from mdgen.simulate import simulate_dataset

KEYS = ["seed", "simulate"]


def main(params_path: str = "params.yaml", out: str = "data/simulated") -> dict:
    p = params.read(KEYS, params_path)
    config = p["simulate"]
    t0 = time.perf_counter()
    info = simulate_dataset(out, n_users=config.users, images_per_user=config.images_per_user, seed=p["seed"])
    n = config.users * config.images_per_user
    print(f"simulate: {config.users} users x {config.images_per_user} images = {n} "
          f"spectrograms in {time.perf_counter() - t0:.1f} s -> {out}")
    return info
