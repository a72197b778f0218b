"""What ``get_best`` returns: the chosen version, why, and the deployed artifact ready to run.

The answer names the runtime (the runner it was measured on), its precision, threads and host. ``load()`` gives a
session of that runtime on the artifact that runtime deploys: the version's ONNX model for the onnxruntime runners
(``cpu``, ``edge``, ``gpu-ort``, ``gpu-trt``), else the files the run logged under ``deploy/`` (OpenVINO IR, an
ExecuTorch program, a LiteRT model, the torch manifest and weights), read in place when local, downloaded through
MLflow's artifact API when not. ``predict(x)`` runs a batch through the runner's own ``predict``, so code that serves
the answer reads the same whatever the runtime.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from registry import names
from registry.constraints import Constraints
from registry.selection import Candidate, Verdict, judge, rank, rank_key

if TYPE_CHECKING:
    from registry.client import Registry


@dataclass
class Answer:
    """The chosen version: its ``models:/`` URI, runtime, metrics and the reasons; ``load()`` for a ready session."""

    candidate: Candidate
    verdict: Verdict
    _pool: list[Candidate] | None = field(repr=False)  # None: answered in the store; the index is read on first use
    constraints: Constraints
    _registry: Registry = field(repr=False)
    _verdicts: list[Verdict] | None = field(default=None, repr=False)
    _loaded: tuple[Any, Any] | None = field(default=None, repr=False, compare=False)  # (runner, session) of predict
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def pool(self) -> list[Candidate]:
        """Every candidate at the constraints' operating point and fingerprint, in rank order.

        For a host target, every runner's pool on the chosen candidate's host, merged. An answer computed in the
        store reads its pool from the index on first use: the store as it is then, with the chosen candidate kept in
        it (at its rank) should it have changed since, so the answer explains itself.
        """
        if self._pool is None:
            from registry.hosts import merged, runner_constraints

            k = self.constraints
            snap = self._registry.index.snapshot(names.registered_model_name(k.dataset))
            if k.on_host:
                subs = runner_constraints(k, self.candidate.host)
                pool = merged([snap.ranked_pool(s.model_dump_json(), s) for s in subs])
            else:
                pool = snap.ranked_pool(k.model_dump_json(), k).candidates
            self._pool = pool if self.candidate in pool else sorted([*pool, self.candidate], key=rank_key(k))
        return self._pool

    @property
    def uri(self) -> str:
        return self.candidate.uri

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.candidate.metrics)

    @property
    def runtime(self) -> str:
        """The runner the answer was measured on, and deploys to (``openvino-int8``, ``cpu``, ...)."""
        return self.candidate.runner

    @property
    def precision(self) -> str:
        return self.candidate.precision

    @property
    def threads(self) -> str:
        """The threads it was measured with: a count, or the runner's default (``all``, ``default``)."""
        return self.candidate.threads

    @property
    def host(self) -> str:
        """The hardware-only id of the machine it was measured on ("" when its card has none)."""
        return self.candidate.host

    @property
    def verdicts(self) -> list[Verdict]:
        """Every candidate of the pool judged (computed on first use: ``get_best`` itself judges only a few)."""
        if self._verdicts is None:
            self._verdicts = [judge(c, self.constraints) for c in self.pool]
        return self._verdicts

    def explained(self) -> list[Verdict]:
        """The chosen verdict, then the other feasible ones best first, then the rest: the order ``explain`` says."""
        feasible = [v for v in rank(self.verdicts, self.constraints) if v.label == "feasible"]
        others = [v for v in self.verdicts if v.label != "feasible"]
        return [self.verdict, *(v for v in feasible if v.candidate.version != self.candidate.version), *others]

    def deployment(self) -> str:
        """``runtime openvino-int8, precision int8, threads all, host cpu-...``: what the answer deploys, and where."""
        return f"runtime {self.runtime}, precision {self.precision}, threads {self.threads}, host {self.host or '-'}"

    def explain(self) -> str:
        chosen, *rest = self.explained()
        on_host = self.constraints.on_host
        lines = [f"chosen: {chosen.describe()} ({self.uri})", f"  {self.deployment()}"]
        lines += [f"  {v.label}: {v.describe()}" + (f" (on {v.candidate.runner})" if on_host else "") for v in rest]
        return "\n".join(lines)

    def load(self) -> Any:
        """A ready session of the answer's runtime on its deployed artifact, at the runner's measured settings.

        An onnxruntime ``InferenceSession`` for the onnxruntime runners, OpenVINO's compiled model and request, an
        ExecuTorch method, a LiteRT interpreter, a torch module: run it with :meth:`predict` to stay runtime-blind.
        """
        return self._registry.load(self.candidate)

    def predict(self, x: Any) -> Any:
        """Float32 NCHW images (what :meth:`preprocess` returns) to logits, through the runner's own ``predict``.

        The session is loaded on first use and kept; calls are serialized (not every runtime's session is
        thread-safe): threads that need their own call :meth:`load` each.
        """
        with self._lock:
            if self._loaded is None:
                self._loaded = self._registry.runner_session(self.candidate)
            runner, session = self._loaded
            return runner.predict(session, x)

    def preprocess(self, images: Any) -> Any:
        """Photos (paths or PIL images) to exactly the float32 NCHW tensors the measured artifact saw.

        timm's eval transform recorded with the version (``cnnselect.preprocess``): resize, centre crop, interpolation,
        mean and std of the pretrained tag at the measured resolution, after the same decoding (EXIF, 16-bit, alpha).
        """
        return self._registry.preprocessing(self.candidate)(images)


def local_dir(uri: str) -> str | None:
    """The folder an artifact location names on this machine (a path or ``file:`` URI), else None (remote)."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return unquote(parsed.path)
    if parsed.scheme == "" and os.path.isabs(uri):
        return uri
    return None
