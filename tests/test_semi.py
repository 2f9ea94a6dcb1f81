"""Semi-supervised training: the mean teacher is the exponential moving average of the student,
the consistency weight ramps up, unlabelled cases never enter the supervised loss, a run killed
mid-epoch resumes with its teacher; cross pseudo supervision's two networks each learn the
other's hard labels, and both are trained and kept."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from seglab import api
from seglab.data.inspect import inspect_dataset
from seglab.data.layouts import find_dataset
from seglab.infer import build_model
from seglab.plan import make_plan
from seglab.preprocess import Prepared
from seglab.run import Run, load_checkpoint
from seglab.run_setup import planned_split
from seglab.train.sampling import PatchSampler, WithUnlabeled
from seglab.train.semi import CrossPseudoSupervision, MeanTeacher, PseudoLabels, strongly_perturbed
from tests.test_train import TINY_2D, _start_training, kill_after_first_checkpoint

SETTINGS = {"method": "mean_teacher", "weight": 2.0, "rampup_fraction": 0.5, "ema_decay": 0.9,
            "noise": 0.1}


def test_the_teacher_is_the_exponential_moving_average_of_the_student() -> None:
    student = torch.nn.Conv2d(1, 2, 1)
    teacher = MeanTeacher(student, SETTINGS)
    expected = student.weight.detach().clone()
    for update, value in enumerate([1.0, -2.0, 3.0, 0.5], start=1):
        with torch.no_grad():
            student.weight.fill_(value)
        teacher.update(student)
        decay = min(1 - 1 / (update + 1), 0.9)  # 0.5, 0.667, 0.75, 0.8
        expected = decay * expected + (1 - decay) * value
    torch.testing.assert_close(teacher.teacher.weight, expected)
    assert not any(p.requires_grad for p in teacher.teacher.parameters())


def test_the_teacher_of_a_compiled_student_runs_its_own_weights() -> None:
    student = torch.nn.Conv2d(1, 2, 1)
    student.forward = lambda x: torch.zeros(1)  # stands in for a compiled forward (a closure)
    teacher = MeanTeacher(student, SETTINGS)
    images = torch.randn(1, 1, 4, 4)
    torch.testing.assert_close(teacher.teacher(images),
                               torch.nn.functional.conv2d(images, student.weight, student.bias))


def test_the_consistency_weight_ramps_up_then_holds() -> None:
    teacher = MeanTeacher(torch.nn.Conv2d(1, 2, 1), SETTINGS)
    assert teacher.weight(0.0) == pytest.approx(2.0 * math.exp(-5))
    assert teacher.weight(0.25) == pytest.approx(2.0 * math.exp(-5 * 0.25))
    assert teacher.weight(0.5) == teacher.weight(0.9) == pytest.approx(2.0)


def test_the_consistency_is_zero_for_a_teacher_equal_to_the_student_without_noise() -> None:
    student = torch.nn.Conv2d(1, 3, 1)
    teacher = MeanTeacher(student, {**SETTINGS, "noise": 0.0})
    images = torch.randn(2, 1, 8, 8)
    assert float(teacher.consistency(student, images, 1.0).detach()) == pytest.approx(0, abs=1e-7)
    with torch.no_grad():
        student.bias.add_(1.0)  # the student moves: the term is positive and has a gradient
    value = teacher.consistency(student, images, 1.0)
    assert float(value.detach()) > 0 and value.requires_grad


def test_pseudo_labels_teach_the_teachers_confident_labels_on_perturbed_patches() -> None:
    student = torch.nn.Conv2d(1, 2, 1)
    with torch.no_grad():  # class 1 where the intensity is positive, confidently where |x| > 0.5
        student.weight.copy_(torch.tensor([-6.0, 6.0]).view(2, 1, 1, 1))
        student.bias.zero_()
    settings = {**SETTINGS, "method": "pseudo_labels", "confidence": 0.95, "weight": 2.0}
    teacher = PseudoLabels(student, settings)
    images = torch.linspace(-1, 1, 2 * 8 * 8).view(2, 1, 8, 8)
    torch.manual_seed(3)
    value = teacher.consistency(student, images, 1.0)
    torch.manual_seed(3)
    perturbed = strongly_perturbed(images, settings["noise"])
    confident = (images.abs() * 12 >= math.log(0.95 / 0.05))[:, 0]  # softmax of +-6x >= 0.95
    labels = (images > 0).long()[:, 0]
    expected = torch.nn.functional.cross_entropy(student(perturbed), labels, reduction="none")
    assert 0 < confident.float().mean() < 1
    torch.testing.assert_close(value, 2.0 * (expected * confident).mean())
    assert value.requires_grad and not torch.equal(perturbed, images)
    unsure = PseudoLabels(student, {**settings, "confidence": 1.0})  # no pixel is that sure
    assert float(unsure.consistency(student, images, 1.0).detach()) == 0.0


def _case(name: str, value: float, label: int) -> Prepared:
    image = np.full((1, 20, 20), value, np.float32)
    return Prepared(name, image, np.full((20, 20), label, np.uint8), None, (20, 20), None)


def test_unlabelled_cases_never_enter_the_supervised_loss(png_dataset: Path) -> None:
    """Labelled cases are 0 with label 0; the unlabelled one is 5 with a (withheld) label 1: the
    supervised batches hold only labelled patches and labels, the unlabelled batch only 5s."""
    plan = make_plan(inspect_dataset(find_dataset(png_dataset)), {
        "patch_size": [8, 8], "batch_size": 4, "augmentation.noise_probability": 0.0,
        "augmentation.brightness_probability": 0.0, "augmentation.contrast_probability": 0.0,
        "augmentation.gamma_probability": 0.0, "augmentation.scale_probability": 0.0,
        "augmentation.rotate_probability": 0.0})
    rng = np.random.default_rng(0)
    sampler = WithUnlabeled(PatchSampler([_case("a", 0.0, 0), _case("b", 0.0, 0)], plan, rng),
                            PatchSampler([_case("u", 5.0, 1)], plan, rng, labeled=False))
    for _ in range(5):
        images, labels, unlabeled = sampler.batch()
        assert images.abs().max() == 0 and labels.max() == 0
        inside = unlabeled[unlabeled != 0]  # a flipped patch at the border reads one padded row
        assert inside.numel() > 0.9 * unlabeled.numel() and torch.allclose(inside, torch.full_like(
            inside, 5.0))


def test_withheld_and_unlabelled_images_are_listed_apart_from_the_training_cases(
        png_dataset: Path) -> None:
    dataset = find_dataset(png_dataset)
    ids = [c.case_id for c in dataset.cases]
    fp = inspect_dataset(dataset)
    withheld = {"split.fixed": {"test": ids[:2], "val": ids[2:3], "unlabeled": ids[3:9]}}
    split = planned_split(dataset, make_plan(fp, {**withheld,
                                                  "semi_supervised.method": "mean_teacher"}))
    assert split["unlabeled"] == ids[3:9] and split["train"] == ids[9:]
    alone = planned_split(dataset, make_plan(fp, withheld))
    assert "unlabeled" not in alone and alone["train"] == ids[9:]  # the same labelled cases


def test_images_without_masks_are_the_unlabelled_cases_of_a_semi_supervised_split(
        png_dataset: Path) -> None:
    image = next((png_dataset / "images").iterdir())
    (png_dataset / "images" / "extra.png").write_bytes(image.read_bytes())  # no mask file
    dataset = find_dataset(png_dataset)
    plan = make_plan(inspect_dataset(dataset), {"semi_supervised.method": "mean_teacher"})
    split = planned_split(dataset, plan)
    assert split["unlabeled"] == ["extra"]
    assert "extra" not in split["train"] + split["val"] + split["test"]
    assert "1 unlabelled" in make_plan(inspect_dataset(dataset)).planning["semi_supervised"]


@pytest.mark.slow
def test_a_semi_supervised_run_killed_mid_epoch_resumes_with_its_teacher(
        png_dataset: Path, tmp_path: Path) -> None:
    out, overrides = tmp_path / "run", tmp_path / "semi.json"
    ids = [c.case_id for c in find_dataset(png_dataset).cases]
    overrides.write_text(json.dumps({"semi_supervised.method": "mean_teacher",
                                     "split.fixed": {"unlabeled": ids[:6]}}))
    process = _start_training(png_dataset, out, "--plan-overrides", str(overrides),
                              "--set", "epochs=1000")
    last = out / "checkpoints" / "last.pt"
    kill_after_first_checkpoint(process, last)
    saved = load_checkpoint(last)
    killed_at, updates = saved["progress"], saved["teacher"]["updates"]
    assert updates == killed_at["step"] > 0
    end = killed_at["epoch"] + 1
    resumed = _start_training(None, out, "--resume", "--set", f"epochs={end}")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    log = Run.open(out).log()
    assert [r["epoch"] for r in log] == list(range(1, end + 1))
    assert all(r["consistency_loss"] >= 0 for r in log)
    final = load_checkpoint(last)
    assert final["teacher"]["updates"] == final["progress"]["step"] > updates


def test_validation_scores_the_teacher_and_best_keeps_its_weights(png_dataset: Path,
                                                                   tmp_path: Path) -> None:
    ids = [c.case_id for c in find_dataset(png_dataset).cases]
    run = api.train(png_dataset, tmp_path / "run", {
        **TINY_2D, "epochs": 1, "semi_supervised.method": "mean_teacher",
        "split.fixed": {"unlabeled": ids[:6]}}, progress=False, evaluate=False)
    assert run.read_json("split.json")["unlabeled"] == ids[:6]
    last = load_checkpoint(run.checkpoints / "last.pt")
    best = load_checkpoint(run.checkpoints / "best.pt")["model"]  # the first epoch always is
    for name, weights in last["teacher"]["teacher"].items():
        torch.testing.assert_close(best[name], weights)
    assert any(not torch.equal(best[k], last["model"][k]) for k in best)  # not the student's


def test_semi_supervised_training_without_unlabelled_images_says_where_to_find_them(
        png_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no unlabelled images"):
        api.train(png_dataset, tmp_path / "run", {**TINY_2D,
                                                   "semi_supervised.method": "mean_teacher"},
                  progress=False)
    assert not (tmp_path / "run").exists()


def test_each_cross_pseudo_supervised_network_learns_the_others_hard_labels() -> None:
    """The student is uniform (argmax: class 0), the partner sure of class 1 by a logit margin of
    4: the student's cross-entropy against class 1 is log 2, the partner's against class 0 is
    log(1 + e^4); the partner's supervised loss on the labelled batch is added, not logged."""
    student, partner = torch.nn.Conv2d(1, 2, 1), torch.nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        for parameter in (student.weight, student.bias, partner.weight):
            parameter.zero_()
        partner.bias.copy_(torch.tensor([0.0, 4.0]))
    cps = CrossPseudoSupervision(partner, {**SETTINGS, "method": "cross_pseudo_supervision"},
                                 torch.nn.CrossEntropyLoss())
    images, labels = torch.randn(2, 1, 4, 4), torch.ones(2, 4, 4, dtype=torch.long)
    added, logged = cps.term(student, torch.randn(3, 1, 5, 5), 1.0, images, labels)
    cross = math.log(2) + math.log1p(math.exp(4))
    assert float(logged.detach()) == pytest.approx(2.0 * cross, rel=1e-5)
    assert float(added.detach()) == pytest.approx(2.0 * cross + math.log1p(math.exp(-4)), rel=1e-5)
    added.backward()
    assert student.bias.grad.abs().sum() > 0 and partner.bias.grad.abs().sum() > 0
    assert cps.trained_parameters() == list(partner.parameters())
    assert cps.validated(student) is student


def test_a_pseudo_label_run_trains_validates_with_its_teacher_and_logs_the_term(
        png_dataset: Path, tmp_path: Path) -> None:
    ids = [c.case_id for c in find_dataset(png_dataset).cases]
    run = api.train(png_dataset, tmp_path / "run", {
        **TINY_2D, "epochs": 1, "semi_supervised.method": "pseudo_labels",
        "semi_supervised.confidence": 0.5, "split.fixed": {"unlabeled": ids[:6]}},
        progress=False, evaluate=False)
    last = load_checkpoint(run.checkpoints / "last.pt")
    best = load_checkpoint(run.checkpoints / "best.pt")["model"]
    for name, weights in last["teacher"]["teacher"].items():  # the teacher validates
        torch.testing.assert_close(best[name], weights)
    assert run.log()[-1]["consistency_loss"] > 0


def test_cross_pseudo_supervision_trains_both_networks_and_keeps_the_partner(
        png_dataset: Path, tmp_path: Path) -> None:
    ids = [c.case_id for c in find_dataset(png_dataset).cases]
    run = api.train(png_dataset, tmp_path / "run", {
        **TINY_2D, "epochs": 1, "semi_supervised.method": "cross_pseudo_supervision",
        "split.fixed": {"unlabeled": ids[:6]}}, progress=False, evaluate=False)
    last = load_checkpoint(run.checkpoints / "last.pt")
    best = load_checkpoint(run.checkpoints / "best.pt")["model"]
    partner = last["partner"]["partner"]
    assert set(partner) == set(last["model"])
    assert any(not torch.equal(partner[k], last["model"][k]) for k in partner)  # apart
    for name, weights in last["model"].items():  # the first network validates and is kept
        torch.testing.assert_close(best[name], weights)
    trained = len(last["optimizer"]["param_groups"][0]["params"])
    assert trained == 2 * len(list(build_model(run.plan()).parameters()))
    assert run.log()[-1]["consistency_loss"] >= 0
