"""sample stage and `mdgen generate` on a tiny trained workspace."""
import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from mdgen.split import make_split
from mdgen.stages import extract, sample, stats, train
from tests.conftest import REPO, make_image_folder, make_tiny_tokenizer, split_config, write_params

TINY_MODEL = {"name": "LightningDiT-Tiny/1"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """images -> split -> tiny tokenizer -> extract -> stats -> 6 training steps, all in one folder."""
    root = tmp_path_factory.mktemp("ws")
    data = make_image_folder(root / "data", users=2, per_user=4)
    (root / "data/split.json").write_text(json.dumps(make_split(data, split_config(0.25, mode="random"), 0)))
    ckpt = make_tiny_tokenizer(root / "tok.safetensors")
    params = write_params(root / "params.yaml", {
        "data": {"dir": str(data), "image_size": 64}, "tokenizer": {"checkpoint": str(ckpt)},
        "extract": {"batch_size": 4, "plot_per_user": 1}, "model": TINY_MODEL,
        "train": {"max_steps": 6, "batch_size": 3, "checkpoint_every": 3, "val_every": 3, "warmup_steps": 0,
                  "compile": False},
        "sample": {"images_per_user": 3, "steps": 2, "batch_size": 2, "plot_per_user": 1}})
    lat = root / "data/latents"
    extract.main(str(params), split_path=str(root / "data/split.json"), out_dir=str(lat), tokenizer_path=str(ckpt),
                 metrics_path=str(root / "metrics/extract.json"), plot_path=str(root / "plots/recon.png"))
    stats.main(str(params), latents_path=str(lat / "train.safetensors"), out=str(lat / "latents_stats.pt"),
               metrics_path=str(root / "metrics/stats.json"))
    train.main(str(params), latents_dir=str(lat), out_dir=str(root / "models/dit"),
               metrics_dir=str(root / "metrics/train"))
    return root, params


def run_sample(root, params, tag):
    return sample.main(str(params), model_dir=str(root / "models/dit"), stats_path=str(root / "data/latents/latents_stats.pt"),
                       tokenizer_path=str(root / "tok.safetensors"),
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
                    tokenizer_path=str(root / "tok.safetensors"),
                    split_path=str(root / "data/split.json"), out_dir=str(tmp_path / "s"))
    assert not (tmp_path / "s").exists()


def test_decoding_with_another_tokenizer_is_an_error_naming_both(ws, tmp_path):
    from mdgen.generator import SpectrogramGenerator
    root, _ = ws
    other = make_tiny_tokenizer(tmp_path / "other.safetensors", seed=1)
    ema = root / "models/dit/ema.safetensors"
    with pytest.raises(ValueError, match=r"tokenizer .*other.safetensors is not the one whose latents .*ema.safetensors"):
        SpectrogramGenerator.load(ema, root / "data/latents/latents_stats.pt", other)
    gen = SpectrogramGenerator.load(ema, root / "data/latents/latents_stats.pt", other, allow_other_tokenizer=True)
    assert gen.users == ["ID_1", "ID_2"]


def generate_args(root, params, *extra):
    return ["generate", "--params", str(params), "--model-dir", str(root / "models/dit"),
            "--stats", str(root / "data/latents/latents_stats.pt"), *extra]


def test_generate_checks_out_and_user_before_loading(ws, tmp_path, capsys):
    from tests.test_cli_checks import run_cli
    root, params = ws
    (tmp_path / "afile").write_text("mine")
    rc, err = run_cli(capsys, *generate_args(root, params, "--user", "ID_1", "--out", str(tmp_path / "afile")))
    assert rc == 1 and "\n" not in err and f"{tmp_path / 'afile'} is an existing file" in err  # was FileExistsError
    assert (tmp_path / "afile").read_text() == "mine"
    rc, err = run_cli(capsys, *generate_args(root, params, "--user", "../ID_1", "--out", str(tmp_path / "g")))
    assert rc == 1 and err == "mdgen generate: error: unknown user '../ID_1'; valid users: ID_1, ID_2"
    assert not (tmp_path / "g").exists() and not (tmp_path / "ID_1_0000.png").exists()


def test_generate_names_a_truncated_model_file_and_what_to_do(ws, tmp_path, capsys):
    from tests.test_cli_checks import run_cli
    root, params = ws
    model_dir = tmp_path / "dit"
    model_dir.mkdir()
    ema = (root / "models/dit/ema.safetensors").read_bytes()
    (model_dir / "ema.safetensors").write_bytes(ema[:len(ema) // 2])
    args = generate_args(root, params, "--user", "ID_1", "--out", str(tmp_path / "g"))
    args[args.index("--model-dir") + 1] = str(model_dir)
    rc, err = run_cli(capsys, *args)
    assert rc == 1 and "\n" not in err
    assert err.startswith(f"mdgen generate: error: cannot read {model_dir / 'ema.safetensors'}: truncated or corrupt")
    assert err.endswith("re-create it with `dvc repro`, or restore it from the DVC cache with `dvc checkout`")


def test_a_tokenizer_that_does_not_fit_is_refused_even_when_allowed(ws, tmp_path, capsys):
    from mdgen.generator import SpectrogramGenerator
    from mdgen.tokenizer import AutoencoderKL, save_tokenizer
    from tests.test_cli_checks import run_cli
    root, _ = ws
    ema, stats = root / "models/dit/ema.safetensors", root / "data/latents/latents_stats.pt"
    # the model's latents are 32x4x4 of 64 px images (an f16 tokenizer); this one is f8: 32 px images
    f8 = tmp_path / "f8.safetensors"
    save_tokenizer(AutoencoderKL(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, attn_resolutions=(), resolution=64), f8)
    params = write_params(tmp_path / "params.yaml", {"data": {"image_size": 64}, "sample": {"steps": 1}})
    rc, err = run_cli(capsys, *generate_args(root, params, "--user", "ID_1", "--n", "1", "--out", str(tmp_path / "g"),
                                             "--tokenizer", str(f8), "--allow-other-tokenizer"))
    assert rc == 1 and "\n" not in err
    assert (f"tokenizer {f8} does not fit {ema}: the model makes 32x4x4 latents, the tokenizer decodes 32-channel "
            "ones 8x up (4x4 -> 32x32 images, data.image_size is 64)") in err
    assert err.endswith("use the tokenizer the model was trained with (tokenizer.checkpoint)")
    assert not (tmp_path / "g").exists()
    # the model's own tokenizer with another data.image_size: the image size is what to fix
    params = write_params(tmp_path / "params.yaml", {"data": {"image_size": 128}, "sample": {"steps": 1}})
    rc, err = run_cli(capsys, *generate_args(root, params, "--user", "ID_1", "--n", "1", "--out", str(tmp_path / "g")))
    assert rc == 1 and err.endswith("data.image_size is what changed: set it back to 64"), err
    assert not (tmp_path / "g").exists()
    # 16 latent channels: refused at load, not by a conv at the first decode
    d16 = tmp_path / "d16.safetensors"
    save_tokenizer(AutoencoderKL(ch=32, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1, attn_resolutions=(), resolution=64,
                                 z_channels=16, embed_dim=16), d16)
    with pytest.raises(ValueError, match=r"the model makes 32x4x4 latents, the tokenizer decodes 16-channel ones"):
        SpectrogramGenerator.load(ema, stats, d16, allow_other_tokenizer=True)


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
    from mdgen.generator import SpectrogramGenerator
    root, params = ws
    reference = run_sample(root, params, "ref")
    real_images = SpectrogramGenerator.images
    calls = []

    def dies_at_the_second_person(self, user, n, config, seed):
        calls.append(user)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what a kill does to the loop: the first person is on disk, the second not
        return real_images(self, user, n, config, seed)

    monkeypatch.setattr(SpectrogramGenerator, "images", dies_at_the_second_person)
    with pytest.raises(KeyboardInterrupt):
        run_sample(root, params, "k")
    assert not (root / "samples_k").exists()  # DVC never sees a partial set as the output
    partial = root / ".samples_k.partial"
    assert sorted(p.name for p in partial.iterdir() if p.is_dir()) == ["ID_1"]

    calls.clear()
    monkeypatch.setattr(SpectrogramGenerator, "images", lambda self, user, n, *a: (calls.append(user),
                                                                                 real_images(self, user, n, *a))[1])
    m = run_sample(root, params, "k")
    assert calls == ["ID_2"] and m["kept_from_interrupted_run"] == 3 and not partial.exists()
    for user in ("ID_1", "ID_2"):  # the same images as an uninterrupted run
        for f in sorted((root / "samples_ref" / user).glob("*.png")):
            assert f.read_bytes() == (root / "samples_k" / user / f.name).read_bytes()
    assert (root / "samples_k.png").read_bytes() == (root / "samples_ref.png").read_bytes()
    assert reference["kept_from_interrupted_run"] == 0


def test_a_person_half_written_at_a_sigkill_never_reaches_the_output(ws):
    # a real SIGKILL while the second person's folder is half written: its temp folder (2 of 3 PNGs) stays
    # in the partial set, and a rerun must neither keep that person nor move the temp folder into the output
    root, params = ws
    run_sample(root, params, "ref2")
    code = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        import mdgen.generator as generation
        from tests.test_sample import run_sample
        real, calls = generation.save_png, []
        def dies_mid_person(path, image):
            real(path, image)
            calls.append(path)
            if len(calls) == 5:  # 3 of the first person, 2 of the second
                os.kill(os.getpid(), signal.SIGKILL)
        generation.save_png = dies_mid_person
        run_sample(Path({str(root)!r}), Path({str(params)!r}), "sk")
    """)
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == -signal.SIGKILL
    partial = root / ".samples_sk.partial"
    assert sorted(p.name for p in partial.iterdir()) == sorted(["ID_1", "fingerprint.json", *(
        p.name for p in partial.iterdir() if p.name.startswith(".ID_2."))]) and len(list(partial.iterdir())) == 3
    m = run_sample(root, params, "sk")
    assert m["kept_from_interrupted_run"] == 3
    assert sorted(p.name for p in (root / "samples_sk").iterdir()) == ["ID_1", "ID_2"]
    for user in ("ID_1", "ID_2"):
        made = sorted(f.name for f in (root / "samples_sk" / user).iterdir())
        assert made == sorted(f.name for f in (root / "samples_ref2" / user).iterdir()) and len(made) == 3
        for name in made:
            assert (root / "samples_sk" / user / name).read_bytes() == (root / "samples_ref2" / user / name).read_bytes()


def test_a_partial_run_of_other_settings_is_not_reused(ws, monkeypatch):
    from mdgen.generator import SpectrogramGenerator
    root, params = ws
    stale = root / ".samples_o.partial/ID_1"
    stale.mkdir(parents=True)
    (stale.parent / "fingerprint.json").write_text('{"seed": 12345}')
    calls = []
    real_images = SpectrogramGenerator.images
    monkeypatch.setattr(SpectrogramGenerator, "images", lambda self, user, n, *a: (calls.append(user),
                                                                                 real_images(self, user, n, *a))[1])
    m = run_sample(root, params, "o")
    assert calls == ["ID_1", "ID_2"] and m["kept_from_interrupted_run"] == 0
