"""Class activation maps for any registered model, 2D and 3D (`seglab explain`), through
pytorch-grad-cam (Gildenblat et al.): Grad-CAM (Selvaraju et al., ICCV 2017), Grad-CAM++
(Chattopadhay et al., WACV 2018) and HiResCAM (Draelos and Carin, 2020).

For segmentation the explained score is a class's log-odds summed over the pixels predicted as
that class (`ClassRegion`; pytorch-grad-cam's semantic-segmentation target sums the raw logit).
The explained layer is the one whose output the output head reads (found by running the model
once with hooks), so the map has the decoder's full resolution rather than the bottleneck's. Each image is explained whole, in the plan's spacing and normalisation, and the map
is brought back to the image's grid; it runs from 0 to 1 (pytorch-grad-cam's scaling).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM

from seglab.case import Case
from seglab.data.display import display_rgb
from seglab.data.io import atomic_path, output_folder
from seglab.data.write import write_maps
from seglab.device import Precision
from seglab.errors import SeglabError
from seglab.infer import Ensemble, load_model
from seglab.infer_inputs import run_inputs
from seglab.plan import Plan
from seglab.preprocess import prepare_case, resize
from seglab.run import Run

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM}


class ClassRegion:
    """The score to explain: the log-odds of `category` against the other classes (its logit
    less the log-sum-exp of theirs), summed where `mask` is set. Its gradient is the class's
    weights less the others', which does not vanish where the class is certain; a class's own
    logit would also explain what every class shares (in 3D, its map came out all zero)."""

    def __init__(self, category: int, mask: torch.Tensor):
        self.category, self.mask = category, mask

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        others = torch.cat([output[:self.category], output[self.category + 1:]])
        odds = output[self.category] - torch.logsumexp(others, dim=0)
        return (odds * self.mask).sum()


def last_feature_layer(model: torch.nn.Module, sample: torch.Tensor,
                       classes: int) -> torch.nn.Module:
    """The module whose output the output head reads: in the order of one forward pass on
    `sample`, the last module run before the head (the last convolution with the class count as
    its channels) whose output has the shape of the head's input."""
    ran: list[tuple[torch.nn.Module, tuple | None, tuple | None]] = []

    def record(module: torch.nn.Module, inputs: tuple, output: object) -> None:
        shape_in = tuple(inputs[0].shape) if inputs and torch.is_tensor(inputs[0]) else None
        ran.append((module, tuple(output.shape) if torch.is_tensor(output) else None, shape_in))

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for hook in hooks:
            hook.remove()
    heads = [i for i, (m, _, _) in enumerate(ran)
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)) and m.out_channels == classes]
    if not heads:
        raise SeglabError("explain: found no output head (a convolution to the class count)")
    head_input = ran[heads[-1]][2]
    features = [m for m, shape, _ in ran[:heads[-1]] if shape == head_input]
    if not features:
        raise SeglabError("explain: found no layer whose output the output head reads")
    return features[-1]


def explain_case(model: torch.nn.Module, case: Case, plan: Plan, class_index: int,
                 method: str = "gradcam") -> np.ndarray:
    """The class activation map (*spatial, 0..1) of `class_index` for one case, in its grid;
    all zeros where the model predicts none of that class."""
    if method not in METHODS:
        raise SeglabError(f"--method {method}: expected one of {', '.join(METHODS)}")
    if isinstance(model, Ensemble):
        model = model.members[0]  # the first fold's model: a CAM explains one network
    prepared = prepare_case(case, plan)
    image = torch.from_numpy(np.ascontiguousarray(prepared.image, np.float32))[None]
    device = next(model.parameters()).device
    image = image.to(device)
    model = model.float().eval()
    layer = last_feature_layer(model, image, plan.n_classes)
    with torch.no_grad():
        predicted = model(image)[0].argmax(0) == class_index
    if not predicted.any():
        return np.zeros(case.shape, np.float32)
    with METHODS[method](model=model, target_layers=[layer]) as cam:
        found = cam(input_tensor=image, targets=[ClassRegion(class_index, predicted.float())])[0]
    return resize(np.asarray(found, np.float32)[None], case.shape, "linear")[0]


def explain_files(run: Run, inputs: list[str | Path], out: Path, class_name: str | None = None,
                  method: str = "gradcam") -> list[Path]:
    """`seglab explain`: per input, the class activation map of `class_name` (default: every
    foreground class) written beside where its mask would go (`write_maps`: a NIfTI per map for
    NIfTI volumes, else `<name>_maps.npz`, keys `cam_<class>`) and, for 2D images, as a PNG
    overlay per class (`<name>_cam_<class>.png`); in fp32 on the run's device."""
    plan, cases = run_inputs(run, inputs)
    if plan.task != "semantic" or plan.model["name"] == "mask_rcnn":
        raise SeglabError(f"{run.path}: explain works on semantic runs (a network that labels "
                          "pixels)")
    names = plan.classes[1:] if class_name is None else [class_name]
    unknown = [n for n in names if n not in plan.classes[1:]]
    if unknown:
        raise SeglabError(f"--class {unknown[0]}: not a foreground class of the run "
                          f"({', '.join(plan.classes[1:])})")
    precision = Precision.choose(precision="fp32")
    model = load_model(run, precision)
    output_folder(out)
    written = []
    for case in cases:
        maps = {f"cam_{re.sub(r'[^A-Za-z0-9_-]', '_', name)}":
                explain_case(model, case, plan, plan.classes.index(name), method)
                for name in names}
        written += write_maps(maps, case, out)
        if case.dims == 2:
            stem = Path(written[-1]).name.removesuffix("_maps.npz")
            written += [_write_overlay(case.image, cam, out / f"{stem}_{key}.png")
                        for key, cam in maps.items()]
    return written


def _write_overlay(image: np.ndarray, cam: np.ndarray, path: Path) -> Path:
    """The image (grey, or its RGB) with the map over it in the jet colours, as a PNG."""
    blended = 0.5 * display_rgb(image) + 0.5 * colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    with atomic_path(path) as tmp:
        Image.fromarray((blended * 255).astype(np.uint8)).save(tmp, format="PNG")
    return path
