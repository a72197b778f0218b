"""Size: parameters, GMACs and GFLOPs (named apart), artifact bytes, inference memory.

Two sizes, one meaning each: ``fp32_size_mb`` is the FP32 ONNX export (the same for every runner of a model), and
``size_mb`` is what the runner deploys (:func:`deployed_size_mb`), the figure teams budget with ``max_size_mb``.

Compute is counted with the formulas of ``torch.utils.flop_counter`` (its ``flop_registry``): only
matrix-multiply-type ops (convolutions, linear, attention) at 2 FLOPs per multiply-accumulate, so
``GMACs = FLOPs / 2`` exactly. ``FlopCounterMode`` itself also tracks which module each op ran in, which costs more
than the count (0.16-0.40 s a demo model at 32 px, against 0.06-0.17 s without); :class:`_Flops` sums the same
formulas without it, on the meta device (shapes only, no arithmetic: 0.1-0.3 s of CPU a demo model at its native
resolution, where a pass on real zeros took up to 2 s on a loaded 2-core host; the counts are the same). There is
no formula for the fused CPU attention kernel, so timm's attention modules are counted with ``fused_attn`` off (the
same two matmuls, written out); the model is left as it was.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SizeResult:
    params_m: float
    gmacs: float  # at the evaluation resolution
    gflops: float
    gmacs_native: float  # at the model's native resolution
    gflops_native: float
    fp32_size_mb: float  # the FP32 ONNX export on disk (graph + external data), MB = 1e6 bytes: the model's own size

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


def _shape(x: Any) -> Any:
    return x.shape if isinstance(x, torch.Tensor) else x


@functools.cache
def _writes_its_input(func: Any) -> bool:
    """An in-place op that keeps its input's shape (``relu_``, ``hardswish_``, ``add_``, ``copy_``).

    It writes its first argument and returns it. Those that change the input's shape or strides (``resize_``, ``t_``)
    are tagged ``inplace_view``.
    """
    tags = func.tags
    alias = func._schema.arguments[0].alias_info if func._schema.arguments else None
    return torch.Tag.inplace in tags and torch.Tag.inplace_view not in tags and alias is not None and alias.is_write


_BATCH_NORM = torch.ops.aten.native_batch_norm.default


class _Flops(TorchDispatchMode):
    """``FlopCounterMode``'s total: each op's formula from ``flop_registry`` applied to the shapes it ran on.

    On the meta device (``shapes_only``) two kinds of op that no formula counts and that cannot change a shape skip
    their meta kernels, which are Python (``torch._refs``) and most of a pass over a MobileNet or an EfficientNet:
    an in-place op that keeps its input's shape (the activations) returns its input, as it does anyway, and an
    eval-mode batch norm returns a tensor like its input (with the per-channel statistics its meta kernel returns).
    """

    def __init__(self, shapes_only: bool = False) -> None:
        super().__init__()
        self.total = 0
        self.shapes_only = shapes_only

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.shapes_only:
            if _writes_its_input(func):
                return args[0]
            if func is _BATCH_NORM and not args[5]:  # (input, weight, bias, mean, var, training, momentum, eps)
                x, channels = args[0], args[0].shape[1]
                return torch.empty_like(x), x.new_empty((channels,)), x.new_empty((channels,))
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*tree_map(_shape, args), **tree_map(_shape, kwargs), out_val=tree_map(_shape, out))
        return out


def _forward_flops(model: torch.nn.Module, x: torch.Tensor, state: dict[str, torch.Tensor] | None) -> int:
    was_training = model.training
    try:
        with torch.no_grad(), unfused_attention(model), _Flops(shapes_only=state is not None) as counter:
            if state is None:
                model.eval()(x)
            else:  # the module's own forward with its tensors swapped for ``state``'s, then put back
                torch.func.functional_call(model.eval(), state, (x,))
    finally:
        model.train(was_training)
    return int(counter.total)


def count_flops(model: torch.nn.Module, image_size: int, channels: int = 3) -> int:
    """FLOPs of one forward pass at batch 1 (2 per multiply-accumulate), attention matmuls included.

    The formulas read shapes only, so the pass runs on the meta device (the model's parameters and buffers swapped
    for data-free meta tensors of the same shapes: no arithmetic, no copy of the weights); a model whose forward
    needs real values (a data-dependent branch) is counted on real zeros instead. Both give the same count.
    """
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    meta = {name: torch.empty_like(t, device="meta") for name, t in named}
    try:
        return _forward_flops(model, torch.zeros(1, channels, image_size, image_size, device="meta"), meta)
    except Exception as exc:  # e.g. a `.item()` or a Python branch on a tensor's value: no meta kernel answers it
        log.debug("FLOPs of %s counted on real tensors (meta pass failed: %s)", type(model).__name__, exc)
    return _forward_flops(model, torch.zeros(1, channels, image_size, image_size), None)


def measure_size(model: torch.nn.Module, image_size: int, native_size: int, artifact_bytes: int) -> SizeResult:
    flops = count_flops(model, image_size)
    flops_native = flops if native_size == image_size else count_flops(model, native_size)
    return SizeResult(
        params_m=count_params(model) / 1e6,
        gmacs=flops / 2e9,
        gflops=flops / 1e9,
        gmacs_native=flops_native / 2e9,
        gflops_native=flops_native / 1e9,
        fp32_size_mb=artifact_bytes / 1e6,
    )


def deployed_size_mb(files: Iterable[Path]) -> float:
    """``size_mb``: the files a runner deploys (its INT8 graph, IR, ``.pte`` or torch weights), MB = 1e6 bytes.

    What a team's ``max_size_mb`` budgets, so it is measured per runner; the FP32 export is ``fp32_size_mb``.
    """
    return sum(p.stat().st_size for p in files) / 1e6
