"""Size: parameters, GMACs and GFLOPs (named apart), artifact bytes, inference memory.

Compute is counted by ``torch.utils.flop_counter.FlopCounterMode``; it counts only matrix-multiply-type ops
(convolutions, linear, attention) at 2 FLOPs per multiply-accumulate, so ``GMACs = FLOPs / 2`` exactly. It has no
formula for the fused CPU attention kernel, so timm's attention modules are counted with ``fused_attn`` off (the
same two matmuls, written out); the model is left as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class SizeResult:
    params_m: float
    gmacs: float  # at the evaluation resolution
    gflops: float
    gmacs_native: float  # at the model's native resolution
    gflops_native: float
    size_mb: float  # deployable artifact on disk (ONNX + external data), MB = 1e6 bytes

    def to_metrics(self) -> dict[str, float]:
        return asdict(self)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def unfused_attention(model: torch.nn.Module) -> Iterator[None]:
    """Switch timm attention modules (``fused_attn``) to explicit matmuls for the duration, then restore them."""
    saved = [(m, m.fused_attn) for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    try:
        for m, _ in saved:
            setattr(m, "fused_attn", False)  # noqa: B010  (nn.Module's typed __setattr__ does not know the flag)
        yield
    finally:
        for m, fused in saved:
            setattr(m, "fused_attn", fused)  # noqa: B010


def count_flops(model: torch.nn.Module, image_size: int, channels: int = 3) -> int:
    """FLOPs of one forward pass at batch 1 (2 per multiply-accumulate), attention matmuls included."""
    x = torch.zeros(1, channels, image_size, image_size)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    with torch.no_grad(), unfused_attention(model), counter:
        model.eval()(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def measure_size(model: torch.nn.Module, image_size: int, native_size: int, artifact_bytes: int) -> SizeResult:
    flops = count_flops(model, image_size)
    flops_native = flops if native_size == image_size else count_flops(model, native_size)
    return SizeResult(
        params_m=count_params(model) / 1e6,
        gmacs=flops / 2e9,
        gflops=flops / 1e9,
        gmacs_native=flops_native / 2e9,
        gflops_native=flops_native / 1e9,
        size_mb=artifact_bytes / 1e6,
    )
