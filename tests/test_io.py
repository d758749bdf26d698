"""Writes that never destroy what they did not create, one writer per output folder, nothing half-written kept."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mdgen import cli
from mdgen.errors import BusyError, OutputPathError
from mdgen.io import atomic_path, exclusive_writer, remove_stale_temps, write_json
from tests.conftest import REPO


def test_a_file_never_replaces_a_folder_nor_a_folder_a_file(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("mine")
    with pytest.raises(OutputPathError, match=f"{keep} is an existing folder"):
        write_json(keep, {"a": 1})
    assert (keep / "precious.txt").read_text() == "mine"
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(OutputPathError, match=f"{afile} is an existing file"):
        with atomic_path(afile, folder=True) as tmp:
            tmp.mkdir()
    with pytest.raises(OutputPathError, match=f"{afile} is an existing file, so nothing can be written beneath it"):
        write_json(afile / "x.json", {})
    assert afile.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "keep"]  # no temp left behind
    # what the helper is for still works: a file replaces a file, a folder a folder
    write_json(tmp_path / "x.json", {"a": 1})
    write_json(tmp_path / "x.json", {"a": 2})
    with atomic_path(keep, folder=True) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in keep.iterdir()] == ["new.txt"]


def test_export_dit_and_bench_refuse_a_folder_as_out(tmp_path, capsys):
    out = tmp_path / "models"
    out.mkdir()
    (out / "last.ckpt").write_text("not mine to delete")
    assert cli.main(["export-dit", "--ckpt", str(out / "last.ckpt"), "--out", str(out)]) == 1
    assert (out / "last.ckpt").read_text() == "not mine to delete"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err, err
    with pytest.raises(SystemExit):  # argparse's usage error, before minutes of benchmarks
        cli.main(["bench", "--quick", "--what", "train", "--out", str(out)])
    assert "--out:" in capsys.readouterr().err and (out / "last.ckpt").exists()


HOLD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[2])
    from mdgen.io import exclusive_writer
    with exclusive_writer(sys.argv[1]):
        print("held", flush=True)
        time.sleep(60)
""")


@pytest.fixture
def held(tmp_path):
    """A second process holding the writer lock of tmp_path/models/dit."""
    folder = tmp_path / "models" / "dit"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(REPO / "src")], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc
    proc.kill()
    proc.wait()


def test_a_second_writer_stops_at_once_naming_the_folder_and_the_holder(held):
    folder, proc = held
    t0 = time.perf_counter()
    with pytest.raises(BusyError, match=rf"{folder} is being written by another process \(pid {proc.pid} on "):
        with exclusive_writer(folder):
            pass
    assert time.perf_counter() - t0 < 5
    proc.kill()
    proc.wait()  # a dead holder's lock is free: the OS drops it with the process
    with exclusive_writer(folder):
        pass


def test_train_stage_refuses_a_second_writer(held, monkeypatch, capsys):
    folder, proc = held
    (folder.parent.parent / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(folder.parent.parent)
    assert cli.main(["train"]) == 1  # before any data is read
    err = capsys.readouterr().err
    assert err.startswith("mdgen train: error: models/dit is being written by another process") and \
        f"pid {proc.pid}" in err and err.count("\n") == 1, err


def test_the_lock_removes_what_a_killed_writer_left(tmp_path):
    folder = tmp_path / "dit"
    code = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO / "src")!r})
        from mdgen.io import atomic_path
        with atomic_path({str(folder / "ema.safetensors")!r}) as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
    (folder / ".last.ckpt.4242.tmp").write_bytes(b"torn")  # AtomicLastCheckpoint's temp file of a dead run
    left = sorted(p.name for p in folder.iterdir())
    assert len(left) == 2 and all(n.endswith(".tmp") for n in left)
    with exclusive_writer(folder) as removed:
        assert sorted(removed) == left
    assert list(folder.iterdir()) == []
    assert remove_stale_temps(tmp_path / "absent") == []


def test_an_unwritable_output_folder_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    # root ignores permission bits, so make the probe fail as it does for a normal user
    import tempfile

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    (tmp_path / "models" / "dit").mkdir(parents=True)  # e.g. left by a run as another user
    with pytest.raises(OutputPathError, match=r"models/dit is not writable by this process \(Permission denied\)"):
        with exclusive_writer(tmp_path / "models" / "dit"):
            raise AssertionError("the block must not run")
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train"]) == 1
    err = capsys.readouterr().err
    assert err == "mdgen train: error: models/dit is not writable by this process (Permission denied); fix its " \
                  "permissions or run as its owner\n"


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, monkeypatch, capsys):
    from mdgen.errors import DivergedError
    assert cli.user_error(DivergedError("non-finite training loss nan at step 3"))
    assert cli.user_error(PermissionError(13, "Permission denied", "models/dit"))
    for bug in (RuntimeError("shape mismatch"), KeyError("x"), ValueError("bad"), ZeroDivisionError()):
        assert not cli.user_error(bug)
    # a bug inside a stage: the traceback reaches the user (and `dvc repro`'s log)
    monkeypatch.chdir(tmp_path)
    import mdgen.stages.split as split_stage

    def bug(**kwargs):
        raise RuntimeError("a tensor shape bug")

    monkeypatch.setattr(split_stage, "main", bug)
    with pytest.raises(RuntimeError, match="a tensor shape bug"):
        cli.main(["split"])
    assert os.listdir(tmp_path) == []


def test_corrupt_files_of_every_stage_are_one_line_naming_them(tmp_path):
    # the files a stage reads that an earlier one wrote, cut off or garbled: each is a BadFileError naming the
    # file and how to get it back, never a SafetensorError/JSONDecodeError/KeyError traceback
    from mdgen.classifier import load_classifier
    from mdgen.errors import BadFileError
    from mdgen.io import load_torch_file
    from mdgen.latents import load_stats, read_latents_meta
    from mdgen.split import read_split

    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"latents\": {\"dtype\"")
    for read, what in ((read_latents_meta, "latents file"), (load_classifier, "classifier")):
        with pytest.raises(BadFileError, match=rf"cannot read {what} {cut}: truncated or corrupt .*`dvc checkout`"):
            read(cut)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint at all\n")
    for read in (lambda p: load_torch_file(p, "tokenizer checkpoint"), load_stats):
        with pytest.raises(BadFileError, match=f"{junk}: truncated or corrupt"):
            read(junk)
    split = tmp_path / "split.json"
    split.write_text('{"users": ["ID_1"], "tra')
    with pytest.raises(BadFileError, match=f"{split}: cannot read"):
        read_split(split)


def test_a_missing_init_from_stops_train_before_any_work(tmp_path):
    from mdgen.errors import MissingFileError
    from tests.test_dit_training import make_latents, run_train

    root = make_latents(tmp_path)
    with pytest.raises(MissingFileError, match=r"train.init_from = .*nothere.pt: no such file"):
        run_train(root, init_from=str(tmp_path / "nothere.pt"))
    assert not (root / "dit").exists()
