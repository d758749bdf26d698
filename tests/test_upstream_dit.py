"""Upstream LightningDiT checkpoints: `train.init_from`, export to `{'model','ema'}`, compile fallback."""
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from mdgen.checkpoints import export_upstream, init_weights_from, load_ema, read_dit_state
from mdgen.dit import build_dit
from mdgen.errors import BadFileError, MissingFileError
from mdgen.dit_training import FlowModule
from tests.test_dit_training import TINY, make_latents, run_train, tiny_config

IMAGENET = dict(TINY, num_classes=1000, in_channels=8, input_size=4)


def upstream_checkpoint(path, prefix="", **kw):
    """A file in upstream train.py's layout: model, ema, opt state and a plain config dict."""
    torch.manual_seed(1)
    model = build_dit("LightningDiT-Tiny/1", **{**IMAGENET, **kw})
    torch.manual_seed(2)
    ema = build_dit("LightningDiT-Tiny/1", **{**IMAGENET, **kw})
    torch.save({"model": {prefix + k: v for k, v in model.state_dict().items()},
                "ema": {prefix + k: v for k, v in ema.state_dict().items()},
                "opt": {"state": {}, "param_groups": []}, "config": {"model": "LightningDiT-Tiny/1"}}, path)
    return model.state_dict(), ema.state_dict()


@pytest.mark.parametrize("prefix", ["", "module."])
def test_init_from_loads_ema_and_skips_the_imagenet_label_table(tmp_path, prefix):
    _, ema = upstream_checkpoint(tmp_path / "imagenet.pt", prefix)
    model = build_dit("LightningDiT-Tiny/1", **dict(IMAGENET, num_classes=3))
    table = model.y_embedder.embedding_table.weight.clone()
    report = init_weights_from(model, tmp_path / "imagenet.pt")
    assert report["source"] == "'ema'"
    assert list(report["skipped"]) == ["y_embedder.embedding_table.weight"]
    assert "[1001, 32]" in report["skipped"]["y_embedder.embedding_table.weight"]
    assert 0.5 < report["loaded_fraction"] < 1.0
    for k, v in model.state_dict().items():
        if k == "y_embedder.embedding_table.weight":
            assert torch.equal(v, table)  # keeps its own initialisation
        else:
            assert torch.equal(v, ema[k]), k


def test_init_from_takes_model_when_there_is_no_ema_and_refuses_a_misfit(tmp_path):
    m, _ = upstream_checkpoint(tmp_path / "full.pt")
    torch.save({"model": m}, tmp_path / "model_only.pt")
    state, source = read_dit_state(tmp_path / "model_only.pt")
    assert source == "'model'" and torch.equal(state["pos_embed"], m["pos_embed"])
    wider = build_dit("LightningDiT-Tiny/1", **dict(IMAGENET, hidden_size=64, num_classes=3))
    torch.save({"ema": {"foo.weight": torch.zeros(2)}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="none of its 1 tensors fits this model"):
        init_weights_from(wider, tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_dit_state(tmp_path / "nope.pt")


class Boom:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_init_from_refuses_a_pickle_that_runs_code(tmp_path, capsys, writer):
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save({"ema": Boom()}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"ema": Boom()}, f)
    with pytest.raises(ValueError, match="refusing to load .*evil.pt"):
        read_dit_state(path)
    assert "code ran" not in capsys.readouterr().out


def test_init_from_names_a_folder_and_a_truncated_safetensors(tmp_path):
    with pytest.raises(MissingFileError, match="is a folder, not a checkpoint file"):
        read_dit_state(tmp_path)
    _, ema = upstream_checkpoint(tmp_path / "imagenet.pt")
    save_file(ema, str(tmp_path / "ema.safetensors"))
    data = (tmp_path / "ema.safetensors").read_bytes()
    (tmp_path / "ema.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(BadFileError, match="cannot read DiT checkpoint .*ema.safetensors: truncated or corrupt"):
        read_dit_state(tmp_path / "ema.safetensors")


def test_train_init_from_reports_and_starts_from_the_checkpoint(tmp_path, capsys):
    root = make_latents(tmp_path / "run")
    _, ema = upstream_checkpoint(tmp_path / "imagenet.pt")
    run_train(root, max_steps=1, lr=1e-12, warmup_steps=0, init_from=tmp_path / "imagenet.pt")
    out = capsys.readouterr().out
    assert "initialised" in out and "y_embedder.embedding_table.weight" in out
    trained, _ = load_ema(root / "dit/ema.safetensors")
    # one step at lr 1e-12: every fitting tensor is still the checkpoint's
    torch.testing.assert_close(trained.state_dict()["blocks.0.attn.qkv.weight"], ema["blocks.0.attn.qkv.weight"])
    # another init_from file is another run: resume: auto starts fresh and names the reason
    torch.save({"ema": {k: v + 1 for k, v in ema.items()}}, tmp_path / "other.pt")
    run_train(root, max_steps=1, lr=1e-12, warmup_steps=0, init_from=tmp_path / "other.pt")
    assert "differs in: init_from_sha256" in capsys.readouterr().out
    # and so is dropping it (the key is then absent from the run's configuration, not None)
    run_train(root, max_steps=1, lr=1e-12, warmup_steps=0)
    assert "differs in: init_from_sha256)" in capsys.readouterr().out


def test_export_upstream_layout_roundtrips(tmp_path):
    root = make_latents(tmp_path)
    run_train(root, max_steps=3)
    out = tmp_path / "upstream.pt"
    proc = subprocess.run([sys.executable, "-m", "mdgen", "export-dit", "--ckpt", str(root / "dit/last.ckpt"),
                           "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ckpt = torch.load(out, weights_only=True)
    assert {"model", "ema"} <= set(ckpt) and ckpt["step"] == 3
    ema_file = load_file(root / "dit/ema.safetensors")
    assert set(ckpt["ema"]) == set(ema_file)
    for k, v in ema_file.items():
        assert torch.equal(ckpt["ema"][k], v), k
    model = build_dit("LightningDiT-Tiny/1", **ckpt["config"]["model_kwargs"])
    model.load_state_dict(ckpt["model"], strict=True)
    assert not any(torch.equal(ckpt["model"][k], ckpt["ema"][k]) for k in ("final_layer.linear.weight",))
    # and it is a valid init_from source
    state, source = read_dit_state(out)
    assert source == "'ema'"


def test_export_refuses_a_file_that_is_not_a_training_checkpoint(tmp_path):
    torch.save({"ema": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        export_upstream(tmp_path / "x.pt", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def tiny_module(backend) -> FlowModule:
    """FlowModule around a tiny DiT, its training forward compiled with `backend`."""
    module = FlowModule(build_dit("LightningDiT-Tiny/1", **dict(IMAGENET, num_classes=3)),
                        tiny_config(batch_size=2)[1], seed=0)
    module.forward_fn, module.compiled = torch.compile(module.model.forward, backend=backend), True
    return module


def test_compile_failure_falls_back_to_eager(tmp_path, capsys):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    module = tiny_module(broken_backend)
    before = torch.random.get_rng_state()
    assert module.compiled
    module.on_fit_start()
    assert not module.compiled and "running eager instead" in capsys.readouterr().out
    assert torch.equal(torch.random.get_rng_state(), before)  # the probe leaves the seeded stream alone
    assert all(p.grad is None for p in module.model.parameters())
    x, y = torch.randn(2, 8, 4, 4), torch.tensor([0, 1])
    assert torch.isfinite(module.train_loss((x, y)))


def test_compile_that_works_stays_compiled():
    module = tiny_module("eager")
    module.on_fit_start()
    assert module.compiled


def test_train_with_a_failing_compiler_finishes_eager(tmp_path, capsys, monkeypatch):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compile_(fn, backend=broken_backend))
    root = make_latents(tmp_path)
    m = run_train(root, max_steps=2, compile=True)
    assert m["step"] == 2 and "running eager instead" in capsys.readouterr().out


def lightning_checkpoint(path):
    """The least `export_upstream` takes: `model.*` and `ema.*` weights under 'state_dict'."""
    w = torch.arange(4.0)
    torch.save({"state_dict": {"model.w": w, "ema.w": w + 1}, "global_step": 2}, path)
    return path


def test_export_dit_refuses_a_folder_or_the_checkpoint_as_out_before_writing(tmp_path, capsys):
    from tests.test_cli_checks import run_cli
    ckpt = lightning_checkpoint(tmp_path / "last.ckpt")
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    rc, err = run_cli(capsys, "export-dit", "--ckpt", str(ckpt), "--out", str(folder))
    assert rc == 1 and "\n" not in err and f"{folder} is an existing folder" in err
    assert (folder / "keep.txt").read_text() == "mine"  # it used to be replaced by the .pt
    before = ckpt.read_bytes()
    rc, err = run_cli(capsys, "export-dit", "--ckpt", str(ckpt), "--out", str(ckpt))
    assert rc == 1 and f"{ckpt} is the training checkpoint being exported" in err
    assert ckpt.read_bytes() == before
    rc, _ = run_cli(capsys, "export-dit", "--ckpt", str(ckpt), "--out", str(folder / "upstream.pt"))
    assert rc == 0
    assert torch.equal(torch.load(folder / "upstream.pt", weights_only=True)["ema"]["w"], torch.arange(4.0) + 1)


def test_export_dit_names_a_truncated_checkpoint_and_what_to_do(tmp_path, capsys):
    from tests.test_cli_checks import run_cli
    ckpt = lightning_checkpoint(tmp_path / "last.ckpt")
    ckpt.write_bytes(ckpt.read_bytes()[:-200])
    rc, err = run_cli(capsys, "export-dit", "--ckpt", str(ckpt), "--out", str(tmp_path / "up.pt"))
    assert rc == 1 and "\n" not in err
    assert err.startswith(f"mdgen export-dit: error: cannot read training checkpoint {ckpt}: truncated or corrupt")
    assert err.endswith("re-create it with `dvc repro`, or restore it from the DVC cache with `dvc checkout`")
    assert not (tmp_path / "up.pt").exists()
    rc, err = run_cli(capsys, "export-dit", "--ckpt", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "up.pt"))
    assert rc == 1 and err == f"mdgen export-dit: error: training checkpoint {tmp_path / 'nope.ckpt'} not found"
