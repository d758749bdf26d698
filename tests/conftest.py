"""Shared test helpers: a throw-away git+DVC copy of this repository with tiny params."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# what a pipeline run needs from the repo (tests/ and benchmarks/ stay behind)
PIPELINE_FILES = ["dvc.yaml", "params.yaml", ".dvcignore", ".dvc/config", ".dvc/.gitignore", ".gitignore", "src",
                  "data/pretrained", "data/reference"]

# the tiny tokenizer the `dvc_repo` fixture writes and commits (64x64 images -> 32x4x4 latents)
TINY_TOKENIZER = "data/pretrained/tiny-vae.safetensors"

# every stage CPU-sized: the whole pipeline runs in well under a minute on 2 cores
TINY_PARAMS = {
    "data": {"image_size": 64},
    "simulate": {"users": 2, "images_per_user": 6},
    "texture": {"images": 4},
    "split": {"val_fraction": 0.34, "block_size": 2},
    # steps 0 as by default (the tokenizer handed on as it is); the tests that fit set steps
    "tokenizer": {"checkpoint": TINY_TOKENIZER,
                  "fit": {"steps": 0, "batch_size": 2, "crop": 32, "final_crop": 64, "final_steps": 1,
                          "warmup_steps": 0, "checkpoint_every": 2, "threads": 1}},
    "extract": {"batch_size": 8, "plot_per_user": 1},
    # Tiny/1 on 4x4 latents (model.* has no width/depth keys; 16 tokens keep it fast)
    "model": {"name": "LightningDiT-Tiny/1"},
    "train": {"max_steps": 4, "batch_size": 2, "warmup_steps": 0, "checkpoint_every": 4, "val_every": 4,
              "accelerator": "cpu", "compile": False},
    # fp32: a 4-step model's velocities are so small that bf16 rounding can make two sampling
    # settings give the same images, and the DVC tests need every sample.* change to change them
    "sample": {"images_per_user": 2, "steps": 2, "batch_size": 4, "plot_per_user": 1, "precision": "fp32"},
    "classifier": {"image_size": 16, "width": 2, "steps": 2, "batch_size": 4},
    # a 4-step DiT's samples pass no plausibility test, and an empty sifted set has no gain to show: keep all
    # (the tests of mdgen.sift test the sifting)
    "sift": {"method": "none"},
    # one process: spawning a pool of two (torch imported in each) took longer than these classifiers train;
    # tests/test_classifier.py covers classifiers trained side by side
    "evaluate": {"fewshot_per_user": 1, "fewshot_steps": 1, "seeds": 1, "full_seeds": 1, "workers": 1,
                 "floor_subsets": 1, "kid_subsets": 2, "kid_subset_size": 2,
                 "precision_recall_k": 1, "density_coverage_k": 1, "plot_pairs": 2},
}


def split_config(val_fraction: float, mode: str = "blocks", block_size: int = 6, gap: int = 1):
    """A `split` section for tests that split a folder by hand (params.yaml's values but val_fraction)."""
    from mdgen.params import SplitConfig
    return SplitConfig(val_fraction=val_fraction, mode=mode, block_size=block_size, gap=gap)


def _merge(tree: dict, overrides: dict) -> dict:
    for k, v in overrides.items():
        if isinstance(v, dict):
            _merge(tree.setdefault(k, {}), v)
        else:
            tree[k] = v
    return tree


def stages_run(output: str) -> set[str]:
    """Stages a `dvc repro` / `dvc exp run` output says it ran (not those skipped or restored from the run cache)."""
    return set(re.findall(r"Running stage '([^']+)'", output))


class DvcRepo:
    def __init__(self, root: Path):
        self.root = root

    def env(self, extra: dict[str, str | None] | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            # `dvc` and the stages' `mdgen` from this interpreter's environment, activated or not
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            # DVC keeps per-repo state in a site cache dir (/var/tmp/dvc by default): keep it beside the repo
            "DVC_SITE_CACHE_DIR": str(self.root.parent / ".dvc-site-cache"),
            "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
            # tiny tensors gain nothing from a second thread, and on a busy 2-core box two spinning OpenMP
            # threads make every stage several times slower (4 train steps: 14 s vs 2 s)
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        env.update(extra or {})  # a None value removes the variable
        return {k: v for k, v in env.items() if v is not None}

    def run(self, *args: str, check: bool = True, timeout: float | None = 900,
            env: dict[str, str | None] | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run(list(args), cwd=self.root, capture_output=True, text=True, env=self.env(env),
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def copy(self, dest: Path) -> "DvcRepo":
        """A copy of the whole repository (git history, DVC cache, workspace) at `dest`."""
        shutil.copytree(self.root, dest, symlinks=True)
        return DvcRepo(dest)

    def repro(self, *targets: str) -> set[str]:
        """Run `dvc repro` and return the names of the stages that actually ran."""
        p = self.run("dvc", "repro", *targets)
        return stages_run(p.stdout + p.stderr)

    def set_params(self, overrides: dict) -> None:
        path = self.root / "params.yaml"
        tree = _merge(yaml.safe_load(path.read_text()), overrides)
        path.write_text(yaml.safe_dump(tree, sort_keys=False))


def make_dvc_repo(root: Path) -> DvcRepo:
    """A git+DVC copy of the pipeline at `root` with TINY_PARAMS and a tiny tokenizer, committed once."""
    root.mkdir(parents=True)
    for rel in PIPELINE_FILES:
        src = REPO / rel
        if src.is_dir():
            # user-supplied checkpoints in data/pretrained (the 2 GB VA-VAE .pt) stay behind
            shutil.copytree(src, root / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pt",
                                                                           "*.ckpt"))
        elif src.exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    repo = DvcRepo(root)
    repo.set_params(TINY_PARAMS)
    make_tiny_tokenizer(root / TINY_TOKENIZER)
    repo.run("git", "init", "-q")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "init")
    return repo


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module of tiny models: a second thread only adds synchronisation,
    and on a shared 2-core CPU oversubscription costs ~10x. Use with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def dvc_repo(tmp_path) -> DvcRepo:
    """A fresh git+DVC copy of the pipeline with tiny params, committed once."""
    return make_dvc_repo(tmp_path / "repo")


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


def load_upstream_dit(name: str):
    """(eval-mode LightningDiT with the fixture's weights, fixture tensors) for an upstream parity fixture."""
    import json

    from safetensors.torch import load_file

    from mdgen.dit import LightningDiT

    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    cfg = {k: v for k, v in meta["model_config"].items() if k not in ("learn_sigma", "use_checkpoint")}
    tensors = load_file(FIXTURES / f"{name}.safetensors")
    model = LightningDiT(**cfg)
    model.load_state_dict({k.removeprefix("state_dict."): v for k, v in tensors.items() if k.startswith("state_dict.")})
    return model.eval(), tensors
