"""A plain PyTorch U-Net: the reference that `benchmarks/real_data.py` measures seglab against.

What anyone could write in an afternoon, with none of seglab's planning, training, sampling or
inference: a U-Net with five resolution levels (16-32-64-128-256 channels, two conv-norm-ReLU per
level; BatchNorm in 2D, InstanceNorm in 3D), Adam (lr 1e-3), Dice + cross-entropy, random patches
with random flips (2D: 16 patches of 128x128 per batch; 3D: 4 volumes cropped or padded to a
multiple of 16, at most 64 per axis), per-image z-score normalisation per channel (inside the field
of view where the dataset has one), trained for a fixed number of minutes. After every tenth of
the budget the whole validation cases are predicted and their mean foreground Dice logged; the
weights with the best one are kept. Validation and test cases are predicted by tiles (2D: 512x512,
3D: the training patch) with 50% overlap and the softmax averaged. Only seglab's dataset reading
(`find_dataset`, `load_case`) is used, so the images, labels, ignore label, field of view and split
are the same as seglab's.

    python benchmarks/reference_unet.py examples/isbi2012.yaml --split RUN/split.json \
        --minutes 30 --out runs/reference/isbi2012

OUT/log.jsonl: {"step", "elapsed_s" (training seconds), "loss", "mean_dice"} per validation;
OUT/predictions/ID.npz: "mask" (class indices) and, for two classes, "prob" (foreground softmax);
OUT/run.json: model, parameters, batch, patch, steps, minutes, device.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seglab.data.layouts import IGNORE_INDEX, find_dataset
from seglab.data.loading import load_case

WIDTHS = (16, 32, 64, 128, 256)


def block(conv, norm, cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv(cin, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(True),
                         conv(cout, cout, 3, padding=1, bias=False), norm(cout), nn.ReLU(True))


class UNet(nn.Module):
    def __init__(self, dims: int, in_channels: int, n_classes: int):
        super().__init__()
        conv, up = (nn.Conv2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv3d, nn.ConvTranspose3d)
        norm = nn.BatchNorm2d if dims == 2 else (lambda c: nn.InstanceNorm3d(c, affine=True))
        self.pool = nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2)
        self.down = nn.ModuleList(block(conv, norm, a, b)
                                  for a, b in zip((in_channels,) + WIDTHS[:-1], WIDTHS))
        self.up = nn.ModuleList(up(b, a, 2, stride=2) for a, b in zip(WIDTHS[:-1], WIDTHS[1:]))
        self.decode = nn.ModuleList(block(conv, norm, 2 * a, a) for a in WIDTHS[:-1])
        self.head = conv(WIDTHS[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, encode in enumerate(self.down):
            x = encode(x if level == 0 else self.pool(x))
            skips.append(x)
        for level in reversed(range(len(self.up))):
            x = self.decode[level](torch.cat([skips[level], self.up[level](x)], 1))
        return self.head(x)


def load(dataset, ref):
    """(image z-scored per channel inside the ROI, label with IGNORE_INDEX, roi)."""
    case = load_case(dataset, ref)
    roi = case.roi if case.roi is not None else np.ones(case.shape, bool)
    image = case.image.astype(np.float32)
    inside = image[:, roi]
    shape = (-1,) + (1,) * case.dims
    image = (image - inside.mean(1).reshape(shape)) / (inside.std(1).reshape(shape) + 1e-6)
    image[:, ~roi] = 0
    return image, case.label, roi


def random_patch(image, label, size, rng):
    pad = [max(0, s - n) for s, n in zip(size, label.shape)]
    if any(pad):
        image = np.pad(image, [(0, 0)] + [(0, p) for p in pad])
        label = np.pad(label, [(0, p) for p in pad], constant_values=IGNORE_INDEX)
    box = tuple(slice(a, a + s) for a, s in
                ((rng.integers(0, n - s + 1), s) for s, n in zip(size, label.shape)))
    image, label = image[(slice(None),) + box], label[box]
    for axis in range(len(size)):
        if rng.random() < 0.5:
            image, label = np.flip(image, axis + 1), np.flip(label, axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def dice_ce(logits, target):
    valid = target != IGNORE_INDEX
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    probs = logits.softmax(1) * valid.unsqueeze(1)
    onehot = F.one_hot(torch.where(valid, target, 0), logits.shape[1]).movedim(-1, 1)
    onehot = onehot * valid.unsqueeze(1)
    axes = [0] + list(range(2, logits.ndim))
    dice = (2 * (probs * onehot).sum(axes) + 1) / (probs.sum(axes) + onehot.sum(axes) + 1)
    return ce + 1 - dice.mean()


@torch.no_grad()
def predict(model, image, window, device):
    """Softmax of the whole image: tiles of `window`, 50% overlap, averaged where they overlap."""
    model.eval()
    shape = image.shape[1:]
    padded = [max(w, -(-n // 16) * 16) for w, n in zip(window, shape)]
    x = torch.from_numpy(np.pad(image, [(0, 0)] + [(0, p - n) for p, n in zip(padded, shape)]))
    total, count = 0, torch.zeros(padded)
    starts = [sorted(set(range(0, p - w + 1, w // 2)) | {p - w}) for p, w in zip(padded, window)]
    for corner in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, len(window)):
        box = tuple(slice(int(a), int(a) + w) for a, w in zip(corner, window))
        probs = model(x[(slice(None),) + box][None].to(device)).softmax(1)[0].float().cpu()
        if isinstance(total, int):
            total = torch.zeros((probs.shape[0], *padded))
        total[(slice(None),) + box] += probs
        count[box] += 1
    return (total / count)[(slice(None),) + tuple(slice(0, n) for n in shape)].numpy()


def mean_dice(model, cases, n_classes, window, device):
    """Mean over foreground classes of the mean over cases of Dice (inside the ROI, ignore label
    excluded; an empty class predicted empty scores 1), as seglab's validation measures it."""
    scores = []
    for image, label, roi in cases:
        mask, valid = predict(model, image, window, device).argmax(0), roi & (label != IGNORE_INDEX)
        row = []
        for k in range(1, n_classes):
            pred, ref = (mask == k) & valid, (label == k) & valid
            total = pred.sum() + ref.sum()
            row.append(1.0 if total == 0 else 2 * (pred & ref).sum() / total)
        scores.append(row)
    return float(np.mean(scores, axis=0).mean())


def run(data, split: dict, minutes: float, out: Path, seed: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    dataset = find_dataset(data)
    refs = {ref.case_id: ref for ref in dataset.cases}
    n_classes = len(dataset.classes)
    train = [load(dataset, refs[i]) for i in split["train"]]
    val = [load(dataset, refs[i]) for i in split["val"]]
    channels, dims = train[0][0].shape[0], train[0][0].ndim - 1
    if dims == 2:
        patch, batch, window = (128, 128), 16, (512, 512)
    else:
        largest = np.max([t[1].shape for t in train], axis=0)
        patch = window = tuple(int(min(64, -(-n // 16) * 16)) for n in largest)
        batch = 4
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = UNet(dims, channels, n_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    budget, elapsed, step, next_val = minutes * 60, 0.0, 0, minutes * 6
    best, best_state, losses = -1.0, None, []
    (out / "log.jsonl").write_text("")
    while elapsed < budget:
        started = time.monotonic()
        picks = rng.integers(len(train), size=batch)
        pairs = [random_patch(train[i][0], train[i][1], patch, rng) for i in picks]
        x = torch.from_numpy(np.stack([p[0] for p in pairs])).to(device)
        y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64)).to(device)
        model.train()
        loss = dice_ce(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))  # waits for the device, so the clock is honest
        elapsed += time.monotonic() - started
        step += 1
        if elapsed >= next_val or elapsed >= budget:
            dice = mean_dice(model, val, n_classes, window, device) if val else float("nan")
            if not dice <= best:  # NaN (no validation cases) keeps the latest weights
                best, best_state = dice, {k: v.clone() for k, v in model.state_dict().items()}
            with open(out / "log.jsonl", "a") as log:
                log.write(json.dumps({"step": step, "elapsed_s": round(elapsed, 2),
                                      "loss": float(np.mean(losses)), "mean_dice": dice}) + "\n")
            losses, next_val = [], next_val + minutes * 6
    model.load_state_dict(best_state)
    (out / "predictions").mkdir(exist_ok=True)
    for case_id in split["test"]:
        image = load(dataset, refs[case_id])[0]
        probs = predict(model, image, window, device)
        extra = {"prob": probs[1]} if n_classes == 2 else {}
        np.savez_compressed(out / "predictions" / f"{case_id}.npz",
                            mask=probs.argmax(0).astype(np.uint8), **extra)
    info = {"model": f"reference U-Net {'-'.join(map(str, WIDTHS))}",
            "parameters": sum(p.numel() for p in model.parameters()), "batch_size": batch,
            "patch_size": list(patch), "steps": step, "training_s": round(elapsed, 1),
            "best_val_dice": best, "device": str(device), "precision": "fp32"}
    (out / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a seglab.yaml (or any layout seglab reads)")
    parser.add_argument("--split", type=Path, required=True, help="JSON with train/val/test ids")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(run(args.data, json.loads(args.split.read_text()), args.minutes, args.out))


if __name__ == "__main__":
    main()
