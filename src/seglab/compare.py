"""`seglab compare`: several models trained on the same split with the same budget, each in its own
process, and tabulated side by side (accuracy on the test split, time, memory, size, speed).

    DIR/runs/<model>/       a normal run folder per model, plus measurements.json from its process
                            (with --postprocessing: postprocessing.json, the steps chosen on the
                            validation cases, and evaluation-postprocessed/, the test scores
                            with them, which make the row "<model> + post-processing")
    DIR/comparison.json     the settings, the shared split, one row per model
    DIR/comparison.csv      one row per model
    DIR/comparison.md       the table as Markdown
    DIR/comparison.html     the table and bar charts in one self-contained page

A model's process may raise, run out of memory or be killed: its row then states why, and the other
models carry on. The tables are rewritten after every model, so they show the progress so far.

On instance data, the instance methods (`seglab.plan_instances`: rim_watershed, mask_rcnn) are
named as models are; their rows add the DSB score and object F1 at IoU 0.5.

Classical methods (`seglab.classical`) may be named beside the models: each is fitted on a few of
the same training cases in its own process (the fitting time is its training time), scored on the
same test split, timed the same way; its row's `params` holds the parameters it was fitted to.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import resource
import shutil
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from seglab import __version__, classical, models
from seglab.data.inspect import Fingerprint, inspect_dataset
from seglab.data.io import write_text_atomic
from seglab.data.layouts import Dataset, find_dataset
from seglab.data.loading import load_case
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.evaluate import EVALUATION, Steps, evaluate_run
from seglab.infer import choose_postprocessing, load_model, predict_case
from seglab.infer_objects import choose_instance_split, instance_split_settings, predict_objects
from seglab.plan import Plan, make_plan
from seglab.plan_instances import METHODS as INSTANCE_METHODS
from seglab.report.compare_page import format_csv, format_markdown, render_html
from seglab.report.run_page import write_report
from seglab.run import Run
from seglab.run_setup import open_dataset, plan_for, planned_split, write_new_run
from seglab.train.loop import train as train_run

MEASUREMENTS = "measurements.json"
POSTPROCESSED = "evaluation-postprocessed"  # RUN/<this>: the test scores with post-processing
# With --minutes alone the clock ends training, not the plan's default epoch count.
EPOCHS_UNDER_TIME_BUDGET = 100_000
METRICS = ("dice", "iou", "precision", "recall", "f1")


def compare_models(data: str | Path, names: list[str], out: str | Path,
                   minutes: float | None = None, epochs: int | None = None,
                   overrides: dict[str, Any] | None = None, device: str = "auto",
                   precision: str = "auto", progress: bool = True, resume: bool = False,
                   compile: str = "auto", postprocessing: bool = False) -> Path:
    """Trains and evaluates each model in `names` into OUT/runs/<name>; returns OUT. With
    `postprocessing`, each also gets a row "<name> + post-processing" (see `_rows`)."""
    out = Path(out)
    names = _check_names(names)
    overrides = {**(overrides or {}), **_budget(minutes, epochs, overrides or {})}
    settings = json.loads(json.dumps({
        "data": str(Path(data).resolve()), "minutes": minutes, "epochs": epochs,
        "overrides": overrides, "device": device, "precision": precision, "compile": compile,
        "postprocessing": postprocessing}))
    previous = _previous(out, settings, resume)
    dataset = find_dataset(data)
    fingerprint = inspect_dataset(dataset)
    split = previous["split"] if previous else _shared_split(dataset, fingerprint, overrides)
    if not split["test"]:
        raise SeglabError("compare: the split has no test cases to compare the models on")
    comparison = {"seglab": __version__, "created": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "settings": settings, "split": split, "rows": []}
    rows = {name: [{"model": name, "status": "pending"}] for name in names}
    (out / "runs").mkdir(parents=True, exist_ok=True)
    _write(out, comparison, rows)
    for index, name in enumerate(names):
        if progress:
            print(f"[{index + 1}/{len(names)}] {name}", flush=True)
        rows[name] = _compare_one(name, out / "runs" / name, fingerprint, split, settings,
                                  progress)
        _write(out, comparison, rows)
        if progress:
            for row in rows[name]:
                result = (f"test Dice {row['dice_mean']:.4f}" if row.get("dice_mean") is not None
                          else f"{row['status']}: {row.get('reason')}")
                print(f"{row['model']}: {result}", flush=True)
    return out


def _check_names(names: list[str]) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise SeglabError("--models: name at least one model, e.g. --models unet,fcn")
    for name in names:
        if classical.is_method(name) or name in INSTANCE_METHODS:
            continue
        try:
            models.entry(name)
        except SeglabError as error:
            methods = ", ".join(entry.name for entry in classical.available())
            raise SeglabError(f"--models: {error}; classical methods: {methods}")
    return names


def _budget(minutes: float | None, epochs: int | None,
            overrides: dict[str, Any]) -> dict[str, Any]:
    """The plan overrides that give every model the same training budget."""
    budget: dict[str, Any] = {}
    if minutes is not None:
        if minutes <= 0:
            raise SeglabError(f"--minutes {minutes}: expected a positive number of minutes")
        budget["time_budget_minutes"] = float(minutes)
        if epochs is None and "epochs" not in overrides:
            budget["epochs"] = EPOCHS_UNDER_TIME_BUDGET
    if epochs is not None:
        if epochs < 1:
            raise SeglabError(f"--epochs {epochs}: expected at least 1")
        budget["epochs"] = int(epochs)
    return budget


def _previous(out: Path, settings: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """The earlier comparison in OUT when resuming it; refuses to mix it up with anything else."""
    if out.exists() and not out.is_dir():
        raise SeglabError(f"{out}: exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        return None
    path = out / "comparison.json"
    if not resume:
        hint = " (use --resume to keep its finished runs)" if path.exists() else ""
        raise SeglabError(f"{out}: folder exists and is not empty{hint}")
    try:
        previous = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise SeglabError(f"{out}: not a seglab comparison (no readable comparison.json)")
    before = previous.get("settings", {})
    changed = sorted(k for k in settings if before.get(k) != settings[k])
    if changed:
        earlier = ", ".join(f"{k}={json.dumps(before.get(k))}" for k in changed)
        raise SeglabError(f"{out}: --resume needs the settings of the first run, and {changed} "
                          f"differ (they were {earlier})")
    return previous


def _shared_split(dataset: Dataset, fingerprint: Fingerprint,
                  overrides: dict[str, Any]) -> dict[str, list[str]]:
    """The one split every model gets: the dataset's fixed subsets, the rest drawn with the seed.

    The plan is made without the model overrides, so that an override wrong for every model is
    an error here (before any training), while one that suits only some models fails their rows.
    """
    common = {k: v for k, v in overrides.items() if k.split(".")[0] != "model"}
    return planned_split(dataset, make_plan(fingerprint, common))


def _compare_one(name: str, path: Path, fingerprint: Fingerprint, split: dict[str, list[str]],
                 settings: dict[str, Any], progress: bool) -> list[dict[str, Any]]:
    """One model's rows: kept from a finished run, or trained in a process of its own."""
    done = _measurements(path)
    if done.get("status") == "ok" and (path / EVALUATION / "metrics.json").is_file():
        return _rows(name, path, done)
    if path.exists():
        shutil.rmtree(path)  # unfinished or failed earlier: trained afresh, measured afresh
    dims = (INSTANCE_METHODS[name] if name in INSTANCE_METHODS else classical.entry(name).dims
            if classical.is_method(name) else models.entry(name).dims)
    if fingerprint.dims not in dims:
        supported = " and ".join(f"{d}D" for d in dims)
        return [_row(name, None, {"status": "skipped",
                                  "reason": f"{supported} only; the data is {fingerprint.dims}D"})]
    policy = (settings["device"], settings["precision"], settings.get("compile", "auto"))
    try:
        plan = _plan(name, fingerprint, split, settings["overrides"], Precision.choose(*policy))
    except SeglabError as error:
        return [_row(name, None, {"status": "failed", "reason": str(error)})]
    write_new_run(path, settings["data"], fingerprint, plan, split)
    exitcode = _run_in_child(path, policy, settings.get("postprocessing", False), progress)
    measured = _measurements(path)
    if not measured:
        measured = {"status": "failed", "reason": _exit_reason(exitcode)}
    return _rows(name, path, measured)


def _plan(name: str, fingerprint: Fingerprint, split: dict[str, list[str]],
          overrides: dict[str, Any], policy: Precision) -> Plan:
    """A model's plan (with a time budget, fitted to it on this machine as `seglab train` fits
    it); a classical method's is the plan without the model overrides, its `model` naming the
    method and its parameters (the method's own defaults, refined when fitted). An instance
    method (`seglab.plan_instances`) is the plan of that method for the instance data."""
    if name in INSTANCE_METHODS:
        return plan_for(fingerprint, {**overrides, "instances.method": name,
                                      "split.fixed": split}, policy)
    if not classical.is_method(name):
        return plan_for(fingerprint, {**overrides, "model.name": name, "split.fixed": split},
                        policy)
    common = {k: v for k, v in overrides.items() if k.split(".")[0] != "model"}
    plan = make_plan(fingerprint, {**common, "split.fixed": split})
    return dataclasses.replace(plan, model={"name": name, "classical": {}})


def _run_in_child(path: Path, policy: tuple[str, str, str], postprocessing: bool,
                  progress: bool) -> int:
    """Runs `_worker` in a fresh process and returns its exit code (negative: killed by signal).

    A forkserver (spawn where there is none) gives every model a clean process that has never
    touched CUDA; the server imports seglab once, so each model does not pay for it again.
    """
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["seglab.compare"])
    process = context.Process(target=_worker, args=(str(path), policy, postprocessing, progress),
                              name=f"seglab-compare-{path.name}")
    process.start()
    try:
        process.join()
    finally:
        if process.is_alive():
            process.terminate()
            process.join()
    return process.exitcode


def _exit_reason(exitcode: int) -> str:
    if exitcode == -9:
        return "killed by signal 9 (out of memory?)"
    if exitcode < 0:
        return f"killed by signal {-exitcode}"
    return f"the process exited with code {exitcode} without writing its measurements"


def _worker(path: str, policy: tuple[str, str, str], postprocessing: bool,
            progress: bool) -> None:
    """In the model's own process: trains, evaluates, times inference, writes measurements.json."""
    run = Run(Path(path))
    try:
        result = {"status": "ok", **_measure(run, policy, postprocessing, progress)}
    except Exception as error:  # any failure is this model's row, not the comparison's end
        reason = str(error) if isinstance(error, SeglabError) else (
            f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}")
        result = {"status": "failed", "reason": reason[:300],
                  "traceback": traceback.format_exc()}
    run.write_json(MEASUREMENTS, result)


def _measure(run: Run, choices: tuple[str, str, str], postprocessing: bool,
             progress: bool) -> dict[str, Any]:
    """A model trained and measured, or a classical method fitted and measured."""
    if "classical" not in run.plan().model:
        return _train_and_measure(run, choices, postprocessing, progress)
    from seglab.classical.runs import fit_and_measure  # the methods' glue, only where needed

    measured = fit_and_measure(run, POSTPROCESSED if postprocessing else None)
    return {**measured, "peak_ram_mb": _peak_ram_mb()}


def _peak_ram_mb() -> float:
    """This process's peak resident memory (not the parent's)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)


def _train_and_measure(run: Run, choices: tuple[str, str, str], postprocessing: bool,
                       progress: bool) -> dict[str, Any]:
    """`choices`: the user's device, precision and compile settings. The model's row scores the
    network's own masks; with `postprocessing`, the "postprocessed" entry measures the same
    network with the steps chosen on the validation cases (RUN/postprocessing.json, which
    `seglab predict RUN` then applies too), scored into RUN/evaluation-postprocessed from the
    same predictions."""
    policy = Precision.choose(*choices)
    cuda = policy.device.type == "cuda"
    train_run(run, policy, progress)
    if run.plan().task == "instance":  # its thresholds, chosen on the validation cases
        choose_instance_split(run, policy)
    variants: dict[str, Steps] = {EVALUATION: []}
    if postprocessing:
        started = time.perf_counter()
        choice = choose_postprocessing(run, policy)
        choose_s = time.perf_counter() - started
        variants[POSTPROCESSED] = choice["steps"]
    evaluate_run(run, policy, variants)
    write_report(run)
    speeds, params = _inference_speed(run, policy, list(variants.values()))
    last = run.log()[-1]
    measured = {
        "train_s": last["elapsed_s"], "epochs": last["epoch"], "steps": last["step"],
        "peak_ram_mb": _peak_ram_mb(),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "params_m": round(params / 1e6, 6), "images_per_s": round(speeds[0], 3),
    }
    if postprocessing:
        measured["postprocessed"] = {
            "status": "ok", "train_s": round(last["elapsed_s"] + choose_s, 3), "choice": choice,
            "images_per_s": round(speeds[1], 3)}
    return measured


def _inference_speed(run: Run, policy: Precision,
                     variants: list[Steps]) -> tuple[list[float], int]:
    """Test images (volumes) per second through the whole prediction and each variant's
    post-processing steps, read from memory; the evaluation just before served as the warm-up.
    Also the model's parameter count."""
    plan = run.plan()
    dataset = open_dataset(run)
    refs = {ref.case_id: ref for ref in dataset.cases}
    cases = [load_case(dataset, refs[i]) for i in run.read_json("split.json")["test"]]
    model = load_model(run, policy)
    speeds = []
    for steps in variants:
        started = time.perf_counter()
        for case in cases:  # arrays on the CPU: synchronised
            if plan.task == "instance":
                predict_objects(model, case, plan, policy, instance_split_settings(run))
            else:
                predict_case(model, case, plan, policy, steps, probabilities=False)
        speeds.append(len(cases) / (time.perf_counter() - started))
    return speeds, sum(p.numel() for p in model.parameters())


def _measurements(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / MEASUREMENTS).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _rows(name: str, path: Path, measured: dict[str, Any]) -> list[dict[str, Any]]:
    """The model's row, and its row with post-processing where that was measured."""
    rows = [_row(name, path, measured)]
    if measured.get("postprocessed"):
        hybrid = {**measured, **measured["postprocessed"]}
        hybrid["params"] = "; ".join(filter(None, [measured.get("params"),
                                                   _describe_choice(hybrid["choice"])]))
        rows.append(_row(f"{name} + post-processing", path, hybrid, POSTPROCESSED))
    return rows


def _describe_choice(choice: dict[str, Any]) -> str:
    """The post-processing chosen on the validation cases, with the Dice it moved them to."""
    steps = ", ".join(
        f"{step['op']}(class {step['class']}" + "".join(
            f", {key}={value}" for key, value in step.items() if key not in ("op", "class"))
        + ")" for step in choice["steps"])
    if "validation_dice_without" not in choice:
        return f"post-processing: none ({choice.get('reason', 'nothing chosen')})"
    dice = f"validation Dice {choice['validation_dice_without']:.4f}"
    if not steps:
        return f"post-processing: none raised the {dice}"
    return f"post-processing: {steps} ({dice} -> {choice['validation_dice_with']:.4f})"


def _row(name: str, path: Path | None, measured: dict[str, Any],
         folder: str = EVALUATION) -> dict[str, Any]:
    """One table row: the test metrics (mean ± std over cases; mean over foreground classes) read
    from RUN/<folder>, the ROC AUC of the model's own scores (not on post-processed rows: the
    steps change masks, not probabilities), the process's measurements, and where the run is."""
    row: dict[str, Any] = {"model": name, "status": measured["status"],
                           "reason": measured.get("reason"),
                           "run": f"runs/{path.name}" if path is not None else None}
    if measured["status"] != "ok":
        return row
    run = Run(path)
    summary = run.read_json(f"{folder}/metrics.json")["summary"]
    stats = {metric: summary["mean"][metric] for metric in METRICS}
    stats["pixel_accuracy"] = summary["pixel_accuracy"]
    if objects := summary.get("objects"):
        stats.update(dsb_score=objects["dsb_score"], object_f1=objects["f1"])
    for metric, values in stats.items():
        row[f"{metric}_mean"], row[f"{metric}_std"] = values["mean"], values["std"]
    pooled = [c["pooled"] for c in summary.get("roc_auc", {}).values() if c["pooled"] is not None]
    if folder == EVALUATION:
        row["roc_auc"] = sum(pooled) / len(pooled) if pooled else None
    info = run.read_json("run.json")
    row.update({k: v for k, v in measured.items()
                if k not in ("status", "reason", "traceback", "choice", "postprocessed")})
    row.update({"device": info.get("device"), "compute_precision": info.get("precision"),
                "test_cases": summary["n_cases"]})
    return row


def _write(out: Path, comparison: dict[str, Any], rows: dict[str, list[dict[str, Any]]]) -> None:
    comparison["rows"] = [row for model_rows in rows.values() for row in model_rows]
    write_text_atomic(out / "comparison.json", json.dumps(comparison, indent=2) + "\n")
    write_text_atomic(out / "comparison.csv", format_csv(comparison["rows"]))
    write_text_atomic(out / "comparison.md", format_markdown(comparison))
    write_text_atomic(out / "comparison.html", render_html(comparison))
