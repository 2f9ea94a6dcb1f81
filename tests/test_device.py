"""The device/precision/compile policy: the user's choices win, bad ones say what is allowed, the
memory layout follows the measured rule, and a failing torch.compile falls back to eager."""

import pytest
import torch

from seglab import device as device_module
from seglab.device import Precision, compile_with_fallback
from seglab.errors import SeglabError


def _tiny(dims: int = 2) -> torch.nn.Module:
    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    return torch.nn.Sequential(conv(1, 4, 3, padding=1), torch.nn.ReLU(), conv(4, 2, 1))


@pytest.mark.parametrize("bad", [dict(device="tpu"), dict(precision="int4"), dict(compile="yes")])
def test_unknown_choices_are_refused_with_what_is_allowed(bad) -> None:
    with pytest.raises(SeglabError, match="expected"):
        Precision.choose(**bad)


def test_cuda_or_mps_that_is_not_there_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    with pytest.raises(SeglabError, match="no CUDA GPU"):
        Precision.choose("cuda")
    with pytest.raises(SeglabError, match="MPS"):
        Precision.choose("mps")


def test_cpu_auto_is_bf16_only_on_cpus_with_bf16_units(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: True)
    fast = Precision.choose()
    assert (fast.name, fast.channels_last, fast.channels_last_3d, fast.compile) == (
        "bf16", True, True, False)
    monkeypatch.setattr(device_module, "cpu_has_fast_bf16", lambda: False)
    plain = Precision.choose()
    assert (plain.name, plain.channels_last, plain.channels_last_3d) == ("fp32", True, False)
    assert "without bf16" in plain.describe()["reason"]


def test_user_choice_is_recorded_as_such() -> None:
    policy = Precision.choose("cpu", "bf16", "off")
    assert policy.describe() == {"device": "cpu", "precision": "bf16", "compile": False,
                                 "reason": "bf16 chosen by the user; torch.compile off (chosen "
                                           "by the user)"}


def test_layout_is_channels_last_for_2d_and_for_3d_only_in_bf16() -> None:
    fp32, bf16 = Precision.choose("cpu", "fp32"), Precision.choose("cpu", "bf16")
    image, volume = torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8, 8)
    assert fp32.memory_format(image).is_contiguous(memory_format=torch.channels_last)
    assert fp32.memory_format(volume).is_contiguous()
    assert not fp32.memory_format(volume).is_contiguous(memory_format=torch.channels_last_3d)
    assert bf16.memory_format(volume).is_contiguous(memory_format=torch.channels_last_3d)
    model = bf16.prepare_model(_tiny(3))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last_3d)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(monkeypatch, capsys) -> None:
    def broken_compile(function):
        def call(*args, **kwargs):
            raise RuntimeError("no C++ compiler found\nlong traceback")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = _tiny()
    keys = list(model.state_dict())
    x = torch.randn(2, 1, 8, 8)
    expected = model[2](model[1](model[0](x)))
    compile_with_fallback(model)
    assert torch.equal(model(x), expected) and torch.equal(model(x), expected)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert warnings == ["warning: torch.compile failed (RuntimeError: no C++ compiler found); "
                        "running eagerly"]
    assert list(model.state_dict()) == keys


def test_compiled_model_matches_eager_and_keeps_its_state_dict_keys(capsys) -> None:
    torch.manual_seed(0)
    model = _tiny()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
        compile_with_fallback(model)
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert set(model.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert "warning" not in capsys.readouterr().err  # compiled, not fallen back


def test_fp32_models_with_instance_norm_stay_nchw_and_their_inputs_follow() -> None:
    policy = Precision.choose("cpu", "fp32", "off")
    image = torch.zeros(1, 1, 8, 8)
    plain = policy.prepare_model(_tiny())
    normed = policy.prepare_model(torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3),
                                                      torch.nn.InstanceNorm2d(4)))
    assert plain[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert policy.memory_format(image, plain).is_contiguous(memory_format=torch.channels_last)
    assert normed[0].weight.is_contiguous()
    assert not policy.memory_format(torch.zeros(1, 2, 8, 8), normed).is_contiguous(
        memory_format=torch.channels_last)
    bf16 = Precision.choose("cpu", "bf16", "off").prepare_model(
        torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.InstanceNorm2d(4)))
    assert bf16[0].weight.is_contiguous(memory_format=torch.channels_last)
