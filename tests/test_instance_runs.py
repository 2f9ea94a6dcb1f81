"""An instance run end to end on tiny data: objects found by the rim + watershed method, its
thresholds chosen on the validation cases, object scores in the evaluation, object-id masks and
a per-object table from `predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from seglab import api
from seglab.data.io import read_label
from seglab.errors import SeglabError
from seglab.plan import make_plan
from tests.test_train import TINY_2D


def _nuclei_dataset(root: Path, cases: int = 10) -> Path:
    """Grey 40x40 images of 2-3 bright touching discs, one mask PNG per disc (DSB's layout)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :40]
    for index in range(cases):
        folder = root / "cells" / f"c{index:02d}"
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        image = rng.normal(40, 8, (40, 40))
        for k in range(int(rng.integers(2, 4))):
            cy, cx = rng.uniform(10, 30, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 36
            image[disc] = 160 + rng.normal(0, 8, disc.sum())
            Image.fromarray(disc.astype(np.uint8) * 255).save(folder / "masks" / f"m{k}.png")
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            folder / "images" / f"c{index:02d}.png")
    (root / "seglab.yaml").write_text(
        "images: 'cells/*/images/*.png'\nid: 'cells/(?P<id>[^/]+)/images/'\n"
        "labels: 'cells/{id}/masks/*.png'\nclasses: [background, nucleus]\n")
    return root


def test_an_instance_run_chooses_its_thresholds_and_scores_objects(tmp_path: Path) -> None:
    data = _nuclei_dataset(tmp_path / "data")
    run = api.train(data, tmp_path / "run", {**TINY_2D, "epochs": 3}, progress=False)
    plan = run.plan()
    assert plan.task == "instance" and plan.classes == ["background", "nucleus", "object_rim"]
    assert plan.instances == {"method": "rim_watershed", "rim_class": 2, "contact_width": 1,
                              "contact": False}
    split = run.read_json("instance_split.json")
    assert len(split["tried"]) == 30 and split["validation_dsb_score"] is not None
    summary = json.loads((run.path / "evaluation" / "metrics.json").read_text())["summary"]
    assert list(summary["classes"]) == ["nucleus"]  # the rim is the network's class only
    objects = summary["objects"]
    assert objects["n_ref"] > 0 and 0 <= objects["dsb_score"]["mean"] <= 1
    assert (run.path / "evaluation" / "objects_per_case.csv").is_file()
    assert "The reference objects matched worst" in (run.path / "report.html").read_text()

    written = api.predict(run.path, [data / "cells" / "c00" / "images" / "c00.png"],
                          tmp_path / "pred")
    ids = read_label(tmp_path / "pred" / "c00.png")
    rows = (tmp_path / "pred" / "objects.csv").read_text().splitlines()
    assert rows[0].startswith("case,object,class,score,voxels,area_mm2,equivalent_diameter_mm,")
    assert len(rows) - 1 == len(np.unique(ids)) - 1
    assert all(row.split(",")[2] == "nucleus" and 0 < float(row.split(",")[3]) <= 1
               for row in rows[1:])
    results = json.loads((tmp_path / "pred" / "objects.json").read_text())
    assert len(results) == len(rows) - 1 and {r["image_id"] for r in results} == {"c00"}
    assert all(coco_mask.area(r["segmentation"]) == r["area"] > 0 for r in results)
    assert len(written) == 3


def test_a_contact_class_is_one_more_class_of_the_network_not_of_the_data(
        tmp_path: Path) -> None:
    data = _nuclei_dataset(tmp_path / "data", cases=6)
    plan = make_plan(api.inspect(data), {"instances.contact": True})
    assert plan.classes == ["background", "nucleus", "object_rim", "object_contact"]
    assert plan.data_classes == ["background", "nucleus"]


def test_an_instance_dataset_trains_semantically_when_asked(tmp_path: Path) -> None:
    data = _nuclei_dataset(tmp_path / "data", cases=6)
    run = api.train(data, tmp_path / "run", {**TINY_2D, "task": "semantic"}, progress=False,
                    evaluate=False)
    assert run.plan().classes == ["background", "nucleus"]
    assert (run.path / "postprocessing.json").is_file()


def test_a_cross_validated_instance_run_chooses_its_thresholds_out_of_fold(
        tmp_path: Path) -> None:
    data = _nuclei_dataset(tmp_path / "data", cases=8)
    run = api.train(data, tmp_path / "run", {**TINY_2D, "epochs": 1}, progress=False,
                    folds=2, evaluate=False)
    split = run.read_json("instance_split.json")
    assert split["validation_dsb_score"] is not None  # the folds' validation cases chose
    with pytest.raises(SeglabError, match="a Mask R-CNN run is not cross-validated"):
        api.train(data, tmp_path / "rcnn", {"instances.method": "mask_rcnn"}, folds=2)
    assert not (tmp_path / "rcnn").exists()


def test_compare_puts_both_instance_methods_in_one_table_with_their_thresholds(
        tmp_path: Path) -> None:
    data = _nuclei_dataset(tmp_path / "data", cases=8)
    out = api.compare(data, ["rim_watershed", "mask_rcnn"], tmp_path / "cmp", epochs=1,
                      overrides={"iterations_per_epoch": 2, "batch_size": 2,
                                 "patch_size": [32, 32]}, progress=False)
    rows = {row["model"]: row for row in json.loads((out / "comparison.json").read_text())["rows"]}
    assert set(rows) == {"rim_watershed", "mask_rcnn"}
    for name, row in rows.items():
        assert row["status"] == "ok", row.get("reason")
        assert 0 <= row["dsb_score_mean"] <= 1 and row["steps"] == 2
        assert (out / "runs" / name / "instance_split.json").is_file()  # chosen on validation
    assert "DSB score" in (out / "comparison.md").read_text()
