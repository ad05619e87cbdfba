"""The fast training path (bf16 autocast, channels_last, torch.compile) follows the fp32 reference.

No GPU is needed: the same code paths run on the CPU at a tiny size (autocast on CPU uses bf16 too).
On a GPU machine, `pytest -m gpu` runs the same comparison on CUDA.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arkx.training.engine import autocast_for

from .test_engine import make_engine


def loss_curve(engine) -> list[float]:
    return [engine.train_step(step) for step in engine.schedule]


@pytest.mark.parametrize("options", [dict(amp="bf16"), dict(channels_last=True),
                                     dict(amp="bf16", channels_last=True)])
def test_fast_options_follow_the_reference_loss_curve(tmp_path, tiny_datasets, tiny_heads, options):
    reference = loss_curve(make_engine(tmp_path / "ref", tiny_datasets, tiny_heads))
    fast = loss_curve(make_engine(tmp_path / "fast", tiny_datasets, tiny_heads, **options))
    np.testing.assert_allclose(fast, reference, rtol=0.05, atol=0.02)
    assert reference[-1] < reference[0]  # and both actually learn


def test_bf16_autocast_really_runs_in_bf16():
    ctx = autocast_for("bf16", torch.device("cpu"))
    with ctx():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    assert autocast_for("auto", torch.device("cpu"))().__class__.__name__ == "nullcontext"


def cpu_compiler_missing() -> bool:
    """torch.compile's CPU backend (inductor) builds C++ kernels: without a C++ compiler it cannot run."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:
        return True
    return False


@pytest.mark.slow
@pytest.mark.skipif(cpu_compiler_missing(), reason="torch.compile on the CPU needs a C++ compiler (none found)")
def test_compiled_step_follows_the_reference(tmp_path, tiny_datasets, tiny_heads):
    from torch._dynamo.utils import counters

    reference = loss_curve(make_engine(tmp_path / "ref", tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5))
    torch._dynamo.reset()
    counters.clear()
    engine = make_engine(tmp_path / "c", tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5, compile=True)
    compiled = loss_curve(engine)
    # the compiled path really ran: an eager fallback would compare eager with eager
    assert engine.compile_state == "compiled"
    assert counters["stats"]["unique_graphs"] >= 1
    np.testing.assert_allclose(compiled, reference, rtol=1e-3, atol=1e-4)


def test_compile_failure_falls_back_to_eager_and_says_so(tmp_path, tiny_datasets, tiny_heads, monkeypatch, caplog):
    def broken_compile(module):
        def forward(*args, **kwargs):
            raise RuntimeError("no backend for this test")
        return forward

    monkeypatch.setattr(torch, "compile", broken_compile)
    reference = loss_curve(make_engine(tmp_path / "ref", tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5))
    engine = make_engine(tmp_path / "c", tiny_datasets, tiny_heads, rounds=1, warmup_rounds=0.5, compile=True)
    assert engine.compile_state == "pending"
    with caplog.at_level("WARNING", logger="arkx.training"):
        losses = loss_curve(engine)
    assert engine.compile_state == "fallback"
    assert any("torch.compile failed" in r.getMessage() and "no backend" in r.getMessage() for r in caplog.records)
    assert losses == reference  # eager, exactly the reference path


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_compile_follows_cpu_reference(tmp_path, tiny_datasets, tiny_heads):
    reference = loss_curve(make_engine(tmp_path / "ref", tiny_datasets, tiny_heads))
    engine = make_engine(tmp_path / "gpu2", tiny_datasets, tiny_heads, amp="bf16", channels_last=True, compile=True,
                         device="cuda")
    gpu = loss_curve(engine)
    assert engine.compile_state == "compiled"  # not an eager fallback
    np.testing.assert_allclose(gpu, reference, rtol=0.05, atol=0.02)
