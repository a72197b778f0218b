"""The read path against a remote tracking server: a real `mlflow server` (SQLite backend, served artifacts) on
loopback, evaluations logged through its HTTP API, ``get_best`` and ``load()`` over HTTP, and a deleted winner."""

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from registry import names
from registry.answer import Answer
from registry.client import Registry
from registry.constraints import Constraints
from registry.settings import Settings
from tests.integration.stack import http_ok, local_stack, wait_for
from tests.registry.conftest import log_one

pytestmark = pytest.mark.integration  # starting the server and logging two models over HTTP: about a minute

TTL_S = 0.5


@pytest.fixture(scope="module")
def http_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """`mlflow server --serve-artifacts` on a free loopback port, as docker-compose.yml runs it (SQLite backend)."""
    root = tmp_path_factory.mktemp("mlflow-http")
    stack = local_stack(root, {})
    with pytest.MonkeyPatch.context() as mp:
        # Outside CI, MLflow's telemetry thread (started at import) pops an environment variable when its config fetch
        # fails (no network here); a `requests` call reading os.environ at that moment dies with KeyError. Off first.
        from mlflow.telemetry import set_telemetry_client

        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        set_telemetry_client()
    try:
        proc = stack.start_mlflow_server(f"sqlite:///{root / 'mlflow.db'}")
        wait_for("mlflow server", lambda: http_ok(f"{stack.mlflow_url}/health"), 300, [proc], every=0.5)
        yield Settings(home=root / "client", tracking_uri=stack.mlflow_url)
    finally:
        stack.stop()


def test_get_best_load_and_a_deleted_winner_over_http(http_store: Settings, tiny_onnx, tmp_path: Path) -> None:
    ds = "http-read"
    winner = log_one(http_store, tiny_onnx, ds, "winner", top1=0.95, top1_ci_low=0.94)
    runner_up = log_one(http_store, tiny_onnx, ds, "runner_up", top1=0.90, top1_ci_low=0.89)
    reg = Registry(settings=http_store, ttl_s=TTL_S, stale_s=0, teams_dir=tmp_path)
    assert reg.index.store.kind == "api"  # MLflow's REST API, no database in reach
    k = Constraints(dataset=ds, min_top1=0.5)

    best = reg.get_best(k)
    assert (best.candidate.variant, best.candidate.version) == ("winner", winner.version)
    assert not best.candidate.artifact_uri.startswith(("/", "file:"))  # checked through the server, not on disk
    assert {v.candidate.variant for v in best.verdicts} == {"winner", "runner_up"}

    session = best.load()  # downloaded through the server's artifact proxy
    _, x, y = tiny_onnx
    out = session.run(None, {session.get_inputs()[0].name: x[:1]})[0]
    np.testing.assert_allclose(out, y[:1], rtol=1e-3, atol=1e-4)

    model = names.registered_model_name(ds)
    client = MlflowClient(http_store.resolved_tracking_uri)
    client.set_registered_model_alias(model, names.team_alias("http"), str(runner_up.version))
    (tmp_path / "http.yaml").write_text(f"name: http\nconstraints: {{dataset: {ds}, min_top1: 0.5}}\n")

    def two_checks() -> None:  # an alias or a deletion is seen at the second check after it (registry.stores.api)
        time.sleep(TTL_S * 1.5)
        reg.get_best(k)  # starts the registered-model read the next check uses
        reg.index.store.caught_up(model)
        time.sleep(TTL_S * 1.5)

    two_checks()
    assert reg.get_champion("http").candidate.version == runner_up.version

    on_host = reg.get_best(Constraints(dataset=ds, target="cpu-host", min_top1=0.5))  # the host's runtimes
    assert (on_host.candidate.version, on_host.runtime, on_host.host) == (winner.version, "cpu", best.candidate.host)
    np.testing.assert_allclose(on_host.predict(x[:1]), y[:1], rtol=1e-3, atol=1e-4)

    client.delete_model_version(model, str(winner.version))
    two_checks()  # the registered model moved after every live version: the deletion seen, a full reload
    for _ in range(3):
        after = reg.get_best(k)
        assert (after.candidate.variant, after.candidate.version) == ("runner_up", runner_up.version)
        assert winner.version not in {c.version for c in reg.candidates(ds)}
        time.sleep(TTL_S / 2)


def test_an_openvino_answer_loads_its_deployed_ir_through_the_server(
    http_store: Settings, tiny_onnx, tmp_path: Path
) -> None:
    """A non-ONNX runtime's artifact is the run's deploy/ folder, downloaded through the server's artifact proxy."""
    from evaluators.runners import get_runner

    ds = "http-host"
    path, x, y = tiny_onnx
    runner = get_runner("openvino-fp32")
    ir = runner.prepare(path, tmp_path / "ov", None)
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    for f in (ir, ir.with_suffix(".bin")):
        (deploy / f.name).write_bytes(f.read_bytes())
    log_one(http_store, tiny_onnx, ds, "slow", "cpu", top1=0.9, latency_p95_ms=9.0, latency_p95_ub_ms=9.5)
    log_one(http_store, tiny_onnx, ds, "ov", "openvino-fp32", artifacts={"deploy": deploy}, top1=0.9)
    reg = Registry(settings=http_store, ttl_s=TTL_S)
    a = reg.get_best(Constraints(dataset=ds, target="cpu-host", objective="latency"))
    assert (a.candidate.variant, a.runtime, a.precision) == ("ov", "openvino-fp32", "fp32")
    assert reg.deployed(a.candidate).name == "model.xml"  # downloaded: the run's artifacts are served, not local
    np.testing.assert_allclose(a.predict(x), runner.predict(runner.load(ir), x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.predict(x), y, rtol=1e-3, atol=1e-4)


class Calls:
    """The REST calls a Registry's client makes, counted (each still goes to the real server)."""

    def __init__(self, client: MlflowClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[tuple[str, int | None]] = []
        methods = ("search_model_versions", "search_registered_models", "get_registered_model")
        registry = client._get_registry_client()  # what Registry.artifact_ok asks for a version's artifact
        for owner, name in [*((client, m) for m in methods), (registry, "get_model_version_download_uri")]:
            real = getattr(owner, name)

            def counted(*args, _real=real, _name=name, **kwargs):  # type: ignore[no-untyped-def]
                self.made.append((_name, kwargs.get("max_results")))
                return _real(*args, **kwargs)

            monkeypatch.setattr(owner, name, counted)

    def take(self) -> list[tuple[str, int | None]]:
        out, self.made = self.made, []
        return out


def test_over_http_a_check_waits_for_one_call_and_a_change_reads_only_what_changed(
    http_store: Settings, tiny_onnx, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing changed: two REST calls, no version read. A new version: one short page, seen at the next check; an
    alias: nothing more read, seen at the check after (the registered model is read for the next check). A deletion
    (the registered model moved after every live version): a full reload; cards rewritten (``add-cards`` marks the
    registered model): a full reload. A deletion behind a newer registration: the
    deleted winner is never answered (its registry entry is asked for), and the next full reload drops it."""
    from registry.stores.api import FIRST_PAGE

    ds = "http-delta"
    log_one(http_store, tiny_onnx, ds, "seed", top1=0.5)
    model = names.registered_model_name(ds)
    writer = MlflowClient(http_store.resolved_tracking_uri)
    seed = writer.get_model_version(model, "1")

    def add(variant: str, top1: float) -> str:
        tags = names.version_tags({**seed.tags, names.TAG_VARIANT: variant}, {"top1": top1, "top1_ci_low": top1 - 0.01,
                                   "latency_p95_ms": 2.0, "size_mb": 0.5, "onnx_parity_ok": 1.0})  # fmt: skip
        logged = seed.model_id or seed.source.rsplit("/", 1)[-1]  # the server checks the source is that logged model
        mv = writer.create_model_version(model, seed.source, run_id=seed.run_id, tags=tags, model_id=logged)
        return str(mv.version)

    for i in range(30):
        add(f"v{i}", 0.6 + i / 1000)
    reg = Registry(settings=http_store, ttl_s=0, stale_s=0)
    k = Constraints(dataset=ds, min_top1=0.55)
    calls = Calls(reg.client, monkeypatch)

    def checked() -> Answer:  # a check, and the registered-model read it started done
        answer = reg.get_best(k)
        reg.index.store.caught_up(model)
        return answer

    reg.candidates(ds)  # the index loaded (a cold get_best alone answers from its operating point's versions)
    assert reg.index.loads == 1 and ("search_model_versions", 200_000) in calls.take()  # the full load: one request
    assert checked().candidate.variant == "v29"  # its registered-model read done: the next check starts its own
    assert ("get_model_version_download_uri", None) in calls.take()  # the answer's artifact, checked once
    for _ in range(3):  # nothing changed: the watermark's two calls, the artifact not asked for again
        assert checked().candidate.variant == "v29"
        made = calls.take()
        assert sorted(name for name, _ in made) == ["search_model_versions", "search_registered_models"], made
    assert (reg.index.loads, reg.index.deltas) == (1, 0)

    def same_as_full_load() -> None:
        full = Registry(settings=http_store, ttl_s=0, stale_s=0)
        got = [(c.version, c.variant, c.metrics) for c in reg.candidates(ds)]
        assert got == [(c.version, c.variant, c.metrics) for c in full.candidates(ds)]
        assert reg.index.snapshot(model).aliases == full.index.snapshot(model).aliases
        assert reg.get_best(k).candidate.version == full.get_best(k).candidate.version

    best = add("best", 0.9)
    assert checked().candidate.version == best and (reg.index.loads, reg.index.deltas) == (1, 1)
    reads = [n for name, n in calls.take() if name == "search_model_versions" and n != 1]
    assert reads == [FIRST_PAGE]  # the change: one short page, not the 32 versions
    same_as_full_load()
    calls.take()
    writer.set_registered_model_alias(model, "team-x", best)
    checked()  # the registered model read for the next check
    assert reg.index.snapshot(model).aliases == {"team-x": best}
    assert [n for name, n in calls.take() if name == "search_model_versions" and n != 1] == []  # no version read
    same_as_full_load()
    assert reg.index.loads == 1
    writer.set_registered_model_tag(model, names.TAG_CARDS_REWRITTEN, "1")  # what add-cards writes first
    checked(), checked()
    assert reg.index.loads == 2

    writer.delete_model_version(model, "5")  # the newest event a deletion: the index reloads
    checked(), checked()
    assert reg.index.loads == 3 and "5" not in {c.version for c in reg.candidates(ds)}
    same_as_full_load()

    writer.delete_model_version(model, best)  # hidden behind a newer registration before the next check
    later = add("later", 0.7)
    time.sleep(0.01)
    answer = reg.get_best(k)
    assert answer.candidate.version == later and answer.candidate.version != best
    reg.index.invalidate()
    assert best not in {c.version for c in reg.candidates(ds)}


def test_a_cold_get_best_over_http_is_never_wrong_and_equals_the_oracle(http_store: Settings, tiny_onnx) -> None:
    """Over REST, on 120 random constraint sets of a messy store, the store's cold answer is the brute-force
    selection's wherever it settles one, and ``get_best`` (the index behind it) always is."""
    import random

    from registry.selection import select
    from tests.registry.test_pushdown import random_constraints, seed_messy_versions

    ds, rng = "http-oracle", random.Random(5)

    def add(dataset: str, variant: str, **metrics: float) -> str:
        return str(log_one(http_store, tiny_onnx, dataset, variant, **metrics).version)

    oracle = Registry(settings=http_store, ttl_s=3600)
    seed_messy_versions(oracle, add, ds, 60, rng)
    candidates, model = oracle.candidates(ds), names.registered_model_name(ds)
    cold = Registry(settings=http_store, ttl_s=3600)
    settled = 0
    for trial in range(120):
        settled += settles_as_the_oracle(cold, model, candidates, random_constraints(ds, rng), trial)
    # the messy seed registers some versions twice from one LoggedModel: their cards need not be its figures, so the
    # LoggedModels answer nothing here (registry.stores.logged.SHARED; test_logged covers the sets they settle)
    assert settled == 0 and cold.index.loads == 0
    k = Constraints(dataset=ds, min_top1=0.5)
    answer = cold.get_best(k)  # through get_best: the index loaded, and answered
    assert answer.candidate.version == select(candidates, k)[0].candidate.version
    deadline = time.monotonic() + 60
    while not cold.index.loaded(model) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cold.index.loads == 1 and cold.get_best(k).candidate.version == answer.candidate.version


def settles_as_the_oracle(reg: Registry, model: str, candidates: list, k: Constraints, trial: int) -> bool:
    """Whether the store settled ``k`` cold; when it did, its answer is the brute-force selection's (None: nothing
    feasible). "Not sure" is allowed: the index answers then."""
    from registry.errors import NoCandidatesError, NoFeasibleModelError
    from registry.selection import select

    try:
        want: str | None = select(candidates, k)[0].candidate.version
    except (NoCandidatesError, NoFeasibleModelError):
        want = None
    got = reg.index.store.best(model, k)
    if got is None:
        return False
    assert (got.value[0].version if got.value else None) == want, (trial, k)
    return True
