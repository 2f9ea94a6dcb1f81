"""A run folder is locked while a process trains it; a lock left by a killed process is stale."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seglab.errors import SeglabError
from seglab.run import Run, load_checkpoint
from tests.test_train import _start_training


def _seglab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seglab", *args], capture_output=True,
                          timeout=300, encoding="utf-8")


def test_the_lock_refuses_a_second_holder_and_is_free_again_after_release(tmp_path: Path) -> None:
    run = Run(tmp_path)
    with run.training_lock():
        with pytest.raises(SeglabError, match=r"being trained by pid \d+ on "):
            with Run(tmp_path).training_lock():
                pass
    with run.training_lock():
        pass


@pytest.mark.slow
def test_a_second_resume_of_a_run_in_training_exits_2_and_one_after_kill_9_proceeds(
        png_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _start_training(png_dataset, out, "--set", "epochs=1000")
    deadline = time.monotonic() + 240
    while not (out / "log.jsonl").exists() and time.monotonic() < deadline:
        assert first.poll() is None, first.stderr.read().decode()
        time.sleep(0.05)

    second = _seglab("train", "--out", str(out), "--resume", "--no-evaluate")
    assert second.returncode == 2
    assert second.stderr.strip().count("\n") == 0
    assert f"being trained by pid {first.pid} on " in second.stderr
    epochs_before = len(Run.open(out).log())

    first.send_signal(signal.SIGKILL)
    first.wait()
    done = load_checkpoint(out / "checkpoints" / "last.pt")["progress"]["epoch"]
    third = _seglab("train", "--out", str(out), "--resume", "--no-evaluate",
                    "--set", f"epochs={done + 1}")
    assert third.returncode == 0, third.stderr
    assert "\r" not in third.stdout + third.stderr  # piped: one line per epoch, no redrawn bar
    assert [line.split()[:2] for line in third.stdout.splitlines()
            if line.startswith("epoch")] == [["epoch", str(done + 1)]]
    epochs = [record["epoch"] for record in Run.open(out).log()]
    assert epochs == list(range(1, done + 2)) and len(epochs) >= epochs_before


def test_a_run_created_at_the_same_moment_by_another_process_is_refused_cleanly(
        tmp_path: Path) -> None:
    from seglab.data.inspect import Fingerprint
    from seglab.run_setup import write_new_run
    from tests.conftest import small_plan

    plan, fingerprint = small_plan((8, 8)), Fingerprint.__new__(Fingerprint)
    fingerprint.to_dict = lambda: {}
    out = tmp_path / "run"
    out.mkdir()  # an empty folder is taken
    write_new_run(out, tmp_path, fingerprint, plan, {"train": ["a"]})
    with pytest.raises(SeglabError, match="another process created a run there"):
        write_new_run(out, tmp_path, fingerprint, plan, {"train": ["b"]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder left
    assert Run(out).read_json("split.json") == {"train": ["a"]}
