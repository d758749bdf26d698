"""tests/gpu/smoke.sh runs on a CPU (BENCH_DRY_RUN=1), so the script a GPU user is handed works there first."""
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = ["simulate", "split", "tokenizer", "extract", "stats", "train_fp16", "train_ddp_1proc", "train_bf16", "sample",
         "classifier", "sift", "evaluate", "generate", "vavae_full_size"]


@pytest.mark.slow
def test_gpu_smoke_dry_run_passes_every_step(tmp_path):
    p = subprocess.run(["bash", str(REPO / "tests/gpu/smoke.sh")], capture_output=True, text=True, timeout=900,
                       env={**os.environ, "BENCH_DRY_RUN": "1", "OUT": str(tmp_path), "PL_DISABLE_FORK": "1"})
    summary = (tmp_path / "summary.txt").read_text()
    assert p.returncode == 0, summary + (tmp_path / "smoke.log").read_text()[-4000:]
    lines = summary.splitlines()
    assert lines[0].startswith("card: no CUDA device")
    assert [line.split()[0] for line in lines[1:]] == STEPS and all(" ok " in line for line in lines[1:])
    assert "VA-VAE fp32: latents (4, 32, 4, 4)" in (tmp_path / "smoke.log").read_text()
