"""The real-data recipe of docs/gpu.md ("Real data on GPUs"), command by command, on a CPU: Kaggle paths point
at a tiny image folder and a random full-architecture VA-VAE `.pt`, and the `dvc exp run` gets CPU-sized
overrides for what a CPU cannot do."""
import re
import shlex

import pytest
import torch

from tests.conftest import make_dvc_repo, make_image_folder
from tests.test_workflows import doc_section

# what a CPU test cannot run as written: GPUs, B/1 at 10,000 steps, 150 images per person
CPU_OVERRIDES = {"train.accelerator": "cpu", "train.devices": "1", "train.strategy": "auto",
                 "model.name": "LightningDiT-Tiny/1", "train.max_steps": "2", "train.batch_size": "2",
                 "train.warmup_steps": "0", "train.checkpoint_every": "2", "train.val_every": "2",
                 "extract.batch_size": "4", "sample.images_per_user": "2", "sample.steps": "2",
                 "sample.batch_size": "2"}


def bash_commands(title: str) -> list[str]:
    """The command lines of the ```bash blocks under `### title` of docs/gpu.md's "Real data on GPUs"."""
    part = doc_section("docs/gpu.md", title)
    assert part in doc_section("docs/gpu.md", "Real data on GPUs"), title
    lines = [ln.split("#")[0].strip() for b in re.findall(r"```bash\n(.*?)```", part, flags=re.S)
             for ln in b.replace("\\\n", " ").splitlines()]
    return [ln for ln in lines if ln]


@pytest.mark.slow
def test_kaggle_recipe_runs_on_cpu(tmp_path):
    repo = make_dvc_repo(tmp_path / "repo")
    kaggle = tmp_path / "kaggle/input"
    make_image_folder(kaggle / "gait-spectrograms", users=2, per_user=6, size=256)
    (kaggle / "vavae").mkdir()
    torch.manual_seed(0)
    from mdgen.tokenizer import AutoencoderKL
    torch.save({"state_dict": AutoencoderKL().state_dict()}, kaggle / "vavae/vavae-imagenet256-f16d32-dinov2.pt")

    steps = bash_commands("Data and weights into the repository") + bash_commands("Kaggle 2×T4")
    assert any(c.startswith("dvc add") for c in steps) and sum(c.startswith("dvc exp run") for c in steps) == 1
    for command in steps:
        args = shlex.split(command.replace("/kaggle/input", str(kaggle)))
        if args[:3] == ["dvc", "exp", "run"]:
            kept = [a for i, a in enumerate(args[3:]) if not (
                a.split("=", 1)[0] in CPU_OVERRIDES or (a == "-S" and args[3 + i + 1].split("=", 1)[0] in CPU_OVERRIDES))]
            args = args[:3] + kept + [x for k, v in CPU_OVERRIDES.items() for x in ("-S", f"{k}={v}")]
        repo.run(*args, timeout=1500)

    assert (repo.root / "data/real.dvc").is_file() and sorted(p.name for p in (repo.root / "data/real").iterdir()) == \
        ["ID_1", "ID_2"]
    assert sorted(p.name for p in (repo.root / "data/samples").iterdir()) == ["ID_1", "ID_2"]
    shown = repo.run("dvc", "metrics", "show").stdout
    assert "metrics/evaluate.json" in shown and "metrics/extract.json" in shown
    lock = (repo.root / "dvc.lock").read_text()
    assert "vavae-imagenet256-f16d32-dinov2.pt" in lock  # extract depended on the VA-VAE file...
    cache = repo.root / ".dvc/cache"
    big = [f for f in cache.rglob("*") if f.is_file() and f.stat().st_size > 100_000_000]
    assert not big, big  # ...which was hashed, not copied into the DVC cache
