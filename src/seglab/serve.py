"""`seglab serve RUN`: a web service (FastAPI behind uvicorn) and a page that segments an upload.

    GET  /          the page (self-contained: no CDN, works offline; `seglab.serve_page`)
    GET  /health    {"status": "ok"}
    GET  /model     classes, dims, channels, task and the plan's summary
    POST /predict   multipart "file" (PNG, JPEG, TIFF, GIF, BMP, NIfTI, a DICOM file or a zipped
                    DICOM series); ?explain=true adds Grad-CAM, ?uncertainty=true the entropy

The model is loaded once. One prediction runs at a time on all the cores (PyTorch's threads are
not multiplied by concurrent requests); up to `queue` more wait, and beyond that a request gets
503. Uploads are limited in size (413), their type is told from their bytes, never from their
name (400 for anything else, or for a truncated or malformed file), they are written under
names of seglab's own in a temporary folder that is removed after the request, and a zip's
member names are never used as paths (a name that looks like one is refused). The service listens on loopback unless told otherwise;
with a token, every call but /health and the page needs `Authorization: Bearer TOKEN`.
"""

from __future__ import annotations

import base64
import gzip
import io
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, File, Header, HTTPException, UploadFile
from fastapi.responses import HTMLResponse

from seglab.case import Case
from seglab.data.dicom_seg import seg_beside
from seglab.data.display import display_rgb
from seglab.data.io import read_image, suffix_of
from seglab.data.write import write_mask
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.infer import (load_model, output_value_map, postprocessing_steps, predict_case,
                          predict_case_uncertainty)
from seglab.infer_inputs import attach_rois, with_tta
from seglab.infer_objects import instance_split_settings, predict_objects
from seglab.measure import index_to_world, measure_mask, object_rows
from seglab.run import Run
from seglab.serve_page import PAGE

MAX_ZIP_MEMBERS = 4096


def sniff(data: bytes) -> str:
    """The file ending that the upload's bytes say it is; SeglabError when they say nothing
    seglab reads."""
    head = data[:1024]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ".tif"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if head.startswith(b"BM"):
        return ".bmp"
    if head.startswith(b"PK\x03\x04"):
        return ".zip"
    if len(head) > 132 and head[128:132] == b"DICM":
        return ".dcm"
    if head.startswith(b"\x1f\x8b"):
        try:
            inner = gzip.GzipFile(fileobj=io.BytesIO(data)).read(4)
        except (OSError, EOFError):
            raise SeglabError("upload: a truncated or malformed gzip file")
        if _nifti_header(inner):
            return ".nii.gz"
        raise SeglabError("upload: a gzip file that does not hold a NIfTI image")
    if _nifti_header(head[:4]):
        return ".nii"
    raise SeglabError("upload: not an image seglab reads (PNG, JPEG, TIFF, GIF, BMP, NIfTI, "
                      "DICOM, or a zip of a DICOM series)")


def _nifti_header(first: bytes) -> bool:
    """NIfTI-1 and -2 headers start with their own size, 348 or 540, in either byte order."""
    return len(first) == 4 and any(int.from_bytes(first, order) in (348, 540)
                                   for order in ("little", "big"))


def read_upload(data: bytes, folder: Path) -> Case:
    """The uploaded image, written into `folder` under seglab's own name and read back."""
    suffix = sniff(data)
    if suffix == ".zip":
        series = folder / "series"
        series.mkdir()
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
                if not members or len(members) > MAX_ZIP_MEMBERS:
                    raise SeglabError(f"upload: a zip of 1 to {MAX_ZIP_MEMBERS} DICOM files "
                                      f"expected, it holds {len(members)}")
                for number, member in enumerate(members):  # names never become paths
                    (series / f"{number:05d}.dcm").write_bytes(archive.read(member))
        except (zipfile.BadZipFile, EOFError) as error:
            raise SeglabError(f"upload: a truncated or malformed zip file ({error})")
        path = series
    else:
        path = folder / f"upload{suffix}"
        path.write_bytes(data)
    try:
        case = read_image(path, case_id="upload")
    except SeglabError as error:
        raise SeglabError(str(error).replace(str(path), "upload"))
    return case


class Service:
    """The run's model, loaded once, and the one-at-a-time gate in front of it."""

    def __init__(self, run: Run, queue: int, precision: Precision | None = None):
        self.run, self.plan = run, with_tta(run.plan(), "plan")
        self.precision = precision or Precision.choose()
        self.model = load_model(run, self.precision)
        self.split = instance_split_settings(run) if self.plan.task == "instance" else None
        self.steps = postprocessing_steps(run)  # as `seglab predict` applies them
        self.slots = threading.BoundedSemaphore(queue + 1)  # the running one and the waiting
        self.lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        plan = self.plan
        return {"classes": plan.classes, "dims": plan.dims, "in_channels": plan.in_channels,
                "task": plan.task, "model": plan.model.get("name"),
                "patch_size": plan.patch_size, "target_spacing": plan.target_spacing,
                "test_time_mirroring": plan.inference.get("mirror_axes"),
                "test_time_quarter_turns": plan.inference.get("quarter_turns", False),
                "instances": plan.instances, "run": self.run.path.name}

    def predict(self, case: Case, explain: bool, uncertainty: bool) -> dict[str, Any]:
        if not self.slots.acquire(blocking=False):
            raise HTTPException(503, "busy: too many requests are waiting; try again shortly")
        try:
            with self.lock:
                return self._predict(case, explain, uncertainty)
        finally:
            self.slots.release()

    def _predict(self, case: Case, explain: bool, uncertainty: bool) -> dict[str, Any]:
        plan = self.plan
        if case.channels != plan.in_channels or case.dims != plan.dims:
            raise SeglabError(f"upload: {case.dims}D with {case.channels} channel(s), but the "
                              f"model takes {plan.dims}D with {plan.in_channels}")
        attach_rois([case], plan)  # the field of view as training found it
        maps: dict[str, np.ndarray] = {}
        if plan.task == "instance":
            found = predict_objects(self.model, case, plan, self.precision, self.split)
            mask, table = found.ids, object_rows(found.ids, found.classes, plan.classes,
                                                 case.spacing, index_to_world(case.meta,
                                                                              case.dims))
        else:
            if uncertainty:
                mask, _, unsure = predict_case_uncertainty(self.model, case, plan,
                                                           self.precision, self.steps)
                maps["uncertainty"] = unsure["entropy"]
            else:
                mask, _ = predict_case(self.model, case, plan, self.precision, self.steps,
                                       probabilities=False)
            if explain:
                from seglab.explain import explain_case  # opencv only when asked for

                counts = np.bincount(mask.ravel(), minlength=plan.n_classes)[1:]
                if counts.any():
                    maps["gradcam"] = explain_case(self.model, case, plan,
                                                   int(np.argmax(counts)) + 1)
            names = {k: plan.classes[k] for k in range(1, plan.n_classes)}
            table = measure_mask(mask, names, case.spacing,
                                 index_to_world(case.meta, case.dims))
        return {"shape": list(mask.shape), "spacing": list(case.spacing),
                "image": _bytes(_display(case.image)), "mask": _bytes(mask.astype(np.uint16)),
                "maps": {k: _bytes(np.clip(v * 255, 0, 255).astype(np.uint8))
                         for k, v in maps.items()},
                "measurements": table, "download": self._download(mask, case)}

    def _download(self, mask: np.ndarray, case: Case) -> dict[str, str]:
        """The mask in the input's own format (the dataset's label values), as a file: for a
        DICOM series its DICOM SEG, else what `seglab predict` writes."""
        with tempfile.TemporaryDirectory(prefix="seglab-serve-") as folder:
            value_map = None if self.plan.task == "instance" else output_value_map(self.plan)
            path = write_mask(mask, case, Path(folder), value_map)
            if case.meta["format"] == "dicom":
                names = ({k: f"object {k}" for k in np.unique(mask) if k} if
                         self.plan.task == "instance" else dict(enumerate(self.plan.classes)))
                path = next(iter(seg_beside(mask, case, Path(folder), names)), path)
            return {"name": f"mask{suffix_of(path)}",
                    "data": base64.b64encode(path.read_bytes()).decode()}


def _display(image: np.ndarray) -> np.ndarray:
    """The image for the page, 0..255: grey (*spatial), or RGB (*spatial, 3) for 3-channel
    images (`display_rgb`'s scaling)."""
    shown = (display_rgb(image) * 255).astype(np.uint8)
    return shown if image.shape[0] == 3 else np.ascontiguousarray(shown[..., 0])


def _bytes(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": str(array.dtype), "shape": list(array.shape),
            "data": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()}


def create_app(run: Run, max_upload_mb: float = 64, token: str | None = None,
               queue: int = 16, precision: Precision | None = None) -> FastAPI:
    service = Service(run, queue, precision)
    limit = int(max_upload_mb * 2**20)
    app = FastAPI(title="seglab", version="1", description=__doc__.split("\n\n")[0])
    app.state.service = service

    def check(authorization: str | None) -> None:
        if token is not None and authorization != f"Bearer {token}":
            raise HTTPException(401, "a token is needed: send Authorization: Bearer TOKEN")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/model")
    def model(authorization: str | None = Header(None)) -> dict[str, Any]:
        check(authorization)
        return service.describe()

    @app.post("/predict")
    def predict(file: UploadFile = File(...), explain: bool = False, uncertainty: bool = False,
                authorization: str | None = Header(None)) -> dict[str, Any]:
        check(authorization)
        name = file.filename or ""
        if "/" in name or "\\" in name or ".." in name:
            raise HTTPException(400, "upload: a file name, not a path, expected (the name is "
                                     "never used to store the file)")
        data = file.file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"upload over the limit of {max_upload_mb:g} MB")
        with tempfile.TemporaryDirectory(prefix="seglab-serve-") as folder:
            try:
                case = read_upload(data, Path(folder))
                return service.predict(case, explain, uncertainty)
            except SeglabError as error:
                raise HTTPException(400, str(error).replace(folder, "upload"))

    return app


def serve(run: Run, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 64,
          token: str | None = None, queue: int = 16) -> None:
    """Runs the service until interrupted (uvicorn, one process)."""
    import uvicorn

    uvicorn.run(create_app(run, max_upload_mb, token, queue), host=host, port=port,
                log_level="info")
