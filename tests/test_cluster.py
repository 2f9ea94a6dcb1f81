"""`seglab predict --cluster`: a local two-worker Dask cluster (loopback only) writes the same
bytes as one process, every output exactly once, even when a worker dies midway."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab import api
from seglab.errors import SeglabError
from tests.conftest import disc_image
from tests.test_train import TINY_2D

distributed = pytest.importorskip("distributed")


def _inputs(folder: Path, count: int = 20) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(3)
    for index in range(count):
        image, _ = disc_image(rng, (96, 112))
        Image.fromarray(image).save(folder / f"img{index:02d}.png")
    return folder


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as local:
        yield local


def test_a_cluster_writes_the_bytes_of_one_process_even_when_a_worker_dies(
        png_dataset: Path, tmp_path: Path, cluster) -> None:
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    inputs = _inputs(tmp_path / "inputs")
    api.predict(run.path, [inputs], tmp_path / "single")
    expected = _contents(tmp_path / "single")
    assert len(expected) == 20
    api.predict(run.path, [inputs], tmp_path / "shared", cluster=cluster.scheduler_address)
    assert _contents(tmp_path / "shared") == expected

    with distributed.Client(cluster.scheduler_address) as client:
        pids = client.run(os.getpid)
    out, killed = tmp_path / "interrupted", []

    def kill_one_worker_midway() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob("img*.png")):
            time.sleep(0.005)
        killed.append(len(list(out.glob("img*.png"))))
        os.kill(next(iter(pids.values())), signal.SIGKILL)

    killer = threading.Thread(target=kill_one_worker_midway)
    killer.start()
    from seglab.cluster import predict_on_cluster
    from seglab.run import Run

    predict_on_cluster(Run.open(run.path), [inputs], out, cluster.scheduler_address,
                       {"device": "cpu", "precision": "auto", "compile": "auto", "tta": "plan",
                        "roi": None, "probabilities": False, "uncertainty": False}, shard_size=1)
    killer.join()
    assert 0 < killed[0] < 20  # the worker died with outputs still to write
    assert _contents(out) == expected  # each output once, complete; no temporary file left


def test_a_cluster_address_where_nothing_answers_is_one_clear_error(
        png_dataset: Path, tmp_path: Path) -> None:
    run = api.train(png_dataset, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    with pytest.raises(SeglabError, match="no Dask scheduler answers"):
        api.predict(run.path, [png_dataset / "images"], tmp_path / "out",
                    cluster="tcp://127.0.0.1:9")
