"""The whole pipeline as users run it: repro, experiments, sharing, plots, failures, resume, determinism.

One tiny pipeline (conftest's TINY_PARAMS: 2 simulated users x 6 images at 64 px, a tiny tokenizer
committed in the repo, 4 steps of LightningDiT-Tiny/1 on 4x4 latents, a 2-step classifier) is built
once per module by `dvc repro` and committed; every test that changes anything works in its own copy
of that git+DVC repository (`work`), so the tests are independent and the full pipeline runs only a
few times in the whole module.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TINY_TOKENIZER, DvcRepo, make_dvc_repo, stages_run

STAGES = ["simulate", "texture", "split", "tokenizer", "extract", "stats", "train", "sample", "classifier", "sift", "evaluate"]
ATOMIC_TMP = ".*.tmp"  # what mdgen.io.atomic_path leaves if a writer dies between write and rename


# ----------------------------------------------------------------------------- helpers

def dvc_yaml(repo: DvcRepo) -> dict:
    return yaml.safe_load((repo.root / "dvc.yaml").read_text())


def stage_outs(repo: DvcRepo, stage: str) -> dict[str, dict]:
    """{path: options} of a stage's outs in dvc.yaml."""
    outs = {}
    for o in dvc_yaml(repo)["stages"][stage].get("outs", []):
        path, opts = (o, {}) if isinstance(o, str) else next(iter(o.items()))
        outs[path] = opts or {}
    return outs


def lock_hashes(repo: DvcRepo) -> dict[str, str]:
    """{out path: md5} of every stage output recorded in dvc.lock."""
    lock = yaml.safe_load((repo.root / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}


def leftovers(repo: DvcRepo) -> list[str]:
    """Half-written temporaries anywhere under the output folders."""
    return [str(p.relative_to(repo.root)) for d in ("data", "models", "metrics", "plots")
            if (repo.root / d).is_dir() for p in (repo.root / d).rglob(ATOMIC_TMP)]


def dvc_status(repo: DvcRepo, *targets: str, env: dict | None = None) -> dict:
    """`dvc status --json` of `targets`, or bare: the whole repository, as a user types it."""
    return json.loads(repo.run("dvc", "status", "--json", *targets, env=env).stdout)


def mdgen(repo: DvcRepo, *args: str) -> subprocess.CompletedProcess:
    return repo.run(sys.executable, "-m", "mdgen", *args, check=False)


def assert_cli_error(p: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    """Exit 1 and a last stderr line `mdgen <command>: error: ...` holding every fragment."""
    assert p.returncode == 1, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(f"mdgen {command}: error: "), p.stderr[-3000:]
    for f in fragments:
        assert f in last, f"{f!r} not in {last!r}"
    return last


def assert_repro_fails(repo: DvcRepo, stage: str, *fragments: str) -> str:
    """`dvc repro <stage>` fails in `stage` with one error line, leaving nothing of it for DVC to cache."""
    before = {path: (repo.root / path).exists() for path in stage_outs(repo, stage)}
    p = repo.run("dvc", "repro", stage, check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith(f"mdgen {stage}: error: ")]
    assert len(errors) == 1, out[-3000:]
    for f in fragments:
        assert f in errors[0], f"{f!r} not in {errors[0]!r}"
    assert not leftovers(repo), leftovers(repo)
    for path, opts in stage_outs(repo, stage).items():
        if not opts.get("persist"):  # DVC removed these before the run; the stage must not have written any
            assert not (repo.root / path).exists(), f"{path} left behind by the failed {stage}"
        else:
            assert (repo.root / path).exists() == before[path], path
    assert stage in dvc_status(repo, stage), f"`dvc status` thinks the failed {stage} is up to date"
    return errors[0]


def experiments(repo: DvcRepo) -> dict[str, dict]:
    """{experiment name: its `data` (params, metrics)} from `dvc exp show --json`."""
    found = {}
    for row in json.loads(repo.run("dvc", "exp", "show", "--json").stdout):
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                found[rev["name"]] = rev["data"]
    return found


def wait_for_queue(repo: DvcRepo, timeout: float = 900) -> dict[str, str]:
    """Poll `dvc queue status` until nothing is queued or running; {name: status}."""
    deadline = time.monotonic() + timeout
    while True:
        out = repo.run("dvc", "queue", "status").stdout
        rows = [line.split() for line in out.splitlines()[1:] if line.strip() and not line.startswith("Worker")]
        tasks = {r[1]: r[-1] for r in rows}
        if tasks and not any(s in ("Queued", "Running") for s in tasks.values()):
            return tasks
        assert time.monotonic() < deadline, f"queue still busy after {timeout} s:\n{out}"
        time.sleep(3)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> DvcRepo:
    """The tiny pipeline reproduced once and committed (outputs in the DVC cache, metrics in git)."""
    repo = make_dvc_repo(tmp_path_factory.mktemp("built") / "repo")
    assert repo.repro() == set(STAGES)
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "pipeline outputs")
    return repo


@pytest.fixture
def work(built, tmp_path) -> DvcRepo:
    """A private copy of the built repository to change."""
    return built.copy(tmp_path / "repo")


# ----------------------------------------------------------------------------- 1. what reruns

# (stage, a change to one of its parameters, the stages that must run). Each value is new to this
# repository, so the run cache cannot answer, and each changes the stage's outputs, so everything
# downstream of it must run too. Ordered downstream-first, which makes no difference but to the reader.
PARAM_CHANGES = [
    ("evaluate", {"evaluate": {"plot_pairs": 1}}, {"evaluate"}),
    ("classifier", {"classifier": {"steps": 3}}, {"classifier", "sift", "evaluate"}),
    ("sift", {"sift": {"method": "both"}}, {"sift", "evaluate"}),
    # (not cfg_scale: after 4 training steps the label barely conditions, and the PNGs may not change)
    ("sample", {"sample": {"steps": 3}}, {"sample", "sift", "evaluate"}),
    ("train", {"train": {"lr": 0.001}}, {"train", "sample", "sift", "evaluate"}),
    ("stats", {"stats": {"reference": "data/reference_stats.pt", "source": "reference"}},
     {"stats", "train", "sample", "sift", "evaluate"}),
    ("extract", {"extract": {"sample_posterior": False}}, {"extract", "stats", "train", "sample", "sift", "evaluate"}),
    # fitting the tokenizer: a new one, so everything that encodes or decodes with it
    ("tokenizer", {"tokenizer": {"fit": {"steps": 2, "final_steps": 1}}},
     {"tokenizer", "extract", "stats", "train", "sample", "sift", "evaluate"}),
    ("texture", {"texture": {"images": 3}}, {"texture"}),
    ("split", {"split": {"gap": 0}}, set(STAGES) - {"simulate"}),  # texture reads its files from the split
    ("simulate", {"simulate": {"images_per_user": 7}}, set(STAGES)),
]


@pytest.mark.slow
def test_param_change_reruns_the_stage_and_downstream_only(work):
    import torch

    assert work.repro() == set(), "`dvc repro` on the unchanged, committed workspace ran something"
    assert dvc_status(work) == {}
    # a reference statistics file for the `stats` change (ImageNet's latents_stats.pt in real use)
    torch.save({"mean": torch.zeros(1, 32, 1, 1), "std": torch.full((1, 32, 1, 1), 2.0)},
               work.root / "data/reference_stats.pt")
    wrong = []
    for stage, change, expected in PARAM_CHANGES:
        work.set_params(change)
        ran = work.repro()
        if ran != expected:
            wrong.append(f"{stage} {change}: ran {sorted(ran)}, expected {sorted(expected)}")
    assert not wrong, "\n".join(wrong)
    assert work.repro() == set(), "a second `dvc repro` ran something"
    assert dvc_status(work) == {}


FROM_EXTRACT = {"extract", "stats", "train", "sample", "sift", "evaluate"}


@pytest.mark.slow
def test_the_tokenizer_stage_hands_on_or_fits_and_status_stays_clean(work):
    # steps 0 (the built repo): the shipped tokenizer, named, not copied, and a bare `dvc status` is clean
    record = json.loads((work.root / "models/tokenizer/tokenizer.json").read_text())
    assert record["checkpoint"] == TINY_TOKENIZER and not record["fitted"]
    assert dvc_status(work) == {}
    # a recipe knob changes nothing while nothing is fitted? it does rerun the tokenizer stage (its params are the
    # section), which hands on the same file: DVC then takes extract and after from the cache, running nothing
    work.set_params({"tokenizer": {"fit": {"lr": 0.002}}})
    assert work.repro() <= {"tokenizer"}
    work.set_params({"tokenizer": {"fit": {"steps": 3}}})
    assert work.repro() == {"tokenizer"} | FROM_EXTRACT
    assert json.loads((work.root / "metrics/details/tokenizer.json").read_text())["steps"] == 3
    assert json.loads((work.root / "models/tokenizer/tokenizer.json").read_text())["fitted"]
    lock = yaml.safe_load((work.root / "dvc.lock").read_text())
    assert "models/tokenizer" in [d["path"] for d in lock["stages"]["extract"]["deps"]]
    assert work.repro() == set() and dvc_status(work) == {}


# ----------------------------------------------------------------------------- 2. experiments

@pytest.mark.slow
def test_experiments_run_queue_and_show(work):
    p = work.run("dvc", "exp", "run", "-S", "train.lr=0.001")
    assert stages_run(p.stdout + p.stderr) == {"train", "sample", "sift", "evaluate"}
    exps = experiments(work)
    (lr_exp,) = [d for d in exps.values() if d["params"]["params.yaml"]["data"]["train"]["lr"] == 0.001]
    metrics = lr_exp["metrics"]
    assert set(metrics["metrics/train.json"]["data"]) == {"ema_val"}
    assert {"acc", "acc_x", "tstr_x", "fid", "fid_x", "gain"} <= set(metrics["metrics/evaluate.json"]["data"])

    # a grid of two; steps=3 makes sure both change the samples (see PARAM_CHANGES), so both run evaluate
    p = work.run("dvc", "exp", "run", "--queue", "-S", "sample.cfg_scale=3,4", "-S", "sample.steps=3")
    queued = re.findall(r"Queued experiment '([^']+)'", p.stdout + p.stderr)
    assert len(queued) == 2, p.stdout + p.stderr
    work.run("dvc", "queue", "start")
    tasks = wait_for_queue(work)
    assert {tasks[name] for name in queued} == {"Success"}, tasks
    for name in queued:  # the training of the workspace is reused: only sampling and what follows ran
        log = work.run("dvc", "queue", "logs", name).stdout
        assert stages_run(log) == {"sample", "sift", "evaluate"}, log[-3000:]

    exps = experiments(work)
    cfg = {exps[name]["params"]["params.yaml"]["data"]["sample"]["cfg_scale"]: name for name in queued}
    assert set(cfg) == {3, 4}
    for name in queued:
        m = exps[name]["metrics"]
        assert "acc" in m["metrics/evaluate.json"]["data"]
        assert "ema_val" in m["metrics/train.json"]["data"]

    # compare the two queued experiments; --all also lists the metrics that did not change
    diff = json.loads(work.run("dvc", "metrics", "diff", cfg[3], cfg[4], "--all", "--json").stdout)
    assert "acc" in diff["metrics/evaluate.json"]
    assert set(diff) <= set(dvc_yaml(work)["metrics"])


# ----------------------------------------------------------------------------- 3. sharing

def push_clone_pull(repo: DvcRepo, clone_root: Path, env: dict | None = None) -> DvcRepo:
    """Commit the remote config, push, clone with git, pull: the clone must match the original."""
    repo.run("git", "add", ".dvc/config")
    repo.run("git", "commit", "-qm", "remote")
    repo.run("dvc", "push", env=env)
    assert dvc_status(repo, "--cloud", env=env) == {}, "something was not pushed"
    repo.run("git", "clone", "-q", str(repo.root), str(clone_root))
    clone = DvcRepo(clone_root)
    assert not (clone_root / "data/latents/train.safetensors").exists()
    clone.run("dvc", "pull", env=env)
    hashes = lock_hashes(repo)
    missing = [path for path in hashes if not (clone_root / path).exists()]
    assert not missing, f"not restored by dvc pull: {missing}"
    assert dvc_status(clone) == {}, "the clone is not up to date after dvc pull"
    for path in ("data/latents/train.safetensors", "data/latents/latents_stats.pt", "models/dit/ema.safetensors",
                 "models/classifier.safetensors"):
        assert (clone_root / path).read_bytes() == (repo.root / path).read_bytes(), path
    return clone


@pytest.mark.slow
def test_push_and_pull_through_a_local_remote(work, tmp_path):
    work.run("dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote"))
    push_clone_pull(work, tmp_path / "clone")
    assert any((tmp_path / "remote").rglob("*"))


@pytest.mark.slow
def test_push_and_pull_through_s3(work, tmp_path):
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed: pip install 'moto[server]'")
    pytest.importorskip("dvc_s3", reason="dvc-s3 is not installed: pip install dvc-s3")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        # dummy credentials only, nothing from the machine's AWS setup, and no proxy for the local server
        (tmp_path / "aws-config").write_text("")
        env = {**creds, "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None, "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-config"), "NO_PROXY": host, "no_proxy": host}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket="mdgen")
        work.run("dvc", "remote", "add", "-d", "s3store", "s3://mdgen/dvcstore")
        work.run("dvc", "remote", "modify", "s3store", "endpointurl", endpoint)
        push_clone_pull(work, tmp_path / "clone", env=env)
        assert s3.list_objects_v2(Bucket="mdgen", Prefix="dvcstore/")["KeyCount"] > 0
    finally:
        server.stop()


# ----------------------------------------------------------------------------- 4. plots and metrics

@pytest.mark.slow
def test_plots_render_and_metrics_diff(work, tmp_path):
    p = work.run("dvc", "plots", "show", "--json", "-o", str(tmp_path / "dvc_plots"))
    shown = json.loads(p.stdout)
    assert not shown.get("errors"), shown.get("errors")
    rendered = shown["data"]
    for decl in dvc_yaml(work)["plots"]:
        name = decl if isinstance(decl, str) else next(iter(decl))
        assert name in rendered, f"declared plot {name} missing from `dvc plots show` ({sorted(rendered)})"
    assert "epoch" not in json.dumps(rendered["loss"])  # one loss plot of steps, no epoch graph
    series = {v["filename::field"] for e in rendered["loss"] for v in e["content"]["data"]["values"]}
    assert series == {"train/loss.tsv::loss", "val/loss.tsv::loss", "val/loss_ema.tsv::loss_ema"}, series  # overlaid
    for name, entries in rendered.items():
        for e in entries:
            assert "workspace" in e["revisions"], name
            if e["type"] == "image":
                assert Path(e["url"]).stat().st_size > 0, name
            else:
                assert e["content"]["data"]["values"], f"{name} renders no data"

    # HEAD vs workspace after a change of the augmentation experiment: the `classifier` stage trains the new seed's
    # real-only classifier beside the judge, which comes out the same (so `sift` does not rerun), and `evaluate`
    # the one with samples; only evaluate's metrics move
    work.set_params({"evaluate": {"seeds": 2}})
    assert work.repro() == {"classifier", "evaluate"}
    params = json.loads(work.run("dvc", "params", "diff", "--json").stdout)
    assert (params["params.yaml"]["evaluate.seeds"]["old"], params["params.yaml"]["evaluate.seeds"]["new"]) == (1, 2)
    diff = json.loads(work.run("dvc", "metrics", "diff", "--json").stdout)
    assert set(diff) == {"metrics/evaluate.json"}, diff
    assert {"gain_lo"} <= set(diff["metrics/evaluate.json"])  # a second seed: an interval
    # what `dvc metrics show` prints is a handful of numbers in a terminal's width
    shown = work.run("dvc", "metrics", "show").stdout
    assert max(map(len, shown.splitlines())) <= 200, shown


# ----------------------------------------------------------------------------- 5. failures

def own_folder(repo: DvcRepo, users: int = 2, per_user: int = 6) -> Path:
    from tests.conftest import make_image_folder

    return make_image_folder(repo.root / "data/real", users=users, per_user=per_user)


@pytest.mark.slow
def test_corrupt_image_and_empty_user_folder_stop_split(work):
    root = own_folder(work)
    bad = root / "ID_2" / "ID2_case1_1_Doppler3.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    work.set_params({"data": {"dir": "data/real"}})
    assert_repro_fails(work, "split", "unreadable image data/real/ID_2/ID2_case1_1_Doppler3.png")

    bad.unlink()
    (root / "ID_3").mkdir()
    assert_repro_fails(work, "split", "data/real/ID_3", "0 image(s)")


@pytest.mark.slow
def test_wrong_tokenizer_checkpoint_stops_the_tokenizer_stage(work):
    garbage = work.root / "data/pretrained/garbage.safetensors"
    garbage.write_bytes(os.urandom(4096))
    work.set_params({"tokenizer": {"checkpoint": "data/pretrained/garbage.safetensors"}})
    assert_repro_fails(work, "tokenizer", "cannot read tokenizer checkpoint data/pretrained/garbage.safetensors")

    # a well-formed checkpoint of another architecture: the trained DiT's EMA weights
    shutil.copy(work.root / "models/dit/ema.safetensors", work.root / "data/pretrained/dit.safetensors")
    work.set_params({"tokenizer": {"checkpoint": "data/pretrained/dit.safetensors"}})
    assert_repro_fails(work, "tokenizer", "data/pretrained/dit.safetensors", "expected an LDM/VA-VAE autoencoder")


@pytest.mark.slow
def test_latents_and_stats_mismatch_stop_train_and_sample(work):
    """Stats edited by hand behind DVC's back: the stages refuse them instead of training/decoding garbage."""
    import torch

    stats_path = work.root / "data/latents/latents_stats.pt"
    good = torch.load(stats_path, weights_only=True)
    dit = {f: (work.root / "models/dit" / f).read_bytes() for f in ("last.ckpt", "ema.safetensors")}
    samples = sorted(p.name for p in (work.root / "data/samples/ID_1").iterdir())

    torch.save({"mean": torch.zeros(1, 8, 1, 1), "std": torch.ones(1, 8, 1, 1)}, stats_path)
    assert_cli_error(mdgen(work, "train"), "train", "8 channels in data/latents/latents_stats.pt", "[32, 4, 4]")
    assert {f: (work.root / "models/dit" / f).read_bytes() for f in dit} == dit
    assert not leftovers(work)

    torch.save({"mean": good["mean"] + 1, "std": good["std"]}, stats_path)
    assert_cli_error(mdgen(work, "sample"), "sample", "data/latents/latents_stats.pt",
                     "not the latent statistics")
    assert sorted(p.name for p in (work.root / "data/samples/ID_1").iterdir()) == samples
    assert not leftovers(work)
    assert "stats" in dvc_status(work), "DVC must notice the edited stats"


@pytest.mark.slow
def test_generate_from_the_built_repo_and_unknown_user(work):
    p = mdgen(work, "generate", "--user", "ID_2", "--n", "2", "--out", "generated", "--steps", "1")
    assert p.returncode == 0, p.stderr[-3000:]
    assert sorted(f.name for f in (work.root / "generated").iterdir()) == ["ID_2_0000.png", "ID_2_0001.png"]
    assert_cli_error(mdgen(work, "generate", "--user", "ID_9", "--out", "other"), "generate",
                     "unknown user 'ID_9'", "ID_1, ID_2")
    assert not (work.root / "other").exists()


# (params change, failing stage, fragments of its error line)
BAD_PARAMS = [
    ({"sample": {"steps": "8"}}, "sample", ["sample.steps = '8'", "expected an integer"]),
    ({"train": {"lr": -0.001}}, "train", ["train.lr = -0.001", "expected a number in (0.0, 1.0]"]),
    ({"split": {"val_fraction": 1.0}}, "split", ["split.val_fraction = 1.0", "expected a number in (0.0, 1.0)"]),
]


@pytest.mark.slow
def test_bad_params_fail_their_stage_under_dvc_repro(work):
    original = (work.root / "params.yaml").read_text()
    for change, stage, fragments in BAD_PARAMS:
        work.set_params(change)
        assert_repro_fails(work, stage, *fragments)
        (work.root / "params.yaml").write_text(original)


# ----------------------------------------------------------------------------- 6. killed training

@pytest.mark.slow
def test_killed_training_resumes_under_dvc_repro(work, tmp_path):
    import torch

    max_steps = 20  # DVCLive logs train/loss every 10 steps
    work.set_params({"train": {"max_steps": max_steps, "checkpoint_every": 4, "val_every": 1000}})
    shutil.rmtree(work.root / "models/dit")  # a new training run (persist: DVC itself never removes it)
    ckpt = work.root / "models/dit/last.ckpt"
    with open(tmp_path / "killed.log", "w") as log:
        # its own session, so the kill takes DVC and the `mdgen train` it spawned, as a dying machine does
        proc = subprocess.Popen(["dvc", "repro"], cwd=work.root, env=work.env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 600
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert ckpt.exists(), (tmp_path / "killed.log").read_text()[-3000:]
    step = int(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    assert 0 < step < max_steps
    assert not (work.root / "models/dit/ema.safetensors").exists()
    assert not leftovers(work)
    assert "train" in dvc_status(work)

    p = work.run("dvc", "repro")
    out = p.stdout + p.stderr
    assert f"resuming from models/dit/last.ckpt at step {step}" in out, out[-3000:]
    assert stages_run(out) == {"train", "sample", "sift", "evaluate"}
    assert dvc_status(work) == {}
    summary = json.loads((work.root / "metrics/details/train.json").read_text())
    assert summary["step"] == max_steps and "val/loss" in summary
    from mdgen.checkpoints import read_ema_meta
    assert read_ema_meta(work.root / "models/dit/ema.safetensors")["step"] == max_steps
    header, *rows = [r.split("\t") for r in
                     (work.root / "metrics/train/plots/metrics/train/loss.tsv").read_text().splitlines()]
    steps = [int(r[header.index("step")]) for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == max_steps, steps


# ----------------------------------------------------------------------------- 7. determinism

@pytest.mark.slow
def test_forced_rerun_on_cpu_is_byte_identical(built, work):
    before = lock_hashes(built)
    train_files = {str(f.relative_to(built.root)): f.read_bytes()
                   for f in (built.root / "metrics/train").rglob("*") if f.is_file()}
    # models/dit persists across runs; without its checkpoint `train` starts afresh, as in the first run
    shutil.rmtree(work.root / "models/dit")
    p = work.run("dvc", "repro", "-f")
    assert stages_run(p.stdout + p.stderr) == set(STAGES)
    after = lock_hashes(work)
    for path in ("data/simulated", "data/split.json", "models/tokenizer", "data/latents/train.safetensors",
                 "data/latents/val.safetensors", "data/latents/latents_stats.pt", "models/dit", "data/samples",
                 "models/classifier.safetensors"):
        assert after[path] == before[path], f"{path} differs between two runs"
    for rel, blob in train_files.items():
        assert (work.root / rel).read_bytes() == blob, f"{rel} differs between two runs"
    summaries = [json.loads((r.root / "metrics/train.json").read_text()) for r in (built, work)]
    assert summaries[0] == summaries[1]


# ----------------------------------------------------------------------------- 8. the GPU profile

def doc_section(page: str, title: str) -> str:
    """The text under the heading `title` (any level) of the Markdown file `page` (relative to the repository
    root, e.g. "docs/gpu.md"), up to the next heading of the same or a higher level. Lines inside ``` fences
    are never headings (a bash comment starts with `# ` too)."""
    lines = (REPO / page).read_text().splitlines(keepends=True)
    fenced, headings = False, []  # (line index, level, title) of every heading outside a fence
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"(#+) (.*?)\s*$", line)):
            headings.append((i, len(m.group(1)), m.group(2)))
    found = [(i, level) for i, level, name in headings if name == title]
    assert len(found) == 1, f"{page} has {len(found)} sections '{title}'"
    start, level = found[0]
    end = next((i for i, lv, _ in headings if i > start and lv <= level), len(lines))
    return "".join(lines[start + 1:end])


def set_params_of(command: str) -> list[str]:
    """The `-S key=value` arguments of a `dvc exp run` command line."""
    args = shlex.split(command)
    return [args[i + 1] for i, a in enumerate(args) if a in ("-S", "--set-param")]


def validated(tmp_path: Path, overrides: list[str]) -> dict:
    """params.yaml with `overrides` applied as `dvc exp run -S` applies them (hydra), then validated."""
    from dvc.utils.hydra import apply_overrides

    from mdgen.params import load_params

    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    apply_overrides(path, overrides)
    return load_params(path)


def test_gpu_profiles_in_docs_are_valid(tmp_path):
    from mdgen.dit import LightningDiT_configs

    section = doc_section("docs/gpu.md", "Real data on GPUs")
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    commands = [c for b in blocks for c in b.replace("\\\n", " ").splitlines() if c.strip().startswith("dvc exp run")]
    assert len(commands) == 2, commands  # one cloud GPU, Kaggle's 2xT4
    profiles = []
    for command in commands:
        overrides = set_params_of(command)
        keys = [o.split("=", 1)[0] for o in overrides]
        assert len(keys) == len(set(keys)), f"a key is set twice in {command}"
        p = validated(tmp_path, overrides)
        assert p["model.name"] in LightningDiT_configs
        assert p["tokenizer.checkpoint"] == "data/pretrained/vavae-imagenet256-f16d32-dinov2.pt"
        assert p["data.image_size"] == 256 and p["train.accelerator"] == "gpu"
        profiles.append((overrides, p))
    (cloud, p1), (_, p2) = profiles
    assert (p1["train.devices"], p1["train.precision"]) == (1, "bf16-mixed")
    # T4: the card decides (auto -> 16-mixed), two DDP processes, no Triton compile on sm75
    assert (p2["train.devices"], p2["train.strategy"], p2["train.precision"], p2["train.compile"]) == \
        (2, "ddp", "auto", False)

    # the variants listed below the commands: the cloud command's overrides with the bullet's `key=value`
    variants = re.findall(r"^- \*\*(.+?)\*\*(.*?)(?=^- |\n\n|\Z)", section, flags=re.M | re.S)
    changed = 0
    for name, text in variants:
        pairs = dict(re.findall(r"`([a-z_]+\.[a-z_]+)=([^`\s]+)`", text))
        if not pairs:
            continue
        merged = {**dict(o.split("=", 1) for o in cloud), **pairs}
        v = validated(tmp_path, [f"{k}={val}" for k, val in merged.items()])
        assert v["model.name"] in LightningDiT_configs, name
        changed += 1
    assert changed >= 1, variants  # XL/1
    for model in set(re.findall(r"LightningDiT-[A-Za-z]+/\d", section)):
        assert model in LightningDiT_configs, model
