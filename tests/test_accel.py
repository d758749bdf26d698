"""The first multi-threaded call of a vectorised math kernel races (the comment above mdgen.accel.SETTLED_OPS):
fresh processes must compute extract's posterior std to the same bytes, as they did not before the fix (about
four processes in nine came out with another std for the first 16 images of a batch)."""
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

SCRIPT = """
import hashlib, torch
from mdgen.latents import encode_files  # noqa: F401 -- imports mdgen.accel, as `mdgen extract` does
from mdgen.tokenizer import load_tokenizer
model = load_tokenizer("data/pretrained/mdgen-vae-f16d32-sim.safetensors", device=torch.device("cpu"))
g = torch.Generator().manual_seed(0)
x = torch.rand(32, 256, 256, 3, generator=g).permute(0, 3, 1, 2) * 2 - 1  # channels-last, as images load
with torch.no_grad():
    std = model.encode(x).std
print(hashlib.sha256(std.contiguous().numpy().tobytes()).hexdigest())
"""


@pytest.mark.slow
@pytest.mark.skipif(torch.get_num_threads() < 2, reason="the race needs two threads")
def test_posterior_std_repeats_across_processes():
    # a race, so several fresh processes: with the settling switched off, this failed in two runs of three
    digests = {subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout.strip() for _ in range(6)}
    assert len(digests) == 1, f"the posterior std differs between fresh processes: {sorted(digests)}"
