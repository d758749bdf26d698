"""sample stage and `mdgen generate` on a tiny trained workspace."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mdgen.split import make_split
from mdgen.stages import extract, sample, stats, train
from tests.conftest import make_image_folder, make_tiny_tokenizer, write_params

TINY_MODEL = {"name": "LightningDiT-Tiny/1"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """images -> split -> tiny tokenizer -> extract -> stats -> 6 training steps, all in one folder."""
    root = tmp_path_factory.mktemp("ws")
    data = make_image_folder(root / "data", users=2, per_user=4)
    (root / "data/split.json").write_text(json.dumps(make_split(data, 0.25, seed=0, mode="random")))
    ckpt = make_tiny_tokenizer(root / "tok.safetensors")
    params = write_params(root / "params.yaml", {
        "data": {"dir": str(data), "image_size": 64}, "tokenizer": {"checkpoint": str(ckpt)},
        "extract": {"batch_size": 4, "plot_per_user": 1}, "model": TINY_MODEL,
        "train": {"max_steps": 6, "batch_size": 3, "checkpoint_every": 3, "val_every": 3, "warmup_steps": 0,
                  "compile": False},
        "sample": {"images_per_user": 3, "steps": 2, "batch_size": 2, "plot_per_user": 1}})
    lat = root / "data/latents"
    extract.main(str(params), split_path=str(root / "data/split.json"), out_dir=str(lat),
                 metrics_path=str(root / "metrics/extract.json"), plot_path=str(root / "plots/recon.png"))
    stats.main(str(params), latents_path=str(lat / "train.safetensors"), out=str(lat / "latents_stats.pt"),
               metrics_path=str(root / "metrics/stats.json"))
    train.main(str(params), latents_dir=str(lat), out_dir=str(root / "models/dit"),
               metrics_dir=str(root / "metrics/train"))
    return root, params


def run_sample(root, params, tag):
    return sample.main(str(params), model_dir=str(root / "models/dit"), stats_path=str(root / "data/latents/latents_stats.pt"),
                       split_path=str(root / "data/split.json"), out_dir=str(root / f"samples_{tag}"),
                       plot_path=str(root / f"samples_{tag}.png"), metrics_path=str(root / f"sample_{tag}.json"))


def test_sample_stage_writes_images_per_user_deterministically(ws):
    root, params = ws
    m = run_sample(root, params, "a")
    run_sample(root, params, "b")
    for user in ("ID_1", "ID_2"):
        files = sorted((root / "samples_a" / user).glob("*.png"))
        assert len(files) == 3
        im = Image.open(files[0])
        assert im.size == (64, 64) and im.mode == "RGB"
        assert files[0].read_bytes() == (root / "samples_b" / user / files[0].name).read_bytes()
    assert m["images"] == 6 and m["images_per_s"] > 0 and m["nfe_per_image"] == 2 * 2
    from mdgen.accel import cpu_has_native_bf16
    assert m["precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")  # sample.precision: auto
    assert (root / "samples_a.png").stat().st_size > 0


def test_generate_cli_and_unknown_user(ws):
    root, params = ws
    args = [sys.executable, "-m", "mdgen", "generate", "--params", str(params), "--model-dir", str(root / "models/dit"),
            "--stats", str(root / "data/latents/latents_stats.pt")]
    p = subprocess.run(args + ["--user", "ID_2", "--n", "2", "--out", str(root / "gen"), "--steps", "1"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in (root / "gen").iterdir()) == ["ID_2_0000.png", "ID_2_0001.png"]
    # without overrides, `mdgen generate` samples as the `sample` stage does (same params, same options)
    p = subprocess.run(args + ["--user", "ID_2", "--n", "3", "--out", str(root / "gen_default")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    run_sample(root, params, "for_generate")
    for k in range(3):
        assert ((root / "gen_default" / f"ID_2_{k:04d}.png").read_bytes()
                == (root / "samples_for_generate" / "ID_2" / f"{k:05d}.png").read_bytes())
    p = subprocess.run(args + ["--user", "ID_7"], capture_output=True, text=True)
    assert p.returncode == 1
    assert "unknown user 'ID_7'; valid users: ID_1, ID_2" in p.stderr
    assert p.stderr.strip().count("\n") == 0  # fails before loading anything, so nothing else is logged


def test_stats_mismatch_is_refused(ws, tmp_path):
    import torch
    root, params = ws
    bad = tmp_path / "stats.pt"
    s = torch.load(root / "data/latents/latents_stats.pt", weights_only=True)
    torch.save({"mean": s["mean"] + 1, "std": s["std"]}, bad)
    with pytest.raises(ValueError, match="not the latent statistics .* was trained with"):
        sample.main(str(params), model_dir=str(root / "models/dit"), stats_path=str(bad),
                    split_path=str(root / "data/split.json"), out_dir=str(tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_decoding_with_another_tokenizer_is_an_error_naming_both(ws, tmp_path):
    from mdgen.generation import SpectrogramGenerator
    root, _ = ws
    other = make_tiny_tokenizer(tmp_path / "other.safetensors", seed=1)
    ema = root / "models/dit/ema.safetensors"
    with pytest.raises(ValueError, match=r"tokenizer .*other.safetensors is not the one whose latents .*ema.safetensors"):
        SpectrogramGenerator.load(ema, root / "data/latents/latents_stats.pt", other)
    gen = SpectrogramGenerator.load(ema, root / "data/latents/latents_stats.pt", other, allow_other_tokenizer=True)
    assert gen.users == ["ID_1", "ID_2"]


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", ""])
def test_person_names_from_a_model_file_must_be_plain_folder_names(ws, tmp_path, name):
    import json as _json

    from safetensors import safe_open
    from safetensors.torch import load_file

    from mdgen.checkpoints import read_ema_meta
    from mdgen.io import save_safetensors
    root, _ = ws
    ema = root / "models/dit/ema.safetensors"
    with safe_open(str(ema), "pt") as f:
        meta = dict(f.metadata())
    meta["users"] = _json.dumps(["ID_1", name])
    bad = tmp_path / "ema.safetensors"
    save_safetensors(load_file(str(ema)), bad, meta)
    with pytest.raises(ValueError, match="is not a plain folder name"):
        read_ema_meta(bad)


def test_a_killed_sample_run_keeps_finished_persons_and_never_looks_complete(ws, monkeypatch):
    from mdgen.generation import SpectrogramGenerator
    root, params = ws
    reference = run_sample(root, params, "ref")
    real_images = SpectrogramGenerator.images
    calls = []

    def dies_at_the_second_person(self, user, n, **kw):
        calls.append(user)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill does to the loop: the first person is on disk, the second not
        return real_images(self, user, n, **kw)

    monkeypatch.setattr(SpectrogramGenerator, "images", dies_at_the_second_person)
    with pytest.raises(KeyboardInterrupt):
        run_sample(root, params, "k")
    assert not (root / "samples_k").exists()  # DVC never sees a partial set as the output
    partial = root / ".samples_k.partial"
    assert sorted(p.name for p in partial.iterdir() if p.is_dir()) == ["ID_1"]

    calls.clear()
    monkeypatch.setattr(SpectrogramGenerator, "images", lambda self, user, n, **kw: (calls.append(user),
                                                                                   real_images(self, user, n, **kw))[1])
    m = run_sample(root, params, "k")
    assert calls == ["ID_2"] and m["kept_from_interrupted_run"] == 3 and not partial.exists()
    for user in ("ID_1", "ID_2"):  # the same images as an uninterrupted run
        for f in sorted((root / "samples_ref" / user).glob("*.png")):
            assert f.read_bytes() == (root / "samples_k" / user / f.name).read_bytes()
    assert (root / "samples_k.png").read_bytes() == (root / "samples_ref.png").read_bytes()
    assert reference["kept_from_interrupted_run"] == 0


def test_a_partial_run_of_other_settings_is_not_reused(ws, monkeypatch):
    from mdgen.generation import SpectrogramGenerator
    root, params = ws
    stale = root / ".samples_o.partial/ID_1"
    stale.mkdir(parents=True)
    (stale.parent / "fingerprint.json").write_text('{"seed": 12345}')
    calls = []
    real_images = SpectrogramGenerator.images
    monkeypatch.setattr(SpectrogramGenerator, "images", lambda self, user, n, **kw: (calls.append(user),
                                                                                   real_images(self, user, n, **kw))[1])
    m = run_sample(root, params, "o")
    assert calls == ["ID_1", "ID_2"] and m["kept_from_interrupted_run"] == 0
