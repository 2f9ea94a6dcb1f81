"""The Python API; `seglab.cli` is a thin layer over these functions, and a notebook calls them the
same way."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from seglab.data.demo import (generate_demo_dataset, generate_instance_demo_dataset,
                             generate_video_demo_dataset)
from seglab.data.inspect import Fingerprint, inspect_dataset
from seglab.data.layouts import find_dataset
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.evaluate import evaluate_folders, evaluate_run
from seglab.infer import choose_postprocessing, predict_files
from seglab.infer_inputs import expand_inputs
from seglab.measure import measure_files
from seglab.infer_objects import choose_instance_split, predict_object_files
from seglab.report.run_page import write_report
from seglab.run import Run
from seglab.train.distributed import Distributed
from seglab.train.loop import train as train_run
from seglab.train.tracking import KINDS as TRACKERS
from seglab.run_setup import create_run, fold_run

if TYPE_CHECKING:
    from seglab.export import Exported

# The demo's budget: small enough to finish in under 5 minutes on 2 CPU cores, end to end.
DEMO_OVERRIDES = {
    "epochs": 30,
    "iterations_per_epoch": 25,
    "batch_size": 8,
    "time_budget_minutes": 3.0,
    "model": {"name": "unet", "widths": [16, 32, 64, 128], "kernels": [[3, 3]] * 4,
              "strides": [[2, 2]] * 3, "norm": "instance"},
}


def inspect(data: str | Path) -> Fingerprint:
    """Finds the dataset's layout, checks every case, and returns its fingerprint."""
    return inspect_dataset(find_dataset(data))


def train(data: str | Path | None, out: str | Path, overrides: dict[str, Any] | None = None,
          resume: bool = False, device: str = "auto", precision: str = "auto",
          progress: bool = True, evaluate: bool = True, compile: str = "auto",
          minutes: float | None = None, folds: int | None = None,
          fold: int | None = None, log: str | None = None) -> Run:
    """Plans and trains a new run in `out` (or continues it with resume=True), then evaluates its
    test split and writes RUN/report.html. device, precision and compile override the machine's
    policy (`seglab.device`).

    minutes= is the time budget (plan field `time_budget_minutes`): the planner then times
    candidate configurations on this machine and fits the plan to it (`seglab.plan_budget`).
    folds= cross-validates (plan field `split.folds`): each fold trains in RUN/fold_K, the
    out-of-fold predictions choose the post-processing, and the folds' ensemble is the run's
    model; fold= trains that fold only (creating the run first if needed), and the ensemble is
    evaluated once every fold has finished."""
    if log is not None and log not in TRACKERS:
        raise SeglabError(f"--log {log}: expected one of {', '.join(TRACKERS)}")
    overrides = dict(overrides or {})
    if minutes is not None:
        overrides["time_budget_minutes"] = minutes
    if folds is not None:
        overrides["split.folds"] = folds
    dist = Distributed.from_environment()  # before the policy: it picks this rank's GPU
    policy = Precision.choose(device, precision, compile)
    exists = (Path(out) / "plan.json").is_file()
    if not resume and not (fold is not None and exists) and dist.is_main:
        create_run(data, out, overrides, policy)
    dist.barrier()
    run = Run.open(out)
    resumed = overrides if resume else None
    if run.fold_count() == 0:
        if fold is not None:
            raise SeglabError(f"--fold {fold}: {run.path} is not cross-validated (--folds N)")
        train_run(run, policy, progress and dist.is_main, resumed, log)
        if dist.is_main:
            _finish(run, policy, evaluate)
    else:
        for k in [fold] if fold is not None else range(run.fold_count()):
            if dist.is_main:
                fold_run(run, k)
            dist.barrier()
            train_run(run.fold(k), policy, progress and dist.is_main, resumed, log)
            if dist.is_main:
                _finish(run.fold(k), policy, evaluate)
        folds_done = all(run.fold(k).path.is_dir() and run.fold(k).training_finished()
                         for k in range(run.fold_count()))
        if dist.is_main and folds_done:
            _finish(run, policy, evaluate)
    dist.shutdown()
    return run


def _finish(run: Run, policy: Precision, evaluate: bool) -> None:
    """Post-processing (an instance run: the watershed thresholds) chosen on the validation
    cases, the test split scored, the report."""
    if run.plan().task == "instance":
        choose_instance_split(run, policy)
    else:
        choose_postprocessing(run, policy)
    if evaluate and run.read_json("split.json")["test"]:
        evaluate_run(run, policy)
    write_report(run)


def predict(run: str | Path | None, inputs: list[str | Path], out: str | Path,
            probabilities: bool = False, device: str = "auto",
            precision: str = "auto", backend: str = "torch",
            compile: str = "auto", tta: str = "plan", method: str | None = None,
            params: dict[str, Any] | None = None, fit: str | Path | None = None,
            roi: str | Path | None = None, measure: bool = False,
            uncertainty: bool = False, cluster: str | None = None) -> list[Path]:
    """Predicts masks for images/volumes (files or folders) in their own format and geometry;
    measure=True also measures each mask's classes and components in physical units
    (OUT/measurements.csv and .json; an instance run's objects.csv measures its objects);
    uncertainty=True writes each input's predictive entropy and, where there are several
    predictions (mirrored passes, folds), their mutual information (`seglab.uncertainty`).

    backend="onnx" runs an exported model with ONNX Runtime: `run` is then the .onnx file (the run
    folder is not needed) or a run folder with export/model.onnx.

    method= names a classical segmenter (`seglab.classical`) instead of a run (run=None), with its
    `params`; fit= a labelled dataset whose training cases fit its polarity, level -> class map,
    channel and unset parameters by Dice, and whose classes, label values and field of view then
    apply. The masks are written by the same writer, with OUT/method.json (the parameters).

    tta= keeps the plan's test-time mirroring ("plan", as validation and evaluation scored it)
    or turns it "on" or "off". roi= a folder of region-of-interest masks named as the inputs;
    without it, the ROI is found as training found it (`seglab.infer_inputs.attach_rois`). A
    cross-validated run predicts with its folds' ensemble (mean probabilities).

    cluster= the address of a Dask scheduler whose workers share the inputs and `out`
    (`seglab.cluster`): each input written once, a dead worker's share finished by the others,
    outputs already in `out` skipped."""
    if method is None and (params or fit is not None):
        raise SeglabError("--set/--fit: only with a classical --method (a run has its plan)")
    if method is not None:
        if run is not None:
            raise SeglabError(f"--method {method}: segments without a run; {run} was given too")
        if probabilities:
            raise SeglabError(f"--method {method}: gives masks only, no --probabilities")
        from seglab.classical.runs import predict_with_method  # skimage only when asked for

        return predict_with_method(method, params, inputs, Path(out), fit)
    if run is None:
        raise SeglabError("predict: give a run folder (or a classical --method)")
    if backend == "onnx":
        from seglab.export import predict_onnx  # onnxruntime only when asked for

        if precision not in ("auto", "fp32"):
            raise SeglabError(f"--precision {precision}: the ONNX backend runs the exported fp32 "
                              "model")
        return predict_onnx(run, inputs, Path(out), probabilities, device, roi)
    if backend != "torch":
        raise SeglabError(f"--backend {backend}: expected torch or onnx")
    if Path(run).suffix == ".onnx":
        raise SeglabError(f"{run}: an ONNX model; predict with it using --backend onnx")
    if cluster is not None:
        if measure:
            raise SeglabError("--measure: measures all masks in one table, in one process; "
                              "run `seglab measure` on the cluster's masks instead")
        from seglab.cluster import predict_on_cluster  # dask only when asked for

        return predict_on_cluster(Run.open(run), inputs, Path(out), cluster, {
            "device": device, "precision": precision, "compile": compile, "tta": tta,
            "roi": str(roi) if roi else None, "probabilities": probabilities,
            "uncertainty": uncertainty})
    opened, policy = Run.open(run), Precision.choose(device, precision, compile)
    if opened.plan().task == "instance":
        return predict_object_files(opened, inputs, Path(out), policy, tta, roi, probabilities)
    return predict_files(opened, inputs, Path(out), probabilities, policy, tta, roi, measure,
                         uncertainty)


def measure(masks: list[str | Path], out: str | Path, spacing: list[float] | None = None,
            classes: dict[int, str] | None = None) -> list[Path]:
    """`seglab measure`: each mask's classes (area in mm² or volume in mL, components) and each
    connected component (size, largest diameter, centroid in world coordinates, box), into
    OUT/measurements.csv and OUT/measurements.json. spacing= replaces the files' own (array
    axis order); classes= names the label values to measure (default: every non-zero value)."""
    paths = expand_inputs(masks)
    return measure_files(paths, Path(out), tuple(spacing) if spacing else None, classes)


def export(run: str | Path, out: str | Path | None = None, format: str = "onnx",
           quantize: str | None = None) -> Exported:
    """Exports the run's best model (default: RUN/export/model.onnx) with the plan in its metadata,
    after checking ONNX Runtime's output against PyTorch's on a random patch.

    quantize="int8" also writes a statically quantised copy beside it (model.int8.onnx) and
    measures it against the fp32 model on the run's validation cases: `Exported.quantization`
    (also in the int8 file's metadata) has both mean Dice, their agreement and images/s."""
    from seglab.export import check_quantize, export_onnx  # onnx only when exporting

    if format != "onnx":
        raise SeglabError(f"--format {format}: the only export format is onnx")
    check_quantize(quantize)
    return export_onnx(Run.open(run), Path(out) if out else None, quantize)


def evaluate(pred: str | Path, reference: str | Path | None = None, out: str | Path | None = None,
             classes: list[str] | None = None, label_values: dict[int, int] | None = None,
             allow_missing: bool = False) -> dict[str, Any]:
    """Scores prediction files against a reference dataset or folder of label files (tables in
    `out`, default PRED/evaluation; a reference file without its prediction is an error unless
    `allow_missing`); with no reference, `pred` is a run folder whose test split
    is predicted and scored into RUN/evaluation, and its report written again."""
    if reference is None:
        run = Run.open(pred)
        for k in range(run.fold_count()):
            evaluate_run(run.fold(k))
            write_report(run.fold(k))
        summary = evaluate_run(run)
        write_report(run)
        return summary
    out = Path(out) if out else Path(pred) / "evaluation"
    return evaluate_folders(Path(pred), Path(reference), out, classes, label_values,
                            allow_missing)


def compare(data: str | Path, models: list[str] | str, out: str | Path,
            minutes: float | None = None, epochs: int | None = None,
            overrides: dict[str, Any] | None = None, device: str = "auto",
            precision: str = "auto", progress: bool = True, resume: bool = False,
            compile: str = "auto", postprocessing: bool = False) -> Path:
    """Trains each model (a list, or names separated by commas) on the same split with the same
    budget, each in its own process, evaluates them on the same test split, and writes the
    comparison tables and page into `out`; returns `out`. Classical methods (`seglab.classical`)
    may be named among the models: they are fitted on the training cases instead of trained.
    resume=True keeps the finished runs of an earlier comparison in `out` (same settings) and
    trains the others. postprocessing=True adds a row per model with the post-processing chosen
    on the validation cases."""
    from seglab.compare import compare_models  # matplotlib only when comparing

    names = models.split(",") if isinstance(models, str) else list(models)
    return compare_models(data, names, out, minutes, epochs, overrides, device, precision,
                          progress, resume, compile, postprocessing)


def report(run: str | Path, out: str | Path | None = None) -> Path:
    """Writes the run's self-contained HTML report (default RUN/report.html); returns its path."""
    return write_report(Run.open(run), Path(out) if out else None)


def demo(out: str | Path, seed: int = 0, progress: bool = True,
         overrides: dict[str, Any] | None = None,
         task: str = "semantic") -> tuple[Run, dict[str, Any]]:
    """Generates the built-in dataset, plans, trains, predicts and scores its test split; with
    task="instance", its objects as a COCO folder, and an instance run; with task="video",
    noisy videos, and a run that sees each frame with its neighbours."""
    out = Path(out)
    makers = {"semantic": generate_demo_dataset, "instance": generate_instance_demo_dataset,
              "video": generate_video_demo_dataset}
    if task not in makers:
        raise SeglabError(f"--task {task}: expected semantic, instance or video")
    data = makers[task](out / "data", seed=seed)
    run = train(data, out / "run", {**DEMO_OVERRIDES, "seed": seed, **(overrides or {})},
                progress=progress)
    return run, run.read_json("evaluation/metrics.json")["summary"]


def explain(run: str | Path, inputs: list[str | Path], out: str | Path,
            class_name: str | None = None, method: str = "gradcam") -> list[Path]:
    """`seglab explain`: class activation maps (Grad-CAM, Grad-CAM++ or HiResCAM through
    pytorch-grad-cam) of a semantic run's foreground classes (or `class_name`) for each input,
    written as `seglab.data.write.write_maps` writes maps (`seglab.explain`)."""
    from seglab.explain import explain_files  # opencv only when asked for

    return explain_files(Run.open(run), inputs, Path(out), class_name, method)


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = 64, token: str | None = None, queue: int = 16) -> None:
    """`seglab serve`: the run's model behind a web service and page (`seglab.serve`), until
    interrupted; on loopback unless `host` says otherwise."""
    from seglab.serve import serve as run_service  # fastapi and uvicorn only when serving

    run_service(Run.open(run), host, port, max_upload_mb, token, queue)
