"""The `seglab` command: a thin layer over `seglab.api`. User errors print one line and exit 2.

The handlers import the API when called, so that `seglab --help` answers without loading PyTorch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seglab import cli_commands
from seglab.errors import SeglabError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except SeglabError as error:
        print(f"seglab: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the file system refused (permissions, a full disk): one line
        where = f"{error.filename}: " if error.filename else ""
        print(f"seglab: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seglab: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seglab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="check a dataset and summarise it")
    inspect.add_argument("data", help="dataset folder or seglab.yaml")
    inspect.set_defaults(handler=cli_commands.inspect)

    train = commands.add_parser("train", help="plan and train a model (or --resume a run)")
    train.add_argument("data", nargs="?", help="dataset folder or seglab.yaml")
    train.add_argument("--out", required=True, help="run folder to create (or resume)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a plan field, e.g. --set epochs=20 --set model.widths=[8,16]")
    train.add_argument("--plan-overrides", action="append", type=Path, default=[],
                       metavar="FILE", help="JSON file of plan overrides")
    train.add_argument("--minutes", type=float, metavar="M",
                       help="time budget: the planner times candidate configurations on this "
                            "machine and fits patch, batch and network to M minutes of training "
                            "(the same as --set time_budget_minutes=M)")
    train.add_argument("--folds", type=int, metavar="N",
                       help="cross-validate: N folds over the training cases, each in RUN/fold_K; "
                            "the run predicts with their ensemble (= --set split.folds=N)")
    train.add_argument("--fold", type=int, metavar="K",
                       help="train fold K only (creating the cross-validated run if needed)")
    train.add_argument("--no-evaluate", action="store_true", help="skip the test-split evaluation")
    train.add_argument("--log", choices=["tensorboard", "mlflow"],
                       help="also log every epoch (losses, validation Dice, learning rate, an "
                            "overlay) to RUN/tensorboard or RUN/mlruns (local files, no server)")
    _device_options(train)
    train.set_defaults(handler=cli_commands.train)

    predict = commands.add_parser(
        "predict", help="predict masks with a trained run, or with a classical --method")
    predict.add_argument("run", help="run folder (with --backend onnx: or an exported .onnx "
                                     "file); with --method, the first input")
    predict.add_argument("inputs", nargs="*", help="image files, volumes, folders")
    predict.add_argument("--method", help="segment with a classical method instead of a run: "
                                          "otsu, multiotsu, li, triangle, adaptive, kmeans, "
                                          "region_growing, watershed, random_walker, slic, "
                                          "vesselness")
    predict.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                         help="a --method parameter, e.g. --set channel=1 --set block_size=31 "
                              "(an unknown one lists the method's parameters)")
    predict.add_argument("--fit", metavar="DATA",
                         help="with --method: a labelled dataset (folder or seglab.yaml); a few "
                              "of its training cases choose the polarity, the level -> class "
                              "map, the channel and the parameters not --set, by Dice, and its "
                              "classes, label values and field of view apply to the masks")
    predict.add_argument("--out", required=True, type=Path)
    predict.add_argument("--probabilities", action="store_true", help="also write probabilities")
    predict.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                         help="onnx: run the exported model (seglab export) with ONNX Runtime")
    predict.add_argument("--tta", default="plan", choices=["plan", "on", "off"],
                         help="test-time mirroring along each axis: 1 + dims passes (3x the time "
                              "in 2D, 4x in 3D), or the square's 8 symmetries where the plan "
                              "turns windows (microscopy, EM); plan: as planned, as validation "
                              "and evaluation scored it")
    predict.add_argument("--roi", type=Path, metavar="DIR",
                         help="region-of-interest masks named as the inputs (for a run trained "
                              "inside ROI files; a dataset's own cases find theirs)")
    predict.add_argument("--measure", action="store_true",
                         help="also measure each mask: per class area (mm²) or volume (mL) and "
                              "components, per component size, largest diameter, centroid, box "
                              "(OUT/measurements.csv and .json)")
    predict.add_argument("--uncertainty", action="store_true",
                         help="also write per-pixel predictive entropy and, over the mirrored "
                              "passes and folds, mutual information (<name>_maps.npz, or one "
                              "NIfTI per map for NIfTI volumes)")
    predict.add_argument("--cluster", metavar="ADDRESS",
                         help="share the inputs among the workers of a Dask scheduler, e.g. "
                              "tcp://10.0.0.5:8786 (`dask scheduler`, then `dask worker ADDRESS` "
                              "on each machine); outputs already in --out are skipped")
    _device_options(predict)
    predict.set_defaults(handler=cli_commands.predict)

    explain = commands.add_parser(
        "explain", help="class activation maps (Grad-CAM) of a run for some images")
    explain.add_argument("run")
    explain.add_argument("inputs", nargs="+", help="image files, volumes, folders")
    explain.add_argument("--out", required=True, type=Path)
    explain.add_argument("--class", dest="class_name", metavar="NAME",
                         help="the class to explain (default: every foreground class)")
    explain.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++",
                                                                 "hirescam"])
    explain.set_defaults(handler=cli_commands.explain)

    service = commands.add_parser(
        "serve", help="a web service and page that segment uploaded images with a run")
    service.add_argument("run")
    service.add_argument("--host", default="127.0.0.1",
                         help="address to listen on (default loopback only)")
    service.add_argument("--port", type=int, default=8000)
    service.add_argument("--max-upload-mb", type=float, default=64)
    service.add_argument("--token", help="require Authorization: Bearer TOKEN on the API")
    service.add_argument("--queue", type=int, default=16,
                         help="requests that may wait while one runs (then 503)")
    service.set_defaults(handler=cli_commands.serve)

    measure = commands.add_parser(
        "measure", help="measure masks in physical units: classes and connected components")
    measure.add_argument("masks", nargs="+", help="mask files or folders (PNG, TIFF, NIfTI, ...)")
    measure.add_argument("--out", required=True, type=Path)
    measure.add_argument("--spacing", help="voxel spacing in the array's axis order, e.g. "
                                           "2,0.8,0.8 (default: the files' own)")
    measure.add_argument("--classes", help="the label values to measure and their names, e.g. "
                                           "1=liver,2=tumour (default: every non-zero value)")
    measure.set_defaults(handler=cli_commands.measure)

    export = commands.add_parser(
        "export", help="export a run's best model to ONNX, checked against PyTorch")
    export.add_argument("run")
    export.add_argument("--format", default="onnx", choices=["onnx"])
    export.add_argument("--out", type=Path, help="file to write (default: RUN/export/model.onnx)")
    export.add_argument("--quantize", metavar="int8",
                        help="int8: also write a statically quantised copy (model.int8.onnx) and "
                             "report the Dice and speed it costs on the validation cases")
    export.set_defaults(handler=cli_commands.export)

    evaluate = commands.add_parser("evaluate", help="score predictions (or a run's test split)")
    evaluate.add_argument("pred", help="folder of predicted masks, or a run folder")
    evaluate.add_argument("reference", nargs="?", help="dataset or folder of reference masks")
    evaluate.add_argument("--out", type=Path, help="where the tables go (default: PRED/evaluation)")
    evaluate.add_argument("--classes", help="comma-separated class names, background first")
    evaluate.add_argument("--label-values", help="raw:class pairs, e.g. 0:0,255:1")
    evaluate.add_argument("--allow-missing", action="store_true",
                          help="score the predictions there are when reference files have none")
    evaluate.set_defaults(handler=cli_commands.evaluate)

    report = commands.add_parser(
        "report", help="write a run's self-contained HTML report (data, curves, metrics, cases)")
    report.add_argument("run", help="run folder")
    report.add_argument("--out", type=Path, help="file to write (default: RUN/report.html)")
    report.set_defaults(handler=cli_commands.report)

    compare = commands.add_parser(
        "compare", help="train several models on the same split and budget, tabulate them")
    compare.add_argument("data", help="dataset folder or seglab.yaml")
    compare.add_argument("--models", required=True, help="comma-separated, e.g. unet,fcn,segnet")
    compare.add_argument("--out", required=True, type=Path, help="folder for the runs and tables")
    compare.add_argument("--minutes", type=float, help="wall-clock training minutes per model")
    compare.add_argument("--epochs", type=int, help="training epochs per model")
    compare.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a plan field for every model, e.g. --set batch_size=4")
    compare.add_argument("--plan-overrides", action="append", type=Path, default=[],
                         metavar="FILE", help="JSON file of plan overrides for every model")
    compare.add_argument("--resume", action="store_true",
                         help="keep the finished runs in --out, train the others")
    compare.add_argument("--postprocessing", action="store_true",
                         help="also a row per model with the post-processing chosen on the "
                              "validation cases (largest component, small objects, holes, "
                              "touching objects)")
    _device_options(compare)
    compare.set_defaults(handler=cli_commands.compare)

    listing = commands.add_parser("models", help="list the registered models and their cost")
    listing.add_argument("--size2d", default="256x256", help="2D input size for GFLOPs")
    listing.add_argument("--size3d", default="64x64x64", help="3D input size for GFLOPs")
    listing.set_defaults(handler=cli_commands.models)

    demo = commands.add_parser("demo", help="generate the built-in data, train, predict, score")
    demo.add_argument("--out", type=Path, default=Path("seglab-demo"))
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--task", choices=("semantic", "instance", "video"), default="semantic",
                      help="instance: objects with a class each, found by the rim + watershed "
                           "run; video: noisy frames, seen with their neighbours")
    demo.set_defaults(handler=cli_commands.demo)
    return parser


def _device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--compile", default="auto",
                        help="torch.compile: auto (on for CUDA), on or off; a failure falls back "
                             "to eager with a warning")
