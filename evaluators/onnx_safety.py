"""Refuse ONNX files whose external data would be read from outside the model's folder, before onnxruntime opens them.

An ONNX model names its external tensor files in ``external_data`` entries (``location``). A crafted model can point
them at ``../../etc/passwd``, an absolute path, or a symlink or hardlink inside the folder that leads elsewhere
(CVE-2022-25882, CVE-2024-27318, CVE-2026-27489, CVE-2026-34446, CVE-2026-34447). onnxruntime reads those files
itself, so the check runs on the protobuf alone (``load_external_data=False``) and on the paths as the OS resolves
them, and raises before any session is created.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any


class UnsafeModelError(ValueError):
    """An ONNX model that would read data from outside its own folder (or is not a readable ONNX file)."""


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for g in attr.graphs:
                yield from _graph_tensors(g)


def external_locations(model: Any) -> list[str]:
    """Every ``location`` named by a tensor stored outside the protobuf (graph, subgraphs and functions)."""
    import onnx

    tensors = list(_graph_tensors(model.graph))
    for fn in model.functions:
        for node in fn.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
                tensors.extend(attr.tensors)
    out = []
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            entries = {e.key: e.value for e in t.external_data}
            out.append(entries.get("location", ""))
    return out


def check_location(location: str, model_dir: Path) -> Path:
    """The file ``location`` names inside ``model_dir``; ``UnsafeModelError`` for anything that could leave it."""
    base = model_dir.resolve(strict=True)
    if not location or "\x00" in location:
        raise UnsafeModelError(f"external data location {location!r} is empty or holds a NUL byte")
    if (
        PurePosixPath(location).is_absolute()
        or PureWindowsPath(location).is_absolute()
        or PureWindowsPath(location).drive
    ):
        raise UnsafeModelError(f"external data location {location!r} is absolute; only files beside the model are read")
    parts = PurePosixPath(location.replace("\\", "/")).parts
    if ".." in parts:
        raise UnsafeModelError(f"external data location {location!r} climbs out of the model folder ('..')")
    target = base.joinpath(*parts)
    step = base
    for part in parts:  # no symlink anywhere on the way (a parent-directory symlink escapes too)
        step = step / part
        if step.is_symlink():
            raise UnsafeModelError(f"external data location {location!r} goes through a symlink ({step})")
    resolved = target.resolve(strict=False)
    if not resolved.is_relative_to(base):
        raise UnsafeModelError(f"external data location {location!r} resolves to {resolved}, outside {base}")
    if resolved.exists():
        st = os.stat(resolved, follow_symlinks=False)
        if not resolved.is_file():
            raise UnsafeModelError(f"external data location {location!r} is not a regular file")
        if st.st_nlink > 1:
            raise UnsafeModelError(f"external data location {location!r} is a hardlink ({st.st_nlink} links); refused")
    return resolved


def check_onnx_file(path: str | Path) -> list[Path]:
    """Check an ``.onnx`` file's external data before any runtime sees it; returns the data files it will read."""
    import onnx

    path = Path(path)
    if path.is_symlink():
        raise UnsafeModelError(f"{path} is a symlink; load the model from its own folder")
    if not path.is_file():
        raise UnsafeModelError(f"{path} is not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf decode errors have several types
        raise UnsafeModelError(f"{path} is not a readable ONNX model: {type(exc).__name__}: {exc}") from exc
    return [check_location(loc, path.parent) for loc in sorted(set(external_locations(model)))]
