"""The served page in headless Chromium (Debian's `chromium`, driven by Playwright): an upload
draws the mask over the image, and the mask it downloads is `seglab predict`'s, byte for byte.
Skipped where there is no Chromium."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from PIL import Image

from seglab import api
from seglab.run import Run
from seglab.serve import create_app
from tests.conftest import write_disc_dataset
from tests.test_train import TINY_2D

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def screenshot_of_the_page(run_path: Path, image: Path, out: Path) -> tuple[bytes, np.ndarray]:
    """Serves the run, uploads `image` through the page in headless Chromium, saves a
    screenshot to `out`; returns the downloaded mask file and the canvas pixels."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Run.open(run_path)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model').textContent"
                                   ".startsWith('Run ')")
            page.set_input_files("#file", str(image))
            page.check("#uncertainty")
            page.click("#go")
            page.wait_for_function("document.getElementById('status').textContent === 'done'",
                                   timeout=60_000)
            pixels = page.evaluate("""() => {const c = document.getElementById('canvas');
                return Array.from(c.getContext('2d').getImageData(0, 0, c.width,
                c.height).data);}""")
            with page.expect_download() as download:
                page.click("#download")
            mask = Path(download.value.path()).read_bytes()
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return mask, np.array(pixels, np.uint8)


def test_an_upload_through_the_page_draws_the_mask_and_downloads_what_predict_writes(
        tmp_path: Path) -> None:
    data = write_disc_dataset(tmp_path / "pngs", seed=1)
    run = api.train(data, tmp_path / "run", TINY_2D, progress=False, evaluate=False)
    image = data / "images" / "case00.png"
    mask, canvas = screenshot_of_the_page(run.path, image, tmp_path / "page.png")
    predicted = api.predict(run.path, [image], tmp_path / "pred")[0]
    assert mask == predicted.read_bytes()  # byte for byte
    drawn = canvas.reshape(40, 48, 4)[..., :3].astype(int)
    grey = np.asarray(Image.open(image).convert("L"), int)
    foreground = np.asarray(Image.open(predicted)) > 0
    if foreground.any():  # the mask's colour is blended in where it is predicted
        channel_spread = drawn[foreground].max(axis=-1) - drawn[foreground].min(axis=-1)
        assert channel_spread.mean() > 20
    assert (drawn[~foreground].std(axis=-1) < 1).all() and grey.shape == foreground.shape
    assert (tmp_path / "page.png").stat().st_size > 10_000
