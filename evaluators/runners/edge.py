"""``edge``: onnxruntime, INT8 static quantization (QDQ) calibrated on the ``calibration`` split, one thread.

One intra-op thread stands in for a single edge core; ``threads`` is a runner setting.

The classifier (the graph's last node, whose output is the logits) stays FP32 and its input is dequantized: a
quantized output holds a handful of distinct values per row, so top-1 would be decided by how ties are broken.
Calibration streams the split in batches (one batch of images in memory); onnxruntime's MinMax calibrator keeps only
each tensor's per-batch minimum and maximum (ReduceMin/ReduceMax nodes added to the graph), never the tensors. Its
``CalibMaxIntermediateOutputs`` option is not used: in onnxruntime 1.32 it discards the batches collected so far
instead of merging their ranges.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from evaluators.runners.base import INPUT_NAME, CalibrationData, require_calibration
from evaluators.runners.cpu import OnnxCpuRunner


class _Calibration:
    """onnxruntime's ``CalibrationDataReader`` over a streamed split: one batch in memory at a time."""

    def __init__(self, data: CalibrationData, batch_size: int) -> None:
        self._batches: Iterator[Any] = data.batches(batch_size)

    def get_next(self) -> dict[str, Any] | None:
        from evaluators.memory import trim

        trim()  # the last batch's activations, freed by onnxruntime, back to the kernel before the next
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


RECIPES = ("ptq", "float-sensitive")  # then the layers per-tensor INT8 hurts most kept in float


def sensitive_nodes(model_path: Path) -> list[str]:
    """The layers kept in float by the ``float-sensitive`` recipe: the first and every grouped (depthwise) conv.

    The first convolution sees raw pixels; a depthwise one has few weights per output channel and an activation range
    per tensor. Both are the usual first suspects when INT8 costs a MobileNet or EfficientNet top-1; the recipe's
    effect is measured (calibration top-1) and recorded, never assumed.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name]
    grouped = [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    return list(dict.fromkeys([*(c.name for c in convs[:1]), *grouped]))


def output_nodes(model_path: Path) -> list[str]:
    """Names of the nodes that produce the graph's outputs (the classifier), kept out of quantization."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    outputs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if outputs.intersection(n.output) and n.name]


@dataclass
class OnnxEdgeInt8Runner(OnnxCpuRunner):
    threads: int = 1
    name: str = "edge"
    precision: str = "int8"
    per_channel: bool = True
    calibration_batch: int = 8  # images per calibration batch at most ...
    calibration_pixels: int = 8 * 64 * 64  # ... and about this many input pixels per batch (1 image at 224 px)
    recipe: str = "ptq"  # one of RECIPES
    recipes: tuple[str, ...] = field(default=RECIPES, init=False, repr=False)

    def with_recipe(self, recipe: str, max_drop: float) -> OnnxEdgeInt8Runner:  # max_drop: the recipe is fixed
        if recipe not in RECIPES:
            raise ValueError(f"edge int8 recipe {recipe!r}; valid: {', '.join(RECIPES)}")
        return replace(self, recipe=recipe)

    def prepare(self, fp32_onnx: Path, work_dir: Path, calibration: CalibrationData | None) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        calibration = require_calibration(self, calibration)
        work_dir.mkdir(parents=True, exist_ok=True)
        import onnx

        inline = work_dir / "model.fp32-inline.onnx"  # the quantizer's pre-processing cannot follow external data
        onnx.save(onnx.load(str(fp32_onnx)), str(inline))
        pre = work_dir / "model.pre.onnx"
        out = work_dir / "model.int8.onnx"
        quant_pre_process(str(inline), str(pre), skip_symbolic_shape=True)
        inline.unlink(missing_ok=True)
        ranges = work_dir / "calibration.json"
        self._calibrate(pre, work_dir, _Calibration(calibration, self._calibration_batch(pre)), ranges)
        quantize_static(
            str(pre),
            str(out),
            None,
            calibration_cache_path=str(ranges),  # the ranges collected above, in onnxruntime's own cache format
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=self.per_channel,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=output_nodes(pre) + (sensitive_nodes(pre) if self.recipe == "float-sensitive" else []),
        )
        pre.unlink(missing_ok=True)
        return out

    @staticmethod
    def _calibrate(model: Path, work_dir: Path, reader: _Calibration, ranges: Path) -> None:
        """Onnxruntime's MinMax calibration with a lean session: no memory arena, no memory pattern.

        ``quantize_static`` runs the augmented graph (every tensor also feeds a ReduceMin and a ReduceMax) in a
        session with the CPU arena on, which keeps the high-water mark of that graph's activations: for
        EfficientNet-B7 at 600 px that took the process past 8 GB. The ranges are the same either way; they reach
        ``quantize_static`` through its calibration cache. Each model's peak is in ``bench/native_catalog.py``'s block.
        """
        import onnxruntime as ort
        from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

        calibrator = create_calibrator(
            model, augmented_model_path=str(work_dir / "augmented.onnx"), calibrate_method=CalibrationMethod.MinMax
        )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as onnxruntime's own
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        options.log_severity_level = 3
        calibrator.infer_session = ort.InferenceSession(
            calibrator.augmented_model_path, options, providers=["CPUExecutionProvider"]
        )
        calibrator.collect_data(reader)
        save_tensors_data(calibrator.compute_data(), ranges)
        del calibrator
        (work_dir / "augmented.onnx").unlink(missing_ok=True)

    def _calibration_batch(self, model_path: Path) -> int:
        """Images per calibration batch: a batch's activations are all alive in the calibration session at once."""
        import onnx

        dims = onnx.load(str(model_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        pixels = (dims[2].dim_value or 224) * (dims[3].dim_value or 224) if len(dims) == 4 else 224 * 224
        return max(1, min(self.calibration_batch, self.calibration_pixels // pixels))

    def fingerprint(self, batch_size: int, image_size: int) -> dict[str, str]:
        fp = super().fingerprint(batch_size, image_size)
        fp["quantization"] = "static-qdq-u8s8" + ("-per-channel" if self.per_channel else "") + "-fp32-classifier"
        return fp

    def load(self, artifact: Path) -> Any:
        return super().load(artifact)
