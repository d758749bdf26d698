"""Seconds per simulated image on one core: spectrogram, jet colouring and PNG encoding.

    PYTHONPATH=src python benchmarks/simulate_speed.py [--images 20]

Prints wall-clock and CPU time per image; on a shared machine the CPU time is the figure to
compare with the 0.2 s/image budget.
"""
from __future__ import annotations

import argparse
import time

from mdgen.simulate import RadarConfig, png_bytes, sample_users, simulate_spectrogram, spectrogram_to_rgb


def main(images: int) -> None:
    radar = RadarConfig()
    users = sample_users(8, seed=0)
    png_bytes(spectrogram_to_rgb(simulate_spectrogram(users[0], 0, radar), radar.dynamic_range_db))  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(images):
        spec = simulate_spectrogram(users[i % len(users)], 1000 + i, radar)
        png_bytes(spectrogram_to_rgb(spec, radar.dynamic_range_db, radar.image_size))
    wall, cpu = (time.perf_counter() - wall) / images, (time.process_time() - cpu) / images
    print(f"simulate: {wall:.3f} s/image wall, {cpu:.3f} s/image cpu ({images} images, one process)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    main(parser.parse_args().images)
