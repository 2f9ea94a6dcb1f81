"""The web service: its page, its API, and how it stays up under bad or oversized uploads."""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from seglab import api
from seglab.errors import SeglabError
from seglab.serve import create_app, read_upload, sniff
from tests.conftest import write_disc_dataset
from tests.test_io import _dicom_series
from tests.test_train import TINY_2D


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serve")
    run = api.train(write_disc_dataset(root / "pngs", seed=1), root / "run", TINY_2D,
                    progress=False, evaluate=False)
    return run, create_app(run, max_upload_mb=0.05, token="s3cret", queue=1)


def _png(size=(30, 41)) -> bytes:
    buffer = io.BytesIO()
    image = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


AUTH = {"Authorization": "Bearer s3cret"}


def test_the_page_is_self_contained_and_health_needs_no_token(served) -> None:
    client = TestClient(served[1])
    page = client.get("/").text
    assert "<canvas" in page and "predict" in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/model").status_code == 401
    described = client.get("/model", headers=AUTH).json()
    assert described["classes"] == served[0].plan().classes and described["dims"] == 2
    assert "/predict" in client.get("/openapi.json").json()["paths"]


def test_an_upload_comes_back_as_a_mask_its_measurements_and_a_file_to_download(
        served) -> None:
    client = TestClient(served[1])
    answer = client.post("/predict?uncertainty=true", headers=AUTH,
                         files={"file": ("scan.jpg", _png(), "text/plain")})  # bytes decide
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["shape"] == [30, 41] and body["mask"]["shape"] == [30, 41]
    mask = np.frombuffer(base64.b64decode(body["mask"]["data"]), np.uint16).reshape(30, 41)
    assert set(np.unique(mask)) <= {0, 1}
    assert body["maps"]["uncertainty"]["shape"] == [30, 41]
    assert set(body["measurements"]["classes"]) == set(served[0].plan().classes[1:])
    download = Image.open(io.BytesIO(base64.b64decode(body["download"]["data"])))
    assert body["download"]["name"] == "mask.png" and download.size == (41, 30)
    path_like = client.post("/predict", headers=AUTH,
                            files={"file": ("../../etc/passwd", _png())})
    assert path_like.status_code == 400 and "not a path" in path_like.json()["detail"]


@pytest.mark.parametrize(("content", "status", "message"), [
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 400, "cannot read image"),  # truncated
    (b"hello, not an image", 400, "not an image seglab reads"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 60_000, 413, "over the limit of 0.05 MB"),
    (b"PK\x03\x04 broken", 400, "malformed zip"),
])
def test_bad_uploads_get_a_clear_status_and_the_service_stays_up(
        served, content: bytes, status: int, message: str) -> None:
    client = TestClient(served[1])
    answer = client.post("/predict", headers=AUTH, files={"file": ("x.png", content)})
    assert answer.status_code == status and message in answer.json()["detail"]
    assert "/tmp" not in answer.json()["detail"]  # no server path leaks
    assert client.get("/health").status_code == 200


def test_a_wrong_token_is_refused_and_a_full_queue_answers_busy(served) -> None:
    client = TestClient(served[1])
    files = {"file": ("a.png", _png())}
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/predict", headers=wrong, files=files).status_code == 401
    slots = served[1].state.service.slots
    taken = [slots.acquire(blocking=False) for _ in range(2)]  # queue=1: one running, one waiting
    try:
        answer = client.post("/predict", headers=AUTH, files=files)
        assert answer.status_code == 503 and "busy" in answer.json()["detail"]
    finally:
        for _ in filter(None, taken):
            slots.release()
    assert client.post("/predict", headers=AUTH, files=files).status_code == 200


def test_types_are_told_from_bytes_and_a_zip_of_a_series_reads_as_a_volume(
        tmp_path: Path) -> None:
    assert sniff(_png()) == ".png" and sniff(b"\xff\xd8\xff\xe0") == ".jpg"
    assert sniff((348).to_bytes(4, "little") + b"\x00" * 10) == ".nii"
    with pytest.raises(SeglabError, match="not an image"):
        sniff(b"#!/bin/sh\nrm -rf /")
    volume = np.random.default_rng(1).integers(0, 500, (3, 8, 8)).astype(np.int16)
    _dicom_series(tmp_path / "series", volume, (0.7, 0.7, 2.0))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for k, path in enumerate(sorted((tmp_path / "series").iterdir())):
            archive.write(path, f"../../escape{k}.dcm")  # member names never become paths
    folder = tmp_path / "upload"
    folder.mkdir()
    case = read_upload(buffer.getvalue(), folder)
    assert case.image.shape == (1, 3, 8, 8) and np.array_equal(case.image[0], volume)
    assert not list(tmp_path.parent.glob("escape*.dcm"))
