"""The Python API (docs/python-api.md): `from mdgen import SpectrogramGenerator`, `from_pretrained` on what a run
recorded, `generate`, the model card `train` writes, `mdgen --version` and the help of every option."""
import argparse
import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import mdgen
from mdgen import cli, params
from mdgen.errors import BadFileError, MissingFileError, ParamsError
from tests.conftest import REPO, make_dvc_repo, make_image_folder, make_tiny_tokenizer, split_config, write_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SRC = REPO / "src" / "mdgen"
# the tokenizer: tokenizer.checkpoint, which the `tokenizer` stage names (steps 0) for extract and sample
TOKENIZER = "data/pretrained/tiny.safetensors"
STATS = "data/latents/latents_stats.pt"


def python_block(markdown: str) -> str:
    """The first ```python block of a markdown text."""
    m = re.search(r"^```python\n(.*?)^```", markdown, flags=re.M | re.S)
    assert m, "no ```python block"
    return m.group(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny training run in its own folder, with relative paths as under `dvc repro`: images, split, the tokenizer
    stage, extract, stats, 4 training steps (the tiny pipeline's) and the sample stage, each run from inside it."""
    from mdgen.split import make_split
    from mdgen.stages import extract, sample, stats, tokenizer, train

    root = tmp_path_factory.mktemp("run")
    make_image_folder(root / "data/images", users=2, per_user=4)
    make_tiny_tokenizer(root / TOKENIZER)
    write_params(root / "params.yaml", {
        "data": {"dir": "data/images", "image_size": 64}, "tokenizer": {"checkpoint": TOKENIZER},
        "extract": {"batch_size": 4, "plot_per_user": 1}, "model": {"name": "LightningDiT-Tiny/1"},
        "train": {"max_steps": 4, "batch_size": 3, "checkpoint_every": 4, "val_every": 4, "warmup_steps": 0,
                  "compile": False, "accelerator": "cpu"},
        "sample": {"images_per_user": 2, "steps": 2, "batch_size": 2, "plot_per_user": 1, "precision": "fp32"}})
    cwd = os.getcwd()
    os.chdir(root)
    try:
        Path("data/split.json").write_text(json.dumps(make_split(Path("data/images"), split_config(0.25, mode="random"), 0)))
        tokenizer.main()
        extract.main()
        stats.main()
        train.main()
        sample.main()
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture(scope="module")
def gen(run):
    from mdgen.generator import SpectrogramGenerator
    return SpectrogramGenerator.from_pretrained("models/dit", root=run)


# ----------------------------------------------------------------------------- from_pretrained, generate

def test_from_pretrained_finds_what_the_run_recorded_and_samples_as_the_stage(run, gen, tmp_path, monkeypatch):
    from mdgen.checkpoints import read_ema_meta
    meta = read_ema_meta(run / "models/dit/ema.safetensors")
    assert meta["stats_path"] == STATS and meta["tokenizer_path"] == TOKENIZER  # relative, as the run had them
    p = params.read(["seed", "sample"], run / "params.yaml")
    assert gen.sample == p["sample"] and gen.seed == p["seed"] and gen.users == ["ID_1", "ID_2"]
    monkeypatch.chdir(tmp_path)  # not the run's folder: root= says where it is
    with pytest.raises(MissingFileError, match=r"^models/dit/ema.safetensors not found \(looked from .*pass root="):
        type(gen).from_pretrained("models/dit")
    images = gen.generate("ID_2", n=2)
    assert images.dtype == np.uint8 and images.shape == (2, 64, 64, 3)
    # n = sample.images_per_user: the sample stage's images of that person
    stage = [np.asarray(Image.open(run / f"data/samples/ID_2/{k:05d}.png")) for k in range(2)]
    np.testing.assert_array_equal(images, np.stack(stage))
    pil = gen.to_pil(images)
    assert len(pil) == 2 and pil[0].mode == "RGB" and pil[0].size == (64, 64)
    np.testing.assert_array_equal(np.asarray(pil[1]), images[1])


def test_generate_overrides_are_checked_like_their_params_twins(gen, monkeypatch):
    for kwargs, message in [({"cfg_scale": float("nan")}, "cfg_scale = nan: expected a number in [0.0, inf)"),
                            ({"steps": 0}, "steps = 0: expected an integer in [1, 10000]"),
                            ({"seed": -1}, "seed = -1: expected an integer in [0, 4294967295]"),
                            ({"n": 0}, "n = 0: expected an integer in [1, inf)")]:
        with pytest.raises(ParamsError) as e:
            gen.generate("ID_1", **{"n": 1, **kwargs})
        assert str(e.value) == message
    with pytest.raises(ParamsError, match=r"^unknown user 'ID_9'; valid users: ID_1, ID_2$"):
        gen.generate("ID_9", n=1)
    one = gen.generate("ID_1", n=2)
    np.testing.assert_array_equal(one, gen.generate("ID_1", n=2))  # the same call, the same images
    assert not np.array_equal(one, gen.generate("ID_1", n=2, seed=gen.seed + 1))
    # what reaches the sampler (4 training steps move too little for 1 or 2 solver steps to differ in uint8)
    sampled, real = [], gen.images
    monkeypatch.setattr(gen, "images", lambda user, n, config, seed: (sampled.append((config, seed)),
                                                                      real(user, n, config, seed))[1])
    gen.generate("ID_1", n=1, steps=1, cfg_scale=2, seed=5)
    assert sampled == [(dataclasses.replace(gen.sample, steps=1, cfg_scale=2.0), 5)] and gen.sample.steps == 2
    assert gen.options(steps=1, cfg_scale=2, seed=5) == sampled[0]


def test_a_model_without_recorded_paths_says_what_to_pass(run, tmp_path):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from mdgen.generator import SpectrogramGenerator
    from mdgen.io import save_safetensors
    ema = run / "models/dit/ema.safetensors"
    with safe_open(str(ema), "pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k not in ("stats_path", "tokenizer_path")}
    old = tmp_path / "old"
    save_safetensors(load_file(str(ema)), old / "ema.safetensors", meta)  # as an older mdgen wrote it
    with pytest.raises(BadFileError) as e:
        SpectrogramGenerator.from_pretrained(old, root=run)
    assert str(e.value).startswith(f"{old / 'ema.safetensors'} records no stats_path and no tokenizer_path")
    assert "from_pretrained(model_dir, stats=..., tokenizer=...)" in str(e.value)
    assert "SpectrogramGenerator.load(ema_path, stats_path, tokenizer_path)" in str(e.value)
    gen = SpectrogramGenerator.from_pretrained(old, root=run, stats=run / STATS, tokenizer=run / TOKENIZER)
    assert gen.users == ["ID_1", "ID_2"]
    # a file given by hand is checked as the recorded one is
    s = torch.load(run / STATS, weights_only=True)
    torch.save({"mean": s["mean"] + 1, "std": s["std"]}, tmp_path / "stats.pt")
    with pytest.raises(BadFileError, match="stats.pt is not the latent statistics .* was trained with"):
        SpectrogramGenerator.from_pretrained("models/dit", root=run, stats=tmp_path / "stats.pt")


# ----------------------------------------------------------------------------- the model card

def test_train_writes_a_model_card_whose_snippet_runs(run, monkeypatch):
    import torch

    from mdgen.checkpoints import load_ema
    text = (run / "models/dit/README.md").read_text()
    assert text.startswith("---\n")
    _, front, body = text.split("---\n", 2)
    front = yaml.safe_load(front)
    assert front["library_name"] == "mdgen" and {"rectified-flow", "class-conditional"} <= set(front["tags"])
    model, _ = load_ema(run / "models/dit/ema.safetensors")
    assert front["mdgen"] == {
        "model": "LightningDiT-Tiny/1", "parameters": sum(p.numel() for p in model.parameters()), "steps": 4,
        "persons": ["ID_1", "ID_2"], "image_size": 64, "latent_shape": [32, 4, 4], "tokenizer": TOKENIZER,
        "tokenizer_sha256": front["mdgen"]["tokenizer_sha256"], "stats": STATS,
        "stats_sha256": front["mdgen"]["stats_sha256"]}
    assert not re.search(r"\{[a-z_]+[^}]*\}", body.replace("{}", "")), "a template field left unfilled"
    for fragment in ("LightningDiT-Tiny/1", "`data/images`, 2 persons: ID_1, ID_2", f"`{TOKENIZER}`",
                     "max_steps: 4", "metrics/evaluate.json", "dvc metrics show"):
        assert fragment in body, fragment
    monkeypatch.chdir(run)  # the card's "how to load it", run where it says: the repository root
    scope = {}
    exec(python_block(body), scope)
    assert scope["images"].shape == (16, 64, 64, 3)
    assert isinstance(scope["gen"].model, torch.nn.Module)


# ----------------------------------------------------------------------------- the command line

def test_mdgen_generate_loads_what_the_model_records(run, gen, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(run)
    assert cli.main(["generate", "--user", "ID_2", "--n", "2", "--out", str(tmp_path / "g")]) == 0
    made = [np.asarray(Image.open(tmp_path / "g" / f"ID_2_{k:04d}.png")) for k in range(2)]
    np.testing.assert_array_equal(np.stack(made), gen.generate("ID_2", n=2))
    other = make_tiny_tokenizer(tmp_path / "other.safetensors", seed=1)
    args = ["generate", "--user", "ID_2", "--n", "1", "--tokenizer", str(other)]
    assert cli.main([*args, "--out", str(tmp_path / "o")]) == 1
    assert f"tokenizer {other} is not the one whose latents" in capsys.readouterr().err
    assert cli.main([*args, "--out", str(tmp_path / "o"), "--allow-other-tokenizer"]) == 0
    assert len(list((tmp_path / "o").iterdir())) == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"mdgen {mdgen.__version__} (torch ")
    # one version: pyproject.toml reads the package's
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["dynamic"]["version"] == \
        {"attr": "mdgen.__version__"}


def test_every_option_of_every_command_has_help():
    missing = []

    def walk(parser: argparse.ArgumentParser, name: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for command, sub in action.choices.items():
                    if not helps.get(command):
                        missing.append(f"{name} {command}")
                    walk(sub, f"{name} {command}")
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")

    walk(cli.build_parser(), "mdgen")
    assert not missing, f"no help text: {missing}"


# ----------------------------------------------------------------------------- the lazy export

def test_the_package_exports_the_generator_without_importing_torch_for_the_rest():
    code = (
        "import sys\n"
        "import mdgen.split, mdgen.params, mdgen.cli\n"
        "assert 'torch' not in sys.modules, 'torch imported by mdgen.split/params/cli'\n"
        "try:\n"
        "    mdgen.cli.main(['--version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported by mdgen --version'\n"
        "import mdgen\n"
        "assert 'SpectrogramGenerator' in dir(mdgen)\n"
        "from mdgen import SpectrogramGenerator\n"
        "import mdgen.generator\n"
        "assert SpectrogramGenerator is mdgen.generator.SpectrogramGenerator\n"
        "try:\n"
        "    mdgen.NoSuchThing\n"
        "except AttributeError as e:\n"
        "    assert str(e) == \"module 'mdgen' has no attribute 'NoSuchThing'\", e\n"
        "else:\n"
        "    raise AssertionError('mdgen.NoSuchThing did not raise')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"mdgen {mdgen.__version__}")


def test_code_in_mdgen_imports_lazy_exports_from_their_module():
    # tests/test_dvc_deps.py follows imports of modules: `from mdgen import SpectrogramGenerator` in a stage
    # would hide mdgen/generator.py from its deps (the package's __init__ is no dep, see its `trivial`)
    offenders = []
    for f in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "mdgen" and not node.level:
                offenders += [f"{f.relative_to(SRC)}: from mdgen import {a.name}" for a in node.names
                              if a.name in mdgen._LAZY]
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "mdgen"
                  and node.attr in mdgen._LAZY):
                offenders.append(f"{f.relative_to(SRC)}: mdgen.{node.attr}")
    assert not offenders, f"import these from their module ({mdgen._LAZY}): {offenders}"


# ----------------------------------------------------------------------------- the documented snippet

@pytest.mark.slow
def test_the_python_api_page_runs_after_dvc_repro(tmp_path):
    repo = make_dvc_repo(tmp_path / "repo")
    repo.repro("train")  # all the snippet needs: the model, its stats and tokenizer
    code = python_block((REPO / "docs/python-api.md").read_text())
    repo.run(sys.executable, "-c", code)
    size = params.read(["data.image_size"], repo.root / "params.yaml")["data.image_size"]
    made = sorted((repo.root / "generated/ID_2").iterdir())
    assert [f.name for f in made] == ["0.png", "1.png", "2.png", "3.png"]
    for f in made:
        with Image.open(f) as im:
            assert im.size == (size, size) and im.mode == "RGB"
