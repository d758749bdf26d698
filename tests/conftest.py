"""Shared test helpers: a throw-away git+DVC copy of this repository with tiny params."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# what a pipeline run needs from the repo (tests/ and benchmarks/ stay behind)
PIPELINE_FILES = ["dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", ".gitignore", "src", "data/pretrained"]

TINY_PARAMS = {
    "simulate": {"users": 2, "images_per_user": 6},
    "split": {"val_fraction": 0.34, "block_size": 2},
}


def _merge(tree: dict, overrides: dict) -> dict:
    for k, v in overrides.items():
        if isinstance(v, dict):
            _merge(tree.setdefault(k, {}), v)
        else:
            tree[k] = v
    return tree


class DvcRepo:
    def __init__(self, root: Path):
        self.root = root

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
        p = subprocess.run(list(args), cwd=self.root, capture_output=True, text=True, env=env)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def repro(self, *targets: str) -> set[str]:
        """Run `dvc repro` and return the names of the stages that actually ran."""
        p = self.run("dvc", "repro", *targets)
        return set(re.findall(r"Running stage '([^']+)'", p.stdout + p.stderr))

    def set_params(self, overrides: dict) -> None:
        path = self.root / "params.yaml"
        tree = _merge(yaml.safe_load(path.read_text()), overrides)
        path.write_text(yaml.safe_dump(tree, sort_keys=False))


@pytest.fixture
def dvc_repo(tmp_path) -> DvcRepo:
    """A fresh git+DVC copy of the pipeline with tiny params, committed once."""
    root = tmp_path / "repo"
    root.mkdir()
    for rel in PIPELINE_FILES:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, root / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    repo = DvcRepo(root)
    repo.set_params(TINY_PARAMS)
    repo.run("git", "init", "-q")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "init")
    return repo


def write_params(path: Path, overrides: dict) -> Path:
    """The repo's params.yaml with `overrides` merged in, written to `path`."""
    tree = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), overrides)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def make_image_folder(root: Path, users: int = 2, per_user: int = 4, size: int = 64, seed: int = 0) -> Path:
    """A tiny folder in the real-data layout: smooth random colour images, one folder per user."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for u in range(1, users + 1):
        (root / f"ID_{u}").mkdir(parents=True, exist_ok=True)
        for k in range(per_user):
            base = rng.uniform(0, 255, size=(4, 4, 3))
            img = np.kron(base, np.ones((size // 4, size // 4, 1))).astype(np.uint8)
            Image.fromarray(img).save(root / f"ID_{u}" / f"ID{u}_case1_1_Doppler{k + 1}.png")
    return root


def make_tiny_tokenizer(path: Path, seed: int = 0) -> Path:
    """A random-weight f16 tokenizer small enough for tests (64x64 images -> 32x4x4 latents)."""
    import torch

    from mdgen.tokenizer import AutoencoderKL, save_tokenizer

    torch.manual_seed(seed)
    model = AutoencoderKL(ch=32, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1, attn_resolutions=(), resolution=64)
    save_tokenizer(model, path)
    return path
