"""`seglab predict --cluster ADDRESS`: a folder of inputs predicted across the workers of a Dask
distributed cluster (`dask scheduler` and `dask worker ADDRESS` on each machine, or any Dask
deployment that gives a scheduler address).

Dask rather than Ray: it is pure Python and small to install from the registry, a worker is a
plain Python process that imports seglab like any other, a two-worker cluster on loopback starts
in seconds (the tests start one), and the scheduler hands a dead worker's tasks to the others.

The inputs (each with its neighbouring frames, for a run with temporal context) are cut into
shards of `shard_size`. A worker loads the run's model once per process and predicts a shard
with the single-process writer, each file written under a temporary name and renamed into place,
the mask last. It skips the inputs whose mask is already there: a shard that a dying worker left
half done is finished by another worker without writing an output twice, and running the same
command again resumes an interrupted one. When every shard is done, the temporary files of
writes that a killed worker left unfinished are removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seglab.data.io import output_folder
from seglab.data.write import mask_path
from seglab.data.sequences import input_frames, read_frames
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.infer import load_model, postprocessing_steps, write_predictions
from seglab.infer_inputs import (attach_rois, check_inputs, expand_inputs, roi_dataset,
                                 with_tta)
from seglab.run import Run

SHARD_SIZE = 8
_LOADED: dict[tuple, tuple] = {}  # per worker process: the model, plan and steps of a run


def predict_on_cluster(run: Run, inputs: list[str | Path], out: Path, address: str,
                       options: dict[str, Any], shard_size: int = SHARD_SIZE) -> list[Path]:
    """Every input's outputs in `out`, predicted by the workers of the cluster at `address`;
    `options`: device, precision, compile, tta, roi, probabilities and uncertainty, as for one
    process."""
    from distributed import Client  # dask only when asked for

    plan = with_tta(run.plan(), options["tta"])
    if plan.task == "instance":
        raise SeglabError("--cluster: an instance run predicts in one process (its objects are "
                          "chosen per image by the run's own thresholds); leave --cluster out")
    output_folder(out)
    stacks = [[str(p) for p in files] for files in input_frames(
        expand_inputs(inputs), plan.temporal["context"], plan.temporal["pattern"])]
    shards = [stacks[k:k + shard_size] for k in range(0, len(stacks), shard_size)]
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as error:
        raise SeglabError(f"--cluster {address}: no Dask scheduler answers there ({error})")
    with client:
        futures = client.map(predict_shard, [str(run.path)] * len(shards), shards,
                             [str(out)] * len(shards), [options] * len(shards), pure=False)
        written = client.gather(futures)
    _remove_debris(out)
    return [Path(p) for shard in written for p in shard]


def _remove_debris(out: Path) -> None:
    """The temporary files of writes that a killed worker never finished (`atomic_path` names
    them .tmp-<hex>-<name>); every write has ended when all shards have."""
    for path in out.glob(".tmp-*"):
        path.unlink(missing_ok=True)


def predict_shard(run_path: str, stacks: list[list[str]], out: str,
                  options: dict[str, Any]) -> list[str]:
    """On a worker: the shard's inputs (each a list of files, its own first) predicted into
    `out`, those whose mask exists skipped; the files written."""
    model, plan, steps, precision, dataset = _loaded(run_path, options)
    written: list[Path] = []
    read: dict[Path, Any] = {}  # a frame is read once, however many neighbours stack it
    for files in stacks:
        case = read_frames([Path(f) for f in files], read, keep_integers=True)
        if mask_path(case, Path(out)).exists():
            continue
        check_inputs([case], plan)
        attach_rois([case], plan, Path(options["roi"]) if options.get("roi") else None, dataset)
        written += write_predictions(model, plan, [case], Path(out), options["probabilities"],
                                     precision, steps, uncertainty=options["uncertainty"])
    return [str(p) for p in written]


def _loaded(run_path: str, options: dict[str, Any]) -> tuple:
    key = (run_path, options["device"], options["precision"], options["compile"], options["tta"])
    if key not in _LOADED:
        run = Run.open(run_path)
        precision = Precision.choose(options["device"], options["precision"], options["compile"])
        plan = with_tta(run.plan(), options["tta"])
        dataset = roi_dataset(run, plan, options.get("roi"))
        _LOADED[key] = (load_model(run, precision), plan, postprocessing_steps(run), precision,
                        dataset)
    return _LOADED[key]
