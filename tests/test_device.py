"""Precision, compile and peak-FLOPs decisions, judged per GPU.

No GPU is needed: CUDA is faked by monkeypatching ``torch.cuda``'s queries. The fake
``is_bf16_supported`` answers True everywhere, as torch does on a T4 or V100 (it
counts emulation), which is exactly the trap the decisions must not fall into.
"""

from __future__ import annotations

import pytest
import torch

import minigpt_helpers.training.device as device_mod
from minigpt_helpers.training.device import default_precision, peak_flops

T4 = ("Tesla T4", (7, 5))
V100 = ("Tesla V100-SXM2-16GB", (7, 0))
P100 = ("Tesla P100-PCIE-16GB", (6, 0))
A100 = ("NVIDIA A100-SXM4-40GB", (8, 0))
H100 = ("NVIDIA H100 80GB HBM3", (9, 0))


@pytest.fixture
def fake_gpus(monkeypatch):
    """``install({index: (name, capability)}, current=0, triton=True)`` pretends those GPUs exist."""

    def install(gpus: dict[int, tuple[str, tuple[int, int]]], current: int = 0, triton: bool = True) -> None:
        def index(d=None) -> int:
            if d is None:
                return current
            if isinstance(d, int):
                return d
            d = torch.device(d)
            return d.index if d.index is not None else current

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: gpus[index(d)][1])
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: gpus[index(d)][0])
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
        monkeypatch.setattr(torch.version, "hip", None)
        monkeypatch.setattr(device_mod, "_has_triton", lambda: triton, raising=False)

    return install


@pytest.fixture
def restore_matmul_precision():
    """enable_tf32 changes a process-wide setting: put it back for the other tests."""
    yield
    torch.set_float32_matmul_precision("highest")


# ------------------------------------------------------------------------------ precision
@pytest.mark.parametrize("gpu, expected", [(T4, "fp16"), (V100, "fp16"), (P100, "fp16"), (A100, "bf16"),
                                           (H100, "bf16")])
def test_default_precision_follows_compute_capability_not_emulation(fake_gpus, gpu, expected):
    fake_gpus({0: gpu})
    assert default_precision("cuda") == expected
    assert default_precision("cuda:0") == expected


def test_choose_precision_gives_reasons(fake_gpus):
    from minigpt_helpers.training.device import choose_precision

    fake_gpus({0: T4, 1: A100, 2: H100})
    p, why = choose_precision("cuda:0")
    assert p == "fp16"
    assert "Tesla T4" in why and "7.5" in why and "gradient scaler" in why and "emulation" in why
    p, why = choose_precision("cuda:1")
    assert p == "bf16" and "8.0" in why and "bf16" in why
    p, why = choose_precision("cuda:2")
    assert p == "bf16" and "9.0" in why


def test_explicit_bf16_on_an_old_gpu_raises_naming_fp16(fake_gpus):
    from minigpt_helpers.training.device import choose_precision

    fake_gpus({0: T4})
    with pytest.raises(ValueError, match="fp16") as e:
        choose_precision("cuda", "bf16")
    assert "7.5" in str(e.value) and "8.0" in str(e.value)
    assert choose_precision("cuda", "fp16")[0] == "fp16"
    assert choose_precision("cuda", "fp32")[0] == "fp32"


def test_explicit_precisions_are_kept_on_new_gpus(fake_gpus):
    from minigpt_helpers.training.device import choose_precision

    fake_gpus({0: H100})
    for p in ("fp32", "bf16", "fp16"):
        assert choose_precision("cuda", p)[0] == p


def test_unknown_precision_raises():
    from minigpt_helpers.training.device import choose_precision

    with pytest.raises(ValueError, match="'auto', 'fp32', 'bf16', 'fp16'"):
        choose_precision("cpu", "float16")


def test_cpu_and_mps_stay_in_fp32_and_say_why():
    from minigpt_helpers.training.device import choose_precision

    p, why = choose_precision("cpu")
    assert p == "fp32" and "100x" in why
    p, why = choose_precision(torch.device("mps"))
    assert p == "fp32" and "MPS" in why
    assert default_precision("cpu") == "fp32"
    assert choose_precision("cpu", "bf16")[0] == "bf16"  # explicit requests are honoured (and warned about)
    assert "100x" in choose_precision("cpu", "bf16")[1]


def test_decision_uses_the_given_device_not_the_current_one(fake_gpus):
    """A machine with a T4 as GPU 0 and an H100 as GPU 1: each is judged by itself."""
    from minigpt_helpers.training.device import choose_compile, choose_precision

    fake_gpus({0: T4, 1: H100}, current=0)
    assert default_precision("cuda:1") == "bf16"
    assert default_precision("cuda:0") == "fp16"
    assert default_precision("cuda") == "fp16"  # "cuda" = the current GPU, 0
    with pytest.raises(ValueError):
        choose_precision("cuda:0", "bf16")
    assert choose_precision("cuda:1", "bf16")[0] == "bf16"
    assert choose_compile("cuda:1", "bf16")[0] is True
    fake_gpus({0: T4, 1: H100}, current=1)
    assert default_precision("cuda") == "bf16"
    assert default_precision("cuda:0") == "fp16"


# ------------------------------------------------------------------------------ compile
def test_compile_on_by_default_where_triton_works(fake_gpus):
    from minigpt_helpers.training.device import choose_compile

    fake_gpus({0: T4, 1: A100, 2: H100})
    ok, why = choose_compile("cuda:2", "bf16")
    assert ok and "Triton" in why
    assert choose_compile("cuda:1", "bf16")[0] is True
    assert choose_compile("cuda:0", "fp16")[0] is True  # Triton supports 7.x, in fp16
    ok, why = choose_compile("cuda:2", "bf16", requested=False)
    assert not ok and "--no-compile" in why


def test_compile_refused_where_it_cannot_work(fake_gpus):
    from minigpt_helpers.training.device import choose_compile

    fake_gpus({0: T4, 1: P100})
    ok, why = choose_compile("cuda:0", "bf16")  # bf16 below 8.0: Triton fails
    assert not ok and "bf16" in why and "8.0" in why
    with pytest.raises(ValueError, match="--no-compile"):
        choose_compile("cuda:0", "bf16", requested=True)
    ok, why = choose_compile("cuda:1", "fp16")  # capability 6.0: too old for Triton
    assert not ok and "7.0" in why
    with pytest.raises(ValueError, match="--no-compile"):
        choose_compile("cuda:1", "fp16", requested=True)
    fake_gpus({0: H100}, triton=False)
    ok, why = choose_compile("cuda", "bf16")
    assert not ok and "triton" in why
    with pytest.raises(ValueError, match="--no-compile"):
        choose_compile("cuda", "bf16", requested=True)


def test_compile_off_by_default_on_cpu_and_mps():
    from minigpt_helpers.training.device import choose_compile

    ok, why = choose_compile("cpu", "fp32")
    assert not ok and "speed-up" in why
    assert choose_compile(torch.device("mps"), "fp32")[0] is False
    assert choose_compile("cpu", "fp32", requested=True)[0] is True  # allowed when asked: inductor runs on CPU


# ------------------------------------------------------------------------------ TF32
def test_enable_tf32_only_on_ampere_or_newer(fake_gpus, restore_matmul_precision):
    from minigpt_helpers.training.device import enable_tf32, tf32_enabled

    torch.set_float32_matmul_precision("highest")
    assert enable_tf32("cpu") is False
    fake_gpus({0: T4, 1: A100})
    assert enable_tf32("cuda:0") is False
    assert not tf32_enabled()
    assert enable_tf32("cuda:1") is True
    assert tf32_enabled()
    # set consistently: the legacy getter (which inductor calls) must not raise a mixed-API error
    assert torch.get_float32_matmul_precision() == "high"


# ------------------------------------------------------------------------------ peak FLOPs
@pytest.mark.parametrize("name, precision, expected", [
    ("NVIDIA L40S", "bf16", 362e12),  # not the L4's 121e12: "L4" is a substring of "L40S"
    ("NVIDIA L4", "bf16", 121e12),
    ("NVIDIA L40", "bf16", 181e12),
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4e12),  # the SXM board
    ("NVIDIA H100 PCIe", "bf16", 756.5e12),
    ("NVIDIA H100 NVL", "bf16", 835.5e12),
    ("NVIDIA H100", "bf16", 989.4e12),  # board not named: the fastest, so MFU is never overstated
    ("NVIDIA H200", "bf16", 989.4e12),
    ("NVIDIA A100-SXM4-40GB", "bf16", 312e12),
    ("NVIDIA A100 80GB PCIe", "bf16", 312e12),
    ("NVIDIA A10", "bf16", 125e12),
    ("Tesla T4", "fp16", 65e12),
    ("Tesla T4", "bf16", None),  # no bf16 tensor cores: unknown, not the fp16 figure
    ("Tesla T4", "fp32", 8.1e12),
    ("Tesla V100-SXM2-16GB", "fp16", 125e12),
    ("Tesla V100-PCIE-32GB", "fp16", 112e12),
    ("NVIDIA A10G", "bf16", None),  # AWS's A10G is not the A10
    ("NVIDIA GeForce RTX 4090", "bf16", None),
    ("Some Future Accelerator 9000", "bf16", None),
])
def test_peak_flops_matches_gpu_names_exactly(fake_gpus, restore_matmul_precision, name, precision, expected):
    torch.set_float32_matmul_precision("highest")  # fp32 = CUDA cores, not TF32
    fake_gpus({0: (name, (8, 0))})
    got = peak_flops("cuda", precision)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_peak_flops_fp32_uses_tf32_figure_when_enabled(fake_gpus, restore_matmul_precision):
    from minigpt_helpers.training.device import enable_tf32

    fake_gpus({0: ("NVIDIA A100-SXM4-80GB", (8, 0))})
    torch.set_float32_matmul_precision("highest")
    assert peak_flops("cuda", "fp32") == pytest.approx(19.5e12)
    enable_tf32("cuda")
    assert peak_flops("cuda", "fp32") == pytest.approx(156e12)


def test_peak_flops_unknown_off_cuda():
    assert peak_flops("cpu", "fp32") is None
    assert peak_flops(torch.device("mps"), "bf16") is None


def test_gpu_model_rule():
    from minigpt_helpers.training.device import gpu_model

    assert gpu_model("NVIDIA L40S") == ("L40S", "")
    assert gpu_model("NVIDIA L4") == ("L4", "")
    assert gpu_model("NVIDIA H100 PCIe") == ("H100", "PCIE")
    assert gpu_model("NVIDIA H100 80GB HBM3") == ("H100", "SXM")
    assert gpu_model("Tesla V100S-PCIE-32GB") == ("V100S", "")
    assert gpu_model("NVIDIA A10G") is None
