"""The figures of `seglab report`, drawn with matplotlib's Agg canvas (no display) and returned as
base64 PNG for embedding: learning curves, box plots of per-case metrics, and case overlays."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import ndimage

from seglab.data.display import display_rgb
from seglab.report.run_data import Shown

# Errors: a false positive (background predicted as a class), a false negative (a class
# predicted as background), and a class mistaken for another (multi-class only).
ERRORS = (("false positive", (0.89, 0.10, 0.11)), ("false negative", (0.12, 0.47, 0.71)),
          ("wrong class", (1.00, 0.75, 0.00)))
AXES_3D = ("axis 0", "axis 1", "axis 2")


def figure_png(figure: Figure, dpi: int = 80) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def learning_curves(log: list[dict[str, Any]]) -> str:
    """Training loss (and a semi-supervised run's consistency term, part of it), validation Dice
    (mean and per class) and learning rate per epoch."""
    epochs = [record.get("epoch") for record in log]
    dice = list(dict.fromkeys(k for r in log for k in r if k.startswith(("mean_dice", "dice_"))))
    losses = ["loss"] + (["consistency_loss"] if any("consistency_loss" in r for r in log) else [])
    panels = [("training loss", losses), ("validation Dice", dice), ("learning rate", ["lr"])]
    figure = _figure(13, 3.4)
    for index, (title, keys) in enumerate(panels):
        axes = figure.add_subplot(1, 3, index + 1)
        for key in keys:
            values = [np.nan if r.get(key) is None else r[key] for r in log]
            axes.plot(epochs, values, marker="o" if len(log) < 30 else None, markersize=3,
                      label=key.removeprefix("dice_"), linewidth=2 if key == "mean_dice" else 1)
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        if len(keys) > 1:
            axes.legend(fontsize=8)
    return figure_png(figure)


def box_plots(values: dict[str, dict[str, list[float]]]) -> str:
    """One panel per metric, one box per class: {metric: {class: defined per-case values}}."""
    columns = min(4, len(values))
    rows = -(-len(values) // columns)
    figure = _figure(3.4 * columns, 2.8 * rows)
    for index, (metric, by_class) in enumerate(values.items()):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.boxplot(list(by_class.values()), tick_labels=list(by_class), showmeans=True)
        axes.set_title(metric, fontsize=10)
        axes.tick_params(axis="x", labelsize=8, labelrotation=20)
        axes.grid(axis="y", alpha=0.3)
    return figure_png(figure)


def cam_figure(image: np.ndarray, cam: np.ndarray) -> str:
    """The image and its class activation map over it (jet, half transparent); a volume by its
    slice (first axis) through the map's maximum."""
    if cam.ndim == 3:
        index = int(np.unravel_index(np.argmax(cam), cam.shape)[0])
        image, cam = image[:, index], cam[index]
    grey = display_rgb(image, rgb=image.shape[0] == 3)
    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    height, width = cam.shape
    figure = _figure(8, 4 * height / width + 0.3)
    for column, panel in enumerate((grey, 0.5 * grey + 0.5 * heat)):
        axes = figure.add_subplot(1, 2, column + 1)
        axes.imshow(panel, interpolation="nearest")
        axes.set_title(("image", "Grad-CAM")[column], fontsize=10)
        axes.set_axis_off()
    return figure_png(figure)


def uncertainty_plot(summary: dict[str, Any]) -> str:
    """The error rate in each tenth of predictive entropy, with how many pixels fall there."""
    centres = np.arange(10) / 10 + 0.05
    rates = [np.nan if r is None else r for r in summary["error_rate_by_entropy"]]
    figure = _figure(6.5, 3.2)
    axes = figure.add_subplot(1, 1, 1)
    axes.bar(centres, rates, width=0.09, color=colormaps["tab10"].colors[3])
    axes.set_xlabel("predictive entropy")
    axes.set_ylabel("error rate")
    axes.set_xlim(0, 1)
    counts = axes.twinx()
    counts.plot(centres, summary["pixels_by_entropy"], color="black", marker="o", markersize=3)
    counts.set_yscale("log")
    counts.set_ylabel("pixels (line)")
    axes.grid(alpha=0.3)
    return figure_png(figure)


def error_centre(errors: np.ndarray) -> tuple[tuple[int, ...], int] | None:
    """The voxel of the largest connected error component nearest to its centre of mass (a
    voxel of the component itself, so that slices through it cut the error), and its size."""
    components, count = ndimage.label(errors)
    if count == 0:
        return None
    sizes = np.bincount(components.ravel())[1:]
    largest = int(np.argmax(sizes)) + 1
    voxels = np.argwhere(components == largest)
    centre = voxels.mean(axis=0)
    nearest = voxels[np.argmin(((voxels - centre) ** 2).sum(axis=1))]
    return tuple(int(v) for v in nearest), int(sizes[largest - 1])


def _class_colours(n: int) -> np.ndarray:
    """Background black, then tab10's colours less the red, blue and yellow of `ERRORS`."""
    palette = [colormaps["tab10"].colors[k] for k in (2, 1, 4, 5, 6, 9, 7)]
    return np.array([(0, 0, 0)] + [palette[k % len(palette)] for k in range(n)])


def _overlay(grey: np.ndarray, labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Classes painted half-transparently over the image; background and ignored left alone."""
    painted = grey.copy()
    inside = (labels > 0) & (labels < len(colours))
    painted[inside] = 0.45 * grey[inside] + 0.55 * colours[labels[inside]]
    return painted


def _object_colours(n: int) -> np.ndarray:
    """Background black, then one colour per object id, cycling through tab20."""
    palette = colormaps["tab20"].colors
    return np.array([(0, 0, 0)] + [palette[k % len(palette)] for k in range(n)])


def _error_kinds(case: Shown) -> list[np.ndarray]:
    """Masks of the three kinds in `ERRORS`, inside the counted region (objects: the first two,
    by whether a pixel belongs to any object)."""
    ref_fg, pred_fg = case.label > 0, case.prediction > 0
    if case.objects is not None:
        return [pred_fg & ~ref_fg & case.counted, ref_fg & ~pred_fg & case.counted]
    wrong = (case.prediction != case.label) & case.counted
    return [wrong & ~ref_fg, wrong & ~pred_fg, wrong & ref_fg & pred_fg]


def _differences(grey: np.ndarray, kinds: list[np.ndarray]) -> np.ndarray:
    painted = 0.6 * grey
    for mask, (_, colour) in zip(kinds, ERRORS):
        painted[mask] = colour
    return painted


def _panels(case: Shown, index: tuple | None) -> list[np.ndarray]:
    """Image, ground truth, prediction, differences (RGB), whole or the slice `index`."""
    pick = (lambda a: a) if index is None else (lambda a: a[index])
    if index is None:
        grey = display_rgb(case.image, rgb=case.image.shape[0] == 3)
    else:
        grey = display_rgb(case.image[(slice(None), *index)], rgb=False)
    most = int(max(case.label[case.counted].max(initial=0), case.prediction.max(initial=0)))
    colours = _object_colours(most) if case.objects is not None else _class_colours(most)
    kinds = [pick(k) for k in _error_kinds(case)]
    label = np.where(pick(case.counted), pick(case.label), 0)
    return [grey, _overlay(grey, label, colours), _overlay(grey, pick(case.prediction), colours),
            _differences(grey, kinds)]


def _legend(figure: Figure, case: Shown, class_names: list[str]) -> None:
    if case.objects is not None:
        handles = [Patch(color=colormaps["tab20"].colors[0], label="one colour per object"),
                   *(Patch(color=colour, label=name) for name, colour in ERRORS[:2])]
        figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9)
        return
    present = int(max(case.label[case.counted].max(initial=0), case.prediction.max(initial=0)))
    colours = _class_colours(present)
    handles = [Patch(color=colours[k], label=class_names[k] if k < len(class_names) else str(k))
               for k in range(1, present + 1)]
    kinds = ERRORS if len(class_names) > 2 else ERRORS[:2]
    handles += [Patch(color=colour, label=name) for name, colour in kinds]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9)


TITLES = ("image", "ground truth", "prediction", "differences")


def overlay_2d(case: Shown, class_names: list[str]) -> str:
    """One row: image, ground truth, prediction, and the errors coloured by kind."""
    height, width = case.label.shape
    figure = _figure(13, 13 / 4 * height / width + 0.8)
    for column, (panel, name) in enumerate(zip(_panels(case, None), TITLES)):
        axes = figure.add_subplot(1, 4, column + 1)
        axes.imshow(panel, interpolation="nearest")
        axes.set_title(name, fontsize=10)
        axes.set_axis_off()
    _legend(figure, case, class_names)
    return figure_png(figure)


def overlay_3d(case: Shown, class_names: list[str]) -> tuple[str, str]:
    """Three rows, the orthogonal slices through the largest error (the volume's centre when
    there is none), and a sentence saying where that is."""
    found = error_centre(np.logical_or.reduce(_error_kinds(case)))
    if found is None:
        point = tuple(s // 2 for s in case.label.shape)
        where = f"no errors; slices through the volume's centre {point}"
    else:
        point, size = found
        where = f"slices through the largest error ({size} voxels) at voxel {point}"
    figure = _figure(12, 10)
    for row, axis in enumerate(range(3)):
        index = tuple(point[a] if a == axis else slice(None) for a in range(3))
        rest = [a for a in range(3) if a != axis]
        aspect = case.spacing[rest[1]] / case.spacing[rest[0]]
        for column, (panel, name) in enumerate(zip(_panels(case, index), TITLES)):
            axes = figure.add_subplot(3, 4, 4 * row + column + 1)
            axes.imshow(np.swapaxes(panel, 0, 1), origin="lower", aspect=aspect,
                        interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(name, fontsize=10)
            if column == 0:
                axes.set_ylabel(f"{AXES_3D[axis]} = {point[axis]}", fontsize=9)
    _legend(figure, case, class_names)
    return figure_png(figure), where
