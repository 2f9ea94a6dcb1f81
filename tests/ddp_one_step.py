"""Run by tests/test_distributed.py under torchrun: one DDP training step on data that differs per
rank, then every rank's weights gathered; rank 0 writes them (as checksums) to argv[1]."""

import json
import sys

import torch

from seglab.device import Precision
from seglab.train.distributed import Distributed
from seglab.train.loop import TrainStep


def main(out: str) -> None:
    dist = Distributed.from_environment()
    torch.manual_seed(0)  # the same initial weights on every rank
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 2, 1))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(dist.wrap(model, find_unused=False), optimizer,
                     torch.nn.CrossEntropyLoss(), Precision.choose("cpu", "fp32", "off"), None)
    torch.manual_seed(100 + dist.rank)  # different data on each rank
    step(torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 8, 8)))
    weights = torch.cat([p.detach().flatten() for p in model.parameters()]).double()
    moved = max(float((p.detach() - b).abs().max()) for p, b in zip(model.parameters(), before))
    gathered = dist.gather({"rank": dist.rank, "weights": weights.tolist(), "moved": moved})
    if dist.is_main:
        with open(out, "w") as handle:
            json.dump(gathered, handle)
    dist.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
