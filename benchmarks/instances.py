"""Instance segmentation on real data, written into BENCHMARKS.md:

    uv run python benchmarks/instances.py dsb2018 --minutes 30
    uv run python benchmarks/instances.py tiny_coco --minutes 20

- dsb2018: `seglab compare examples/dsb2018.yaml --models rim_watershed,mask_rcnn --minutes M`:
  both instance methods trained on the same split (examples/splits/dsb2018.json: 24 test
  images) with no override but the budget, scored on the same test images (DSB score, object F1
  at IoU 0.5, Dice of the objects' class map), with training time, steps and images/s.
- tiny_coco: `seglab train` (the planner's method, the budget the only override) on train2017,
  its val2017 images predicted (`seglab predict`, COCO results JSON) and scored by COCO mask AP
  twice on the same predictions: with seglab's `average_precision` and with pycocotools'
  COCOeval against the original annotations (crowds included), for all classes and for person.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from common import ROOT, machine, write_section
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from seglab import api
from seglab.metrics.instances import Objects, average_precision

WORKDIR = ROOT / "runs" / "benchmarks" / "instances"
DSB = ROOT / "examples" / "dsb2018.yaml"
COCO_ROOT = ROOT.parent / "shared" / "datasets" / "tiny_coco" / "tiny_coco"
DSB_PUBLISHED = (
    "Published on DSB2018 (not comparable one to one: other images, other splits): the winning "
    "team's stage-2 score ≈ 0.631 (Caicedo et al., Nature Methods 16:1247, 2019, Fig. 1; the "
    "mean over IoU thresholds 0.5:0.05:0.95 computed here); on the StarDist paper's own DSB2018 "
    "split, average precision at IoU 0.5 of Mask R-CNN 0.832 and StarDist 0.864 (Schmidt et al., "
    "\"Cell Detection with Star-convex Polygons\", MICCAI 2018, Table 1; quoted from memory, not "
    "re-verified).")


def dsb2018(minutes: float, resume: bool = False) -> str:
    out = WORKDIR / "dsb2018"
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    api.compare(DSB, ["rim_watershed", "mask_rcnn"], out, minutes=minutes, progress=False,
                resume=resume)
    return "\n".join([
        "### DSB2018 nuclei: the rim watershed against Mask R-CNN",
        "",
        f"- command: `uv run python benchmarks/instances.py dsb2018 --minutes {minutes:g}` (= "
        f"`seglab compare examples/dsb2018.yaml --models rim_watershed,mask_rcnn --minutes "
        f"{minutes:g}`)",
        f"- machine: {machine()}",
        "- split: examples/splits/dsb2018.json (24 of the 120 images in ../shared, drawn with "
        "seed 2018), validation drawn from the other 96; each method's thresholds chosen on the "
        "validation images by the DSB score",
        "",
        (out / "comparison.md").read_text().strip(),
        "",
        DSB_PUBLISHED,
        "",
    ])


def tiny_coco(minutes: float, resume: bool = False) -> str:
    out = WORKDIR / "tiny_coco"
    again = resume and (out / "run" / "plan.json").is_file()
    if not again:
        shutil.rmtree(out, ignore_errors=True)
    run = api.train(None if again else COCO_ROOT, out / "run",
                    None if again else {"time_budget_minutes": minutes}, resume=again,
                    progress=False, evaluate=False)
    reference = COCO(str(COCO_ROOT / "annotations" / "instances_val2017.json"))
    images = {Path(info["file_name"]).stem: info for info in reference.dataset["images"]}
    api.predict(run.path, [COCO_ROOT / "val2017"], out / "val")
    results = json.loads((out / "val" / "objects.json").read_text())
    plan = run.plan()
    category = {index: next(c["id"] for c in reference.dataset["categories"]
                            if c["name"] == name) for index, name in enumerate(plan.classes)
                if index > 0}
    detections = [{**r, "image_id": images[r["image_id"]]["id"],
                   "category_id": category[r["category_id"]]} for r in results]
    person = next(c["id"] for c in reference.dataset["categories"] if c["name"] == "person")
    figures = {scope: _both_aps(reference, detections, scope) for scope in ("all", person)}
    last = run.log()[-1]
    lines = [
        "### tiny_coco (COCO JSON): Mask R-CNN, mask AP on val2017",
        "",
        f"- command: `uv run python benchmarks/instances.py tiny_coco --minutes {minutes:g}` "
        f"(= `seglab train {COCO_ROOT.relative_to(ROOT.parent)} --minutes {minutes:g}` then "
        "`seglab predict RUN val2017/`)",
        f"- machine: {machine()}",
        f"- plan: {plan.instances['method']} ({plan.planning.get('instances')}); "
        f"{last['step']} steps of {plan.batch_size} crops of {plan.patch_size} in "
        f"{last['elapsed_s'] / 60:.1f} min; {len(plan.classes) - 1} classes",
        "- split: the 50 train2017 images train (15% of them validate), the 50 val2017 images "
        "are the test images",
        "",
        "| scope | AP (seglab) | AP (pycocotools) | AP50 (seglab) | AP50 (pycocotools) | "
        "AP75 (seglab) | AP75 (pycocotools) |",
        "|---|---|---|---|---|---|---|",
    ]
    for scope, (ours, theirs) in figures.items():
        name = "all classes" if scope == "all" else "person"
        lines.append(f"| {name} | " + " | ".join(
            f"{ours[k]:.4f} | {theirs[k]:.4f}" for k in ("ap", "ap50", "ap75")) + " |")
    lines += ["", "The same predictions (RLE masks and scores from `seglab predict`'s "
              "objects.json) against the same annotations; seglab's and pycocotools' AP agree "
              "where the table shows the same figure. Reference point, not comparable (full "
              "val2017, COCO-trained): torchvision's maskrcnn_resnet50_fpn, mask AP 0.346.", ""]
    return "\n".join(lines)


def _both_aps(reference: COCO, detections: list[dict], scope: int | str
              ) -> tuple[dict[str, float], dict[str, float]]:
    """Mask AP, AP50 and AP75 of `detections` by seglab and by COCOeval, over every category
    (scope "all") or one category id."""
    wanted = [d for d in detections if scope == "all" or d["category_id"] == scope]
    theirs = {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}  # COCOeval's figure without a detection
    if wanted:  # COCO.loadRes refuses an empty list
        evaluator = COCOeval(reference, reference.loadRes(wanted), "segm")
        if scope != "all":
            evaluator.params.catIds = [scope]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        theirs = {"ap": evaluator.stats[0], "ap50": evaluator.stats[1],
                  "ap75": evaluator.stats[2]}
    predictions, references = [], []
    for image_id in reference.getImgIds():
        info = reference.imgs[image_id]
        shape = (info["height"], info["width"])
        found = [d for d in wanted if d["image_id"] == image_id]
        annotations = [a for a in reference.loadAnns(reference.getAnnIds(imgIds=[image_id]))
                       if scope == "all" or a["category_id"] == scope]
        predictions.append(Objects(_masks([d["segmentation"] for d in found], shape),
                                   np.array([d["category_id"] for d in found]),
                                   np.array([d["score"] for d in found])))
        references.append(Objects(_masks([reference.annToRLE(a) for a in annotations], shape),
                                  np.array([a["category_id"] for a in annotations]),
                                  crowd=np.array([bool(a["iscrowd"]) for a in annotations])))
    ours = average_precision(predictions, references)
    return {"ap": ours["ap"], "ap50": ours["ap50"], "ap75": ours["ap75"]}, theirs


def _masks(rles: list, shape: tuple[int, int]) -> np.ndarray:
    if not rles:
        return np.zeros((0, *shape), bool)
    return np.stack([coco_mask.decode(r) for r in rles]).astype(bool)


BENCHMARKS = {"dsb2018": dsb2018, "tiny_coco": tiny_coco}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=sorted(BENCHMARKS))
    parser.add_argument("--minutes", type=float, default=30.0, help="training minutes per run")
    parser.add_argument("--resume", action="store_true",
                        help="keep what the last run of this script finished (dsb2018: its "
                             "rows; tiny_coco: its training, continued if cut short)")
    args = parser.parse_args()
    for name in args.datasets:
        text = BENCHMARKS[name](args.minutes, args.resume)
        write_section("instances", name, text)
        print(text, flush=True)


if __name__ == "__main__":
    main()
