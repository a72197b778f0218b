"""Tiny real ONNX models for tests (no torch): ``y = x @ W`` with ``W`` stored as external data."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_linear(folder: Path, features: int = 4, classes: int = 3, location: str = "weights.bin") -> Path:
    """A valid model whose weight tensor lives in ``folder/location``; returns the ``.onnx`` path."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    w = np.arange(features * classes, dtype=np.float32).reshape(features, classes) / 10
    init = numpy_helper.from_array(w, "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["logits"])],
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [init],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    if location != "weights.bin":  # point the tensor elsewhere by rewriting the location entry only
        m = onnx.load(str(path), load_external_data=False)
        for e in m.graph.initializer[0].external_data:
            if e.key == "location":
                e.value = location
        path.write_bytes(m.SerializeToString())
    return path
