"""Classical methods beside a U-Net (with and without post-processing) on real data, one
`seglab compare` per dataset, written into BENCHMARKS.md:

    uv run python benchmarks/classical.py chasedb1 isbi2012 --minutes 10

Every method is scored on the same test split by the same metrics; the classical ones are fitted
(polarity, channel, parameters, by Dice) on 5 of the training images, the U-Net trains for the
given minutes. `--postprocessing` rows: the steps chosen on the validation images only.
"""

from __future__ import annotations

import argparse
import json
import shutil

from common import ROOT, machine, write_section
from model_zoo import TRAINING
from real_data import BENCHMARKS as REAL_DATA
from real_data import COMMON

from seglab import api

WORKDIR = ROOT / "runs" / "benchmarks"
METHODS = ["otsu", "adaptive", "kmeans", "watershed", "vesselness", "unet"]
DATASETS = {
    "chasedb1": {
        "data": ROOT / "examples" / "chasedb1.yaml",
        "title": "CHASE_DB1 retinal vessels (20 train / 8 test, 1stHO, inside the FOV)",
        # the U-Net of the real-data benchmark above, for fewer minutes
        "overrides": {**COMMON, **REAL_DATA["chasedb1"]["overrides"]},
        "split": "the usual one: 01L-10R train (10% of them validate), 11L-14R test; "
                 "observer 1; every metric and the ROC AUC inside the field of view that seglab "
                 "derives from each image",
        "published": (
            "Published on CHASE_DB1 (Se / Acc / AUC / F1, %): U-Net as re-run 82.88 / 95.78 / "
            "97.72 / 77.83, LadderNet 79.78 / 96.56 / 98.39 / 80.31, IterNet 80.73 / 96.55 / "
            "98.51 / 80.73 (the compilation in J. Healthc. Eng. 2022, \"Multiscale U-Net with "
            "Spatial Positional Attention for Retinal Vessel Segmentation\", Table 5; protocols "
            "vary: splits, field of view, and whether the AUC is pooled or averaged). The AUC "
            "here is pooled over the 8 test images' pixels inside the field of view."),
    },
    "isbi2012": {
        "data": ROOT / "examples" / "isbi2012.yaml",
        "title": "ISBI 2012 EM membranes (22 train / 3 validation / 5 test slices)",
        "overrides": TRAINING,  # the U-Net of the model-zoo comparison above
        "split": "fixed in `examples/isbi2012.yaml`; scores are for the membrane class",
        "published": (
            "Published: U-Net on the challenge's hidden test set, warping error 0.000353, Rand "
            "error 0.0382 (Ronneberger et al. 2015, Table 1); pixel-wise Dice on held-out "
            "training slices is not reported there."),
    },
}


def benchmark(name: str, minutes: float, resume: bool) -> str:
    spec = DATASETS[name]
    out = WORKDIR / f"classical_{name}"
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    api.compare(spec["data"], METHODS, out, minutes=minutes, overrides=spec["overrides"],
                postprocessing=True, progress=False, resume=resume)
    comparison = json.loads((out / "comparison.json").read_text())
    settings = ", ".join(f"{k}={json.dumps(v)}" for k, v in spec["overrides"].items())
    return "\n".join([
        f"### {spec['title']}",
        "",
        f"- command: `uv run python benchmarks/classical.py {name} --minutes {minutes:g}` (= "
        f"`seglab compare {spec['data'].relative_to(ROOT)} --models {','.join(METHODS)} "
        f"--postprocessing --minutes {minutes:g}` with {settings} for the U-Net)",
        f"- machine: {machine()}",
        f"- split: {spec['split']}",
        "",
        (out / "comparison.md").read_text().strip(),
        "",
        _auc_line(comparison),
        "",
        spec["published"],
        "",
    ])


def _auc_line(comparison: dict) -> str:
    scored = [f"{row['model']} {row['roc_auc']:.4f}" for row in comparison["rows"]
              if row.get("roc_auc") is not None]
    return ("ROC AUC of each method's own scores (the U-Net's probability map; a classical "
            "method's intensity, local contrast or vesselness), test pixels pooled: "
            f"{', '.join(scored)}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=list(DATASETS))
    parser.add_argument("--minutes", type=float, default=10.0, help="U-Net training minutes")
    parser.add_argument("--resume", action="store_true",
                        help="keep the finished rows of the last run (delete a method's run "
                             "folder to measure it again)")
    args = parser.parse_args()
    for name in args.datasets:
        section = benchmark(name, args.minutes, args.resume)
        write_section("classical", name, section)
        print(section, flush=True)


if __name__ == "__main__":
    main()
