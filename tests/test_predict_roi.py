"""Inference is decided once, in the plan: `seglab predict` on a validation case gives the
probabilities the validation pass computed, ROI (read from files) and mirroring included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab import api
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.infer import load_model, sliding_window_predict
from seglab.preprocess import PreparedCache
from seglab.run_setup import open_dataset, prepare_cases
from tests.conftest import disc_image
from tests.test_train import TINY_2D


def write_fov_dataset(root: Path) -> Path:
    """12 grey discs with a field of view read from fov/{id}.png: outside it the image is bright
    noise, so that normalising inside the ROI and over the whole image differ."""
    for folder in ("images", "labels", "fov"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:40, :48]
    fov = (yy - 20) ** 2 + (xx - 24) ** 2 < 19**2
    for index in range(12):
        image, mask = disc_image(rng, (40, 48))
        image[~fov] = rng.integers(200, 256, int((~fov).sum()))
        mask[~fov] = 0
        Image.fromarray(image).save(root / "images" / f"c{index:02d}.png")
        Image.fromarray(mask * 255).save(root / "labels" / f"c{index:02d}.png")
        Image.fromarray(fov.astype(np.uint8) * 255).save(root / "fov" / f"c{index:02d}.png")
    (root / "seglab.yaml").write_text(
        "images: images/*.png\nid: 'images/(?P<id>c\\d\\d)\\.png$'\nlabels: 'labels/{id}.png'\n"
        "roi: 'fov/{id}.png'\nlabel_values: {0: 0, 255: 1}\nclasses: [background, disc]\n")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("mirror_axes", [[], [0, 1]])
def test_predict_on_a_validation_case_gives_the_validation_pass_probabilities(
        tmp_path: Path, mirror_axes: list[int]) -> None:
    data = write_fov_dataset(tmp_path / "data")
    run = api.train(data, tmp_path / "run", {**TINY_2D, "epochs": 1,
                                             "inference.mirror_axes": mirror_axes},
                    progress=False, evaluate=False)
    plan, precision = run.plan(), Precision.choose("cpu", "fp32", "off")
    case_id = run.read_json("split.json")["val"][0]
    prepared = prepare_cases(open_dataset(run), [case_id], plan,
                             PreparedCache(run.preprocessed, plan))[0]
    validation = sliding_window_predict(load_model(run, precision), prepared.image, plan,
                                        precision).numpy()

    api.predict(run.path, [data / "images" / f"{case_id}.png"], tmp_path / "pred",
                probabilities=True, device="cpu", precision="fp32")
    predicted = np.load(tmp_path / "pred" / f"{case_id}_probs.npz")["probabilities"]
    np.testing.assert_allclose(predicted, validation, atol=1e-5)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = elsewhere / f"{case_id}.png"
    copy.write_bytes((data / "images" / f"{case_id}.png").read_bytes())
    with pytest.raises(SeglabError, match="give --roi DIR"):
        api.predict(run.path, [copy], tmp_path / "pred2", device="cpu", precision="fp32")
    api.predict(run.path, [copy], tmp_path / "pred3", probabilities=True, device="cpu",
                precision="fp32", roi=data / "fov")
    from_folder = np.load(tmp_path / "pred3" / f"{case_id}_probs.npz")["probabilities"]
    np.testing.assert_allclose(from_folder, validation, atol=1e-5)
