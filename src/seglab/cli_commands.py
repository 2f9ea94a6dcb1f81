"""What each `seglab` command does with its parsed arguments: calls `seglab.api` and prints.

Each handler imports the API when called, so that `seglab --help` answers without loading
PyTorch. Errors are raised as SeglabError and printed as one line by `seglab.cli.main`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from seglab.errors import SeglabError

DEMO_MARKER = ".seglab-demo"


def inspect(args) -> None:
    from seglab.api import inspect
    from seglab.data.inspect import format_fingerprint

    print(format_fingerprint(inspect(args.data)))


def train(args) -> None:
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


def predict(args) -> None:
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
                      measure=args.measure, uncertainty=args.uncertainty, cluster=args.cluster)
    print(f"wrote {len(written)} file(s) to {args.out}")


def serve(args) -> None:
    from seglab.api import serve

    serve(args.run, args.host, args.port, args.max_upload_mb, args.token, args.queue)


def explain(args) -> None:
    from seglab.api import explain

    written = explain(args.run, args.inputs, args.out, args.class_name, args.method)
    print(f"wrote {len(written)} map file(s) to {args.out}")


def measure(args) -> None:
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


def export(args) -> None:
    from seglab.api import export

    exported = export(args.run, args.out, args.format, args.quantize)
    print(f"wrote {exported.path} (ONNX Runtime against PyTorch on a random patch: max abs "
          f"diff {exported.max_abs_diff:.1e})")
    if report := exported.quantization:
        print(f"wrote {exported.int8_path}: on {report.cases} {report.split} case(s), mean Dice "
              f"{report.dice_fp32:.4f} fp32, {report.dice_int8:.4f} int8 (int8 against fp32 "
              f"masks {report.dice_int8_vs_fp32:.4f}); {report.images_per_second_fp32:.1f} "
              f"images/s fp32, {report.images_per_second_int8:.1f} int8 (CPU)")


def evaluate(args) -> None:
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


def report(args) -> None:
    from seglab.api import report

    print(f"wrote {report(args.run, args.out)}")


def compare(args) -> None:
    from seglab.api import compare
    from seglab.plan import parse_overrides
    from seglab.report.compare_page import format_text

    overrides = parse_overrides(args.set, args.plan_overrides)
    out = compare(args.data, args.models, args.out, args.minutes, args.epochs, overrides,
                  args.device, args.precision, resume=args.resume, compile=args.compile,
                  postprocessing=args.postprocessing)
    print(format_text(json.loads((out / "comparison.json").read_text())))
    print(f"\n{out}: comparison.csv, comparison.md, comparison.html, comparison.json, runs/")


def models(args) -> None:
    from seglab.models.summary import models_table

    try:
        size2d = tuple(int(n) for n in args.size2d.split("x"))
        size3d = tuple(int(n) for n in args.size3d.split("x"))
    except ValueError:
        raise SeglabError("--size2d/--size3d: expected sizes like 256x256 and 64x64x64")
    if len(size2d) != 2 or len(size3d) != 3:
        raise SeglabError("--size2d needs two numbers and --size3d three, e.g. 256x256, 64x64x64")
    print(models_table(size2d, size3d))


def demo(args) -> None:
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
