"""Training: data checks, resume, EMA export, DDP on CPU."""
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from mdgen import params
from mdgen.checkpoints import load_ema
from mdgen.latents import compute_stats, save_latents, save_stats
from mdgen.dit_training import train
from mdgen.params import ModelConfig, ParamsError, TrainConfig

REPO = Path(__file__).resolve().parents[1]

TINY = dict(hidden_size=32, depth=2, num_heads=2)
USERS = ["ID_1", "ID_2", "ID_3"]


def make_latents(root: Path, users=USERS, n_train=24, n_val=6, shape=(8, 4, 4), flip=True) -> Path:
    g = torch.Generator().manual_seed(0)
    root.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("val", n_val)):
        labels = torch.arange(n) % len(users)
        z = torch.randn(n, *shape, generator=g) + labels.view(-1, 1, 1, 1).float()
        tensors = {"latents": z, "latents_flip": z.flip(3)} if flip else {"latents": z}
        save_latents(root / f"{part}.safetensors", tensors, labels, users=users, tokenizer_sha256="0" * 64,
                     image_size=64, sample_posterior=True)
        if part == "train":
            save_stats(root / "latents_stats.pt", compute_stats(z))
    return root


MODEL_FIELDS = {"name", "class_dropout_prob", "use_qknorm", "overrides"}


def tiny_config(**kw) -> tuple[ModelConfig, TrainConfig]:
    """params.yaml's model and train sections, shrunk: a tiny DiT, 12 constant-lr steps, eager, on the CPU;
    `kw` may name fields of either."""
    p = params.load(REPO / "params.yaml")
    tiny = dict(max_steps=12, batch_size=6, lr=1e-3, warmup_steps=0, lr_schedule="constant", grad_clip=None,
                checkpoint_every=4, val_every=6, accelerator="cpu", compile=False, deterministic=True)
    model = dataclasses.replace(p.model, name="LightningDiT-Tiny/1", overrides=TINY,
                                **{k: v for k, v in kw.items() if k in MODEL_FIELDS})
    config = dataclasses.replace(p.train, **{**tiny, **{k: v for k, v in kw.items() if k not in MODEL_FIELDS}})
    return model, config


def run_train(root: Path, train_path=None, val_path=None, callbacks=None, seed=0, **kw):
    return train(*tiny_config(**kw), seed, train_path=train_path or root / "train.safetensors",
                 val_path=val_path or root / "val.safetensors", stats_path=root / "latents_stats.pt",
                 out_dir=root / "dit", metrics_dir=root / "metrics", progress=False, callbacks=callbacks)


def test_train_and_model_sections_are_params_yaml_s():
    # every train.* and model.* key is a field of the same name; the fields with a default are not keys
    flat = params.load_params(REPO / "params.yaml")
    for section, cls in (("train", TrainConfig), ("model", ModelConfig)):
        keyed = {f.name for f in dataclasses.fields(cls) if "spec" in f.metadata}
        assert keyed == {k.split(".", 1)[1] for k in flat if k.startswith(section + ".")}
        assert all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
                   for f in dataclasses.fields(cls) if "spec" not in f.metadata)
    p = params.read(["seed", "model", "train"], REPO / "params.yaml")
    assert p["train"].lr == flat["train.lr"] and p["model"].name == flat["model.name"] and p["seed"] == flat["seed"]


def test_resume_ignores_run_only_settings(tmp_path, capsys):
    root = make_latents(tmp_path)
    run_train(root, max_steps=4, checkpoint_every=2)
    m = run_train(root, max_steps=6, checkpoint_every=3, val_every=3, log_every=1)  # constant lr: may grow
    assert "resuming from" in capsys.readouterr().out and m["step"] == 6
    ckpt = torch.load(root / "dit/last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["mdgen"]["train"]["max_steps"] == 6 and ckpt["mdgen"]["users"] == USERS


def test_epochs_set_the_length_from_the_train_set_unless_max_steps_does(tmp_path):
    root = make_latents(tmp_path, n_train=24)
    m = run_train(root, max_steps=None, epochs=1.2, checkpoint_every=100, val_every=100)
    assert m["step"] == 5 and m["train_latents"] == 24 and m["epochs"] == 1.25  # ceil(1.2 * 24 / 6) steps of 6
    ckpt = torch.load(root / "dit/last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["mdgen"]["train"]["max_steps"] == 5  # the record holds the resolved length
    root2 = make_latents(tmp_path / "more", n_train=48)  # twice the data, twice the steps
    assert run_train(root2, max_steps=None, epochs=1.2, checkpoint_every=100, val_every=100)["step"] == 10
    assert tiny_config(max_steps=3, epochs=1.2)[1].steps_for(48) == 3  # max_steps, where set, wins
    with pytest.raises(ParamsError, match="train.max_steps and train.epochs are both null"):
        tiny_config(max_steps=None, epochs=None)


def steps_logged(root: Path) -> list[int]:
    tsv = root / "metrics/plots/metrics/train/loss.tsv"
    return [int(line.split("\t")[0]) for line in tsv.read_text().splitlines()[1:]]


def test_train_writes_checkpoint_ema_and_dvclive(tmp_path):
    root = make_latents(tmp_path)
    m = run_train(root, log_every=1)
    assert m["step"] == 12 and "val/loss" in m and "val/loss_ema" in m
    assert (root / "dit/last.ckpt").is_file()
    model, meta = load_ema(root / "dit/ema.safetensors")
    assert meta["users"] == USERS and meta["step"] == 12 and meta["model_name"] == "LightningDiT-Tiny/1"
    assert model.num_classes == 3 and model.in_channels == 8
    metrics = json.loads((root / "metrics/metrics.json").read_text())
    assert "loss" in metrics["val"] and "loss" in metrics["train"]
    assert steps_logged(root) == list(range(1, 13))
    lr = (root / "metrics/plots/metrics/train/lr.tsv").read_text().splitlines()
    assert lr[0].split("\t")[-1] == "lr" and [float(r.split("\t")[-1]) for r in lr[1:]] == pytest.approx([1e-3] * 12)
    assert not (root / "metrics/plots/metrics/epoch.tsv").exists()  # steps, not epochs


def test_ema_roundtrips_with_upstream_key_names(tmp_path):
    root = make_latents(tmp_path)
    run_train(root, max_steps=2)
    from safetensors.torch import load_file
    sd = load_file(root / "dit/ema.safetensors")
    assert {"pos_embed", "x_embedder.proj.weight", "blocks.0.attn.qkv.weight", "feat_rope.freqs_cos",
            "y_embedder.embedding_table.weight"} <= set(sd)
    model, _ = load_ema(root / "dit/ema.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_resume_continues_steps_and_logs(tmp_path, capsys):
    root = make_latents(tmp_path)
    run_train(root, max_steps=8, log_every=1)
    m = run_train(root, max_steps=12, log_every=1)
    assert "resuming from" in capsys.readouterr().out
    assert m["step"] == 12
    assert steps_logged(root) == list(range(1, 13))


def ema_sha256(root: Path) -> str:
    """sha256 of the EMA weights' bytes (the file's metadata holds paths, which differ between the runs' folders)."""
    import hashlib

    from safetensors.torch import load_file
    h = hashlib.sha256()
    for name, tensor in sorted(load_file(root / "dit/ema.safetensors").items()):
        h.update(name.encode())
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch, lightning as L
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from tests.test_dit_training import run_train
    torch.set_num_threads(1)
    class Kill(L.Callback):  # a SIGKILL right after step 7: the last checkpoint is step 4's
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 7:
                os.kill(os.getpid(), signal.SIGKILL)
    run_train(Path(sys.argv[1]), max_steps=10, checkpoint_every=4, lr_schedule="wsd", warmup_steps=2,
              callbacks=[Kill()])
""")


def test_a_run_killed_between_checkpoints_resumes_to_the_unbroken_weights(tmp_path, one_torch_thread):
    # flips on (make_latents writes latents_flip), a schedule with warm-up and decay, validation at step 6
    # between the checkpoint (4) and the kill (7): every random draw of steps 5-10 must be redrawn the same
    unbroken = make_latents(tmp_path / "unbroken")
    run_train(unbroken, max_steps=10, checkpoint_every=4, lr_schedule="wsd", warmup_steps=2)
    killed = make_latents(tmp_path / "killed")
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    p = subprocess.run([sys.executable, str(script), str(killed), str(REPO)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    assert torch.load(killed / "dit/last.ckpt", weights_only=True)["global_step"] == 4
    assert not (killed / "dit/ema.safetensors").exists()
    m = run_train(killed, max_steps=10, checkpoint_every=4, lr_schedule="wsd", warmup_steps=2)
    assert m["step"] == 10
    assert ema_sha256(killed) == ema_sha256(unbroken)


def test_an_extended_run_ends_where_an_unbroken_one_does(tmp_path, one_torch_thread):
    # 8 steps, then max_steps raised to 16 (constant lr: the README says such a run continues); 24 latents
    # in batches of 6 make epochs of 4 steps, so the extension crosses epochs with a fresh permutation
    straight = make_latents(tmp_path / "straight")
    run_train(straight, max_steps=16)
    extended = make_latents(tmp_path / "extended")
    run_train(extended, max_steps=8)
    run_train(extended, max_steps=16)
    assert ema_sha256(extended) == ema_sha256(straight)


def test_step_batches_are_a_function_of_seed_and_step():
    from mdgen.dit_training import StepBatches
    whole = list(itertools.islice(iter(StepBatches(10, 3, seed=5)), 9))  # 3 steps an epoch, 1 latent dropped
    assert whole[3:] == list(itertools.islice(iter(StepBatches(10, 3, seed=5, start_step=3)), 6))
    for e in range(3):  # each epoch a permutation: no latent twice
        seen = [i for batch in whole[3 * e:3 * e + 3] for i, _ in batch]
        assert len(set(seen)) == 9
    assert whole[:3] != whole[3:6]  # a fresh order each epoch
    assert whole != list(itertools.islice(iter(StepBatches(10, 3, seed=6)), 9))


def test_changed_config_starts_fresh_and_says_why(tmp_path, capsys):
    root = make_latents(tmp_path)
    run_train(root, max_steps=4)
    run_train(root, max_steps=4, lr=5e-4)
    out = capsys.readouterr().out
    assert "starting fresh" in out and "differs in: train.lr" in out


def test_users_mismatch_and_bad_labels(tmp_path):
    root = make_latents(tmp_path)
    other = make_latents(tmp_path / "other", users=["ID_1", "ID_2", "ID_9"])
    with pytest.raises(ValueError, match="users differ between"):
        run_train(root, val_path=other / "val.safetensors")
    labels = torch.tensor([0, 1, 5])
    save_latents(tmp_path / "bad.safetensors", {"latents": torch.randn(3, 8, 4, 4)}, labels, users=USERS,
                 tokenizer_sha256="", image_size=64, sample_posterior=False)
    with pytest.raises(ValueError, match=r"label 5 at index 2 is outside the user table \[0, 3\)"):
        run_train(root, train_path=tmp_path / "bad.safetensors")


def test_stats_of_wrong_shape(tmp_path):
    root = make_latents(tmp_path)
    torch.save({"mean": torch.zeros(1, 4, 1, 1), "std": torch.ones(1, 4, 1, 1)}, root / "latents_stats.pt")
    with pytest.raises(ValueError, match="latent stats have 4 channels"):
        run_train(root)


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    root = make_latents(tmp_path)
    with pytest.raises(FloatingPointError, match="non-finite training loss .* at step"):
        run_train(root, lr=1e30, grad_clip=None, max_steps=20)


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, lightning as L
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from tests.test_dit_training import run_train
    class Checksum(L.Callback):
        def on_train_end(self, trainer, module):
            w = torch.cat([p.detach().flatten() for p in module.model.parameters()])
            open(f"{sys.argv[1]}/rank{trainer.global_rank}.txt", "w").write(repr(w.double().sum().item()))
    run_train(Path(sys.argv[1]), max_steps=4, batch_size=4, checkpoint_every=2, val_every=2, devices=2,
              strategy="ddp", deterministic=False, callbacks=[Checksum()])
""")


@pytest.mark.slow
def test_ddp_two_cpu_processes_agree(tmp_path):
    root = make_latents(tmp_path)
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    p = subprocess.run([sys.executable, str(script), str(root), str(REPO)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PL_DISABLE_FORK": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    sums = [(root / f"rank{r}.txt").read_text() for r in (0, 1)]
    assert sums[0] == sums[1]
    assert (root / "dit/ema.safetensors").is_file()


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_finishes(tmp_path):
    root = make_latents(tmp_path)
    code = textwrap.dedent(f"""
        from pathlib import Path
        from tests.test_dit_training import run_train
        run_train(Path({str(root)!r}), max_steps=400, checkpoint_every=5, val_every=1000)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = root / "dit/last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint was written before the kill"
    step_at_kill = torch.load(ckpt, weights_only=True)["global_step"]
    assert 0 < step_at_kill < 400
    m = run_train(root, max_steps=400, checkpoint_every=5, val_every=1000, log_every=50)
    assert m["step"] == 400
    steps = steps_logged(root)
    assert steps == sorted(set(steps)) and steps[-1] == 400


def test_resuming_a_finished_run_trains_nothing_but_reports_val_loss(tmp_path):
    root = make_latents(tmp_path)
    first = run_train(root, max_steps=6, log_every=1)
    rows = steps_logged(root)
    again = run_train(root, max_steps=6, log_every=1)  # what `dvc repro -f` does with the persisted checkpoint
    assert again["step"] == 6 and steps_logged(root) == rows
    assert again["val/loss"] == pytest.approx(first["val/loss"], rel=1e-5)


def test_lr_schedules_warm_up_hold_and_decay():
    from mdgen.schedules import lr_factor
    f = lambda s, sched, **kw: lr_factor(s, warmup_steps=10, max_steps=110, schedule=sched, **kw)  # noqa: E731
    assert [f(s, "constant") for s in (0, 9, 10, 109)] == [0.1, 1.0, 1.0, 1.0]
    cos = [f(s, "cosine") for s in range(10, 110)]
    assert cos[0] == 1.0 and abs(cos[50] - 0.5) < 1e-9 and 0 < cos[-1] < 1e-3
    assert all(a > b for a, b in zip(cos, cos[1:]))
    # wsd with the last 20 % (22 steps) decaying: peak until step 88, then linear to 1/22 at the end
    wsd = [f(s, "wsd") for s in range(10, 110)]
    assert wsd[:78] == [1.0] * 78 and wsd[78] == 1.0 and abs(wsd[-1] - 1 / 22) < 1e-9
    assert all(a > b for a, b in zip(wsd[78:], wsd[79:]))
    with pytest.raises(ValueError, match="lr schedule 'step': expected one of constant, cosine, wsd"):
        f(0, "step")


def test_decaying_schedule_ends_low_and_a_longer_run_starts_fresh(tmp_path, capsys):
    from mdgen.schedules import lr_factor
    root = make_latents(tmp_path)
    run_train(root, max_steps=8, warmup_steps=2, lr_schedule="cosine")
    ckpt = torch.load(root / "dit/last.ckpt", map_location="cpu", weights_only=True)
    # the lr the scheduler set for the step after the last one: the end of the cosine
    last_lr = ckpt["lr_schedulers"][0]["_last_lr"][0]
    assert abs(last_lr - 1e-3 * lr_factor(8, warmup_steps=2, max_steps=8, schedule="cosine")) < 1e-12
    assert last_lr == 0.0
    # a cosine fixed to 8 steps cannot be continued to 12 with the same meaning
    run_train(root, max_steps=12, warmup_steps=2, lr_schedule="cosine")
    out = capsys.readouterr().out
    assert "starting fresh" in out and "max_steps" in out


def test_resume_from_a_validation_step_keeps_rows_at_their_optimizer_step(tmp_path):
    # 5 batches an epoch, so step 6 is mid-epoch; its checkpoint is written where validation also runs.
    # Lightning's own logging step ran one ahead after such a resume (rows 8..13 for steps 7..12).
    root = make_latents(tmp_path, n_train=30)
    run_train(root, max_steps=6, checkpoint_every=3, log_every=1)
    run_train(root, max_steps=12, checkpoint_every=3, log_every=1)
    assert steps_logged(root) == list(range(1, 13))
    val = (root / "metrics/plots/metrics/val/loss.tsv").read_text().splitlines()[1:]
    assert [int(r.split("\t")[0]) for r in val] == [6, 12]


@pytest.mark.slow
def test_ddp_train_stage_writes_and_reports_once(tmp_path):
    # `mdgen train` with two gloo processes: Lightning re-runs the command for rank 1, so without the
    # rank-zero guard both ranks would print the summary and write summary.json at once
    make_latents(tmp_path / "data/latents")
    tree = params.read_yaml(REPO / "params.yaml")
    tree["model"]["name"] = "LightningDiT-Tiny/1"
    tree["train"].update(max_steps=4, batch_size=4, warmup_steps=0, checkpoint_every=2, val_every=2, compile=False,
                         accelerator="cpu", devices=2, strategy="ddp")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    p = subprocess.run([sys.executable, "-m", "mdgen", "train"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "PL_DISABLE_FORK": "1", "PYTHONPATH": str(REPO / "src")})
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("train: 4 steps in") == 1 and p.stdout.count("train: starting fresh") == 1, p.stdout
    assert set(json.loads((tmp_path / "metrics/train.json").read_text())) == {"ema_val"}
    details = json.loads((tmp_path / "metrics/details/train.json").read_text())
    assert details["step"] == 4 and {"val/loss", "val/loss_ema", "train_wall_s"} <= set(details)
    assert {"ema.safetensors", "last.ckpt"} <= {f.name for f in (tmp_path / "models/dit").iterdir()}
    tsv = (tmp_path / "metrics/train/plots/metrics/val/loss.tsv").read_text().splitlines()[1:]
    assert [int(row.split("\t")[0]) for row in tsv] == [2, 4]  # once per validation, not once per rank


def stage_workspace(root: Path, **train) -> Path:
    """data/latents and a params.yaml (the repo's, with a tiny model and `train` overrides) for `mdgen train`."""
    make_latents(root / "data/latents")
    tree = params.read_yaml(REPO / "params.yaml")
    tree["model"]["name"] = "LightningDiT-Tiny/1"
    tree["train"].update(dict(max_steps=2, batch_size=4, warmup_steps=0, compile=False, accelerator="cpu"), **train)
    (root / "params.yaml").write_text(yaml.safe_dump(tree))
    return root


def test_a_gpu_asked_for_on_a_machine_without_one_is_one_line(tmp_path, monkeypatch, capsys):
    from mdgen import cli
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(stage_workspace(tmp_path, accelerator="gpu"))
    assert cli.main(["train"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mdgen train: error: train.accelerator = 'gpu'") and err.count("\n") == 1, err
    # and what Lightning itself refuses (here: a strategy on a device it cannot use) is one line too
    monkeypatch.chdir(stage_workspace(tmp_path / "mps", accelerator="mps"))
    assert cli.main(["train"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mdgen train: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    from mdgen.errors import DivergedError
    assert cli.user_error(DivergedError("non-finite training loss nan at step 3"))
    assert not cli.user_error(ZeroDivisionError())  # a bug keeps its traceback


def test_a_wsd_decay_shorter_than_a_step_ends_at_zero():
    from mdgen.schedules import lr_factor
    # 2 steps x 0.2 rounds to no decay step: the lr after the last step is 0, not a division by zero
    assert [lr_factor(s, warmup_steps=0, max_steps=2, schedule="wsd", decay_fraction=0.2) for s in (0, 1, 2)] == \
        [1.0, 1.0, 0.0]
