"""The `seglab` command: a thin layer over `seglab.api`. User errors print one line and exit 2.

The handlers import the API when called, so that `seglab --help` answers without loading PyTorch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from seglab.errors import SeglabError

DEMO_MARKER = ".seglab-demo"


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
    inspect.set_defaults(handler=_inspect)

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
    train.set_defaults(handler=_train)

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
                              "in 2D, 4x in 3D); plan: as planned (on when planned on a GPU), "
                              "as validation and evaluation scored it")
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
    _device_options(predict)
    predict.set_defaults(handler=_predict)

    explain = commands.add_parser(
        "explain", help="class activation maps (Grad-CAM) of a run for some images")
    explain.add_argument("run")
    explain.add_argument("inputs", nargs="+", help="image files, volumes, folders")
    explain.add_argument("--out", required=True, type=Path)
    explain.add_argument("--class", dest="class_name", metavar="NAME",
                         help="the class to explain (default: every foreground class)")
    explain.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++",
                                                                 "hirescam"])
    explain.set_defaults(handler=_explain)

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
    service.set_defaults(handler=_serve)

    measure = commands.add_parser(
        "measure", help="measure masks in physical units: classes and connected components")
    measure.add_argument("masks", nargs="+", help="mask files or folders (PNG, TIFF, NIfTI, ...)")
    measure.add_argument("--out", required=True, type=Path)
    measure.add_argument("--spacing", help="voxel spacing in the array's axis order, e.g. "
                                           "2,0.8,0.8 (default: the files' own)")
    measure.add_argument("--classes", help="the label values to measure and their names, e.g. "
                                           "1=liver,2=tumour (default: every non-zero value)")
    measure.set_defaults(handler=_measure)

    export = commands.add_parser(
        "export", help="export a run's best model to ONNX, checked against PyTorch")
    export.add_argument("run")
    export.add_argument("--format", default="onnx", choices=["onnx"])
    export.add_argument("--out", type=Path, help="file to write (default: RUN/export/model.onnx)")
    export.add_argument("--quantize", metavar="int8",
                        help="int8: also write a statically quantised copy (model.int8.onnx) and "
                             "report the Dice and speed it costs on the validation cases")
    export.set_defaults(handler=_export)

    evaluate = commands.add_parser("evaluate", help="score predictions (or a run's test split)")
    evaluate.add_argument("pred", help="folder of predicted masks, or a run folder")
    evaluate.add_argument("reference", nargs="?", help="dataset or folder of reference masks")
    evaluate.add_argument("--out", type=Path, help="where the tables go (default: PRED/evaluation)")
    evaluate.add_argument("--classes", help="comma-separated class names, background first")
    evaluate.add_argument("--label-values", help="raw:class pairs, e.g. 0:0,255:1")
    evaluate.add_argument("--allow-missing", action="store_true",
                          help="score the predictions there are when reference files have none")
    evaluate.set_defaults(handler=_evaluate)

    report = commands.add_parser(
        "report", help="write a run's self-contained HTML report (data, curves, metrics, cases)")
    report.add_argument("run", help="run folder")
    report.add_argument("--out", type=Path, help="file to write (default: RUN/report.html)")
    report.set_defaults(handler=_report)

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
    compare.set_defaults(handler=_compare)

    listing = commands.add_parser("models", help="list the registered models and their cost")
    listing.add_argument("--size2d", default="256x256", help="2D input size for GFLOPs")
    listing.add_argument("--size3d", default="64x64x64", help="3D input size for GFLOPs")
    listing.set_defaults(handler=_models)

    demo = commands.add_parser("demo", help="generate the built-in data, train, predict, score")
    demo.add_argument("--out", type=Path, default=Path("seglab-demo"))
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--task", choices=("semantic", "instance"), default="semantic",
                      help="instance: objects with a class each, found by the rim + watershed run")
    demo.set_defaults(handler=_demo)
    return parser


def _device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--compile", default="auto",
                        help="torch.compile: auto (on for CUDA), on or off; a failure falls back "
                             "to eager with a warning")


def _inspect(args) -> None:
    from seglab.api import inspect
    from seglab.data.inspect import format_fingerprint

    print(format_fingerprint(inspect(args.data)))


def _train(args) -> None:
    from seglab.api import train
    from seglab.plan import parse_overrides

    if not args.resume and not args.data:
        raise SeglabError("train: give a dataset (seglab train DATA --out RUN) or --resume")
    overrides = parse_overrides(args.set, args.plan_overrides)
    run = train(args.data, args.out, overrides, args.resume, args.device, args.precision,
                evaluate=not args.no_evaluate, compile=args.compile, minutes=args.minutes,
                folds=args.folds, fold=args.fold, log=args.log)
    _print_evaluation(run.path / "evaluation")
    _print_folds(run.path)
    print(f"run folder: {run.path}")


def _predict(args) -> None:
    from seglab.api import predict

    if args.method:
        from seglab.classical.runs import RECORD, parse_params

        written = predict(None, [args.run, *args.inputs], args.out, args.probabilities,
                          method=args.method, params=parse_params(args.set), fit=args.fit)
        record = json.loads((args.out / RECORD).read_text())
        if args.fit:
            print(f"fitted on {record['fit_cases']} training case(s) of {args.fit}: mean Dice "
                  f"{record['fit_dice']:.4f}")
        print(f"wrote {len(written)} mask(s) to {args.out}; parameters in {args.out / RECORD}: "
              f"{json.dumps(record['params'])}")
        return
    if args.set or args.fit:
        raise SeglabError("--set/--fit: only with a classical --method (a run has its plan)")
    if not args.inputs:
        raise SeglabError("predict: give the images after the run: seglab predict RUN IMAGES "
                          "--out DIR")
    written = predict(args.run, args.inputs, args.out, args.probabilities, args.device,
                      args.precision, args.backend, args.compile, args.tta, roi=args.roi,
                      measure=args.measure, uncertainty=args.uncertainty)
    print(f"wrote {len(written)} file(s) to {args.out}")


def _serve(args) -> None:
    from seglab.api import serve

    serve(args.run, args.host, args.port, args.max_upload_mb, args.token, args.queue)


def _explain(args) -> None:
    from seglab.api import explain

    written = explain(args.run, args.inputs, args.out, args.class_name, args.method)
    print(f"wrote {len(written)} map file(s) to {args.out}")


def _measure(args) -> None:
    from seglab.api import measure

    spacing = _numbers(args.spacing, "--spacing") if args.spacing else None
    classes = dict(_class_name(item) for item in args.classes.split(",")) if args.classes else None
    written = measure(args.masks, args.out, spacing, classes)
    print(f"measured {len(args.masks)} input(s): {', '.join(str(p) for p in written)}")


def _numbers(text: str, option: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise SeglabError(f"{option} {text}: expected numbers separated by commas, e.g. 0.8,0.8,2")
    if not all(v > 0 for v in values):
        raise SeglabError(f"{option} {text}: every value must be positive")
    return values


def _class_name(item: str) -> tuple[int, str]:
    value, _, name = item.partition("=")
    if not value.strip().isdigit() or not name.strip():
        raise SeglabError(f"--classes {item!r}: expected VALUE=NAME, e.g. 1=liver,2=tumour")
    return int(value), name.strip()


def _export(args) -> None:
    from seglab.api import export

    exported = export(args.run, args.out, args.format, args.quantize)
    print(f"wrote {exported.path} (ONNX Runtime against PyTorch on a random patch: max abs "
          f"diff {exported.max_abs_diff:.1e})")
    if report := exported.quantization:
        print(f"wrote {exported.int8_path}: on {report.cases} {report.split} case(s), mean Dice "
              f"{report.dice_fp32:.4f} fp32, {report.dice_int8:.4f} int8 (int8 against fp32 "
              f"masks {report.dice_int8_vs_fp32:.4f}); {report.images_per_second_fp32:.1f} "
              f"images/s fp32, {report.images_per_second_int8:.1f} int8 (CPU)")


def _evaluate(args) -> None:
    from seglab.api import evaluate

    if args.reference is None:
        evaluate(args.pred)
        _print_evaluation(Path(args.pred) / "evaluation")
        _print_folds(Path(args.pred))
        return
    out = args.out or Path(args.pred) / "evaluation"
    classes = args.classes.split(",") if args.classes else None
    values = None
    if args.label_values:
        try:
            values = {int(a): int(b) for a, b in (p.split(":") for p in args.label_values.split(","))}
        except ValueError:
            raise SeglabError(f"--label-values {args.label_values!r}: expected pairs like 0:0,255:1")
    evaluate(args.pred, args.reference, out, classes, values, args.allow_missing)
    _print_evaluation(out)


def _report(args) -> None:
    from seglab.api import report

    print(f"wrote {report(args.run, args.out)}")


def _compare(args) -> None:
    from seglab.api import compare
    from seglab.plan import parse_overrides
    from seglab.report.compare_page import format_text

    overrides = parse_overrides(args.set, args.plan_overrides)
    out = compare(args.data, args.models, args.out, args.minutes, args.epochs, overrides,
                  args.device, args.precision, resume=args.resume, compile=args.compile,
                  postprocessing=args.postprocessing)
    print(format_text(json.loads((out / "comparison.json").read_text())))
    print(f"\n{out}: comparison.csv, comparison.md, comparison.html, comparison.json, runs/")


def _models(args) -> None:
    from seglab.models.summary import models_table

    try:
        size2d = tuple(int(n) for n in args.size2d.split("x"))
        size3d = tuple(int(n) for n in args.size3d.split("x"))
    except ValueError:
        raise SeglabError("--size2d/--size3d: expected sizes like 256x256 and 64x64x64")
    if len(size2d) != 2 or len(size3d) != 3:
        raise SeglabError("--size2d needs two numbers and --size3d three, e.g. 256x256, 64x64x64")
    print(models_table(size2d, size3d))


def _demo(args) -> None:
    from seglab.api import demo

    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not (out / DEMO_MARKER).exists():
            raise SeglabError(f"{out}: folder exists and is not a seglab demo; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).touch()
    started = time.monotonic()
    run, summary = demo(out, seed=args.seed, task=args.task)
    _print_evaluation(run.path / "evaluation")
    print(f"\nmean test Dice {summary['mean']['dice']['mean']:.4f} over {summary['n_cases']} test "
          f"images, {time.monotonic() - started:.0f} s in all")
    if "objects" in summary:
        objects = summary["objects"]
        print(f"objects: F1 at IoU 0.5 {objects['pooled_f1']:.4f} ({objects['tp']} of "
              f"{objects['n_ref']} found, {objects['fp']} false), the right class for "
              f"{objects['pooled_class_accuracy']:.1%} of those found")
    print(f"data: {out / 'data'}\nrun:  {run.path}  (plan.json, log.jsonl, checkpoints/, "
          "predictions/test/, evaluation/)")


def _print_folds(run: Path) -> None:
    """Each fold's mean test Dice beside the ensemble's, for a cross-validated run."""
    scored = sorted(run.glob("fold_*/evaluation/metrics.json"),
                    key=lambda path: int(path.parent.parent.name.removeprefix("fold_")))
    if not scored or not (run / "evaluation" / "metrics.json").is_file():
        return
    for path in [*scored, run / "evaluation" / "metrics.json"]:
        name = path.parent.parent.name if path.parent.parent != run else "ensemble"
        dice = json.loads(path.read_text())["summary"]["mean"]["dice"]["mean"]
        print(f"{name:>8}  mean test Dice {dice:.4f}")


def _print_evaluation(folder: Path) -> None:
    from seglab.metrics import format_summary_table

    path = folder / "metrics.json"
    if path.exists():
        print(format_summary_table(json.loads(path.read_text())["summary"]))
