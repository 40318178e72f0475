"""The torch internal ``optimizer.found_inf`` that engine/_step.py relies on (CUDA, no scaler).

``StepRunner.clip_and_step`` hands fused optimizers a device flag as ``optimizer.found_inf`` so a
non-finite step is skipped without a host sync. That is GradScaler's private protocol with the
fused kernels; these tests fail if torch stops honouring it (then the engine would step with NaN
gradients). They run the CPU fused kernels, which implement the same protocol.
"""

from __future__ import annotations

import pytest
import torch

from trainengine.engine._optim import supports_found_inf

OPTIMIZERS = {
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.1, fused=True),
    "adam": lambda params: torch.optim.Adam(params, lr=0.1, fused=True),
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, fused=True),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_optimizer_skips_the_whole_step_when_found_inf_is_set(name: str) -> None:
    param = torch.nn.Parameter(torch.ones(4))
    opt = OPTIMIZERS[name]([param])
    assert supports_found_inf(opt)  # _step_supports_amp_scaling: what the engine checks

    # A good step first, so the state exists and "unchanged" is a real check.
    param.grad = torch.full((4,), 0.5)
    opt.found_inf = torch.tensor(0.0)
    opt.step()
    after_good = param.detach().clone()
    assert not torch.equal(after_good, torch.ones(4))  # 0.0: the step happened
    state = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[param].items()}

    # A non-finite step with the flag set: nothing moves, not even the step count or the moments.
    param.grad = torch.tensor([float("nan"), float("inf"), 1.0, 1.0])
    opt.found_inf = torch.tensor(1.0)
    opt.step()
    assert torch.equal(param.detach(), after_good)
    for key, value in opt.state[param].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, state[key]), key
            assert torch.isfinite(value).all(), key


def test_non_fused_optimizer_does_not_claim_support() -> None:
    # The engine falls back to a host check for these; they would ignore found_inf.
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))], lr=0.1, foreach=True)
    assert not supports_found_inf(opt)
