"""cnnselect's typed candidates table (PostgreSQL): it holds what the index holds, follows every change the watermark
sees, and a reader answers without it whenever it cannot be used (another process updating it, a read-only role)."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from registry import names, pushdown, table
from registry.client import Registry
from registry.constraints import Constraints
from registry.index import dispose_engines, shared_engine
from tests.conftest import fresh_postgres_db
from tests.registry.conftest import BASE, log_one
from tests.registry.test_pushdown import _edit_card, agrees_with_the_oracle, random_constraints, seed_messy_versions


@pytest.fixture(scope="module")
def tracking_uri(postgres_admin_uri: str) -> Iterator[str]:
    """PostgreSQL only: the table needs advisory locks and REPEATABLE READ snapshots (SQLite reads the cards)."""
    yield fresh_postgres_db(postgres_admin_uri)


def table_rows(uri: str, model: str) -> dict[int, dict[str, Any]]:
    cols = ["runner", "precision", "batch", "threads", "fingerprint", "family", "created"]
    cols += [table.column(m) for m in table.METRICS]
    sql = f"SELECT version, {', '.join(cols)} FROM {table.NAME} WHERE name = :name AND usable"
    with shared_engine(uri, "postgresql").connect() as conn:
        return {int(r[0]): dict(zip(cols, r[1:], strict=True)) for r in conn.execute(sa.text(sql), {"name": model})}


def index_rows(reg: Registry, ds: str) -> dict[int, dict[str, Any]]:
    reg.invalidate(ds)
    out = {}
    for c in reg.candidates(ds):
        row: dict[str, Any] = {"runner": c.runner, "precision": c.precision, "batch": c.batch_size}
        row.update(threads=c.threads, fingerprint=c.fingerprint, family=c.family, created=c.created_ms)
        row.update({table.column(m): c.metrics.get(m) for m in table.METRICS})
        out[int(c.version)] = row
    return out


def test_the_table_holds_what_the_index_holds_through_every_change_the_watermark_sees(
    shared_store, add_version, ds: str
) -> None:
    rng = random.Random(3)
    reg = Registry(settings=shared_store, ttl_s=0, stale_s=0)
    seed_messy_versions(reg, add_version, ds, 40, rng)  # deleted, failed, NaN, missing metrics among them
    model, uri = names.registered_model_name(ds), reg.tracking_uri
    k = Constraints(dataset=ds)
    reg.get_best(k)
    assert reg.index.store_queries == {"table": 1} and reg.index.table_syncs == 1
    built = reg.index.table_rows
    assert built == 41  # every version, usable or not: the table tracks which are still pending
    assert table_rows(uri, model) == index_rows(reg, ds)

    client = MlflowClient(uri)
    live = sorted(table_rows(uri, model))
    client.delete_model_version(model, str(live[-1]))  # deleted
    new = add_version(ds, "new", top1=0.99)  # created
    seed = client.get_model_version(model, new)
    pending_tags = {k: v for k, v in seed.tags.items() if k not in (names.TAG_RUN_ID, names.TAG_CARD)}
    pending = client.create_model_version(model, seed.source, run_id=seed.run_id, tags=pending_tags).version
    reg2 = Registry(settings=shared_store, ttl_s=0, stale_s=0)
    assert reg2.get_best(k).candidate.version == new
    assert reg2.index.table_rows == 3  # only the changed versions were read again
    rows = table_rows(uri, model)
    assert live[-1] not in rows and int(new) in rows and int(pending) not in rows
    assert rows == index_rows(reg2, ds)

    client.set_model_version_tag(model, str(pending), names.TAG_RUN_ID, seed.run_id)
    client.set_model_version_tag(model, str(pending), names.TAG_CARD, seed.tags[names.TAG_CARD])  # a card at last
    reg3 = Registry(settings=shared_store, ttl_s=0, stale_s=0)
    reg3.get_best(k)
    assert reg3.index.table_rows == 1 and int(pending) in table_rows(uri, model)
    assert table_rows(uri, model) == index_rows(reg3, ds)
    reg4 = Registry(settings=shared_store, ttl_s=0, stale_s=0)
    reg4.get_best(k)
    assert (reg4.index.table_syncs, reg4.index.store_queries) == (0, {"table": 1})  # current: nothing to write


def test_best_in_the_table_equals_the_oracle_and_so_do_the_cards_without_it(
    shared_store, add_version, ds: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 300-set oracle test (test_pushdown) runs on the table here; this one runs both sources over one store."""
    rng = random.Random(5)
    reg = Registry(settings=shared_store, ttl_s=3600)
    seed_messy_versions(reg, add_version, ds, 60, rng)
    model = names.registered_model_name(ds)
    candidates = reg.candidates(ds)
    monkeypatch.setattr(pushdown, "PAGE", 3)
    monkeypatch.setattr(pushdown, "MAX_PAGES", 100)
    draws = [random_constraints(ds, rng) for _ in range(80)]
    for trial, k in enumerate(draws):
        agrees_with_the_oracle(reg, model, candidates, k, trial)
    monkeypatch.setattr(table, "DIALECTS", ())  # as where the table cannot be used
    for trial, k in enumerate(draws):
        agrees_with_the_oracle(reg, model, candidates, k, trial)
    assert reg.index.store_queries == {"table": 80, "card": 80}


def test_a_reader_never_waits_while_another_process_updates_the_table(shared_store, add_version, ds: str) -> None:
    add_version(ds, "a", top1=0.90)
    k = Constraints(dataset=ds)
    assert Registry(settings=shared_store).get_best(k).candidate.variant == "a"  # the table is current
    add_version(ds, "b", top1=0.95)
    holder = sa.create_engine(shared_store.resolved_tracking_uri)
    with holder.connect() as other:  # another process in the middle of an update
        other.execute(sa.text("SELECT pg_advisory_lock(hashtextextended(:k, 0))"), {"k": table.LOCK})
        reg = Registry(settings=shared_store, ttl_s=0, stale_s=0)
        assert reg.get_best(k).candidate.variant == "b"
        assert reg.index.store_queries == {"card": 1} and reg.index.table_syncs == 0
        other.execute(sa.text("SELECT pg_advisory_unlock_all()"))
    holder.dispose()
    reg = Registry(settings=shared_store, ttl_s=0, stale_s=0)
    assert reg.get_best(k).candidate.variant == "b"
    assert reg.index.store_queries == {"table": 1} and reg.index.table_rows == 1


@pytest.fixture
def reader_role(postgres_admin_uri: str) -> Iterator[tuple[str, str, Any]]:
    """A fresh store and a login role on it with SELECT on MLflow's tables only: (admin URI, role, admin engine)."""
    uri = fresh_postgres_db(postgres_admin_uri)
    role = f"cnnselect_ro_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(uri, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
    yield uri, role, admin
    dispose_engines()
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP OWNED BY {role}"))
        conn.execute(sa.text(f"DROP ROLE {role}"))
    admin.dispose()


def test_a_read_only_role_answers_from_mlflows_tables(
    reader_role, tiny_onnx, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """A production reader with SELECT only: no table can be created, answers still come, a warning says why."""
    from registry.settings import Settings
    from tests.registry.conftest import log_one

    uri, role, admin = reader_role
    log_one(Settings(home=tmp_path, tracking_uri=uri), tiny_onnx, "ro", "a", top1=0.9)
    with admin.connect() as conn:
        conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
    reg = Registry(settings=Settings(home=tmp_path, tracking_uri=uri.replace("postgres@", f"{role}@")))
    with caplog.at_level(logging.WARNING, logger="registry.index"):
        assert reg.get_best(Constraints(dataset="ro")).candidate.variant == "a"
    assert reg.index.store_queries == {"card": 1} and reg.index.table_syncs == 0
    assert any("candidates table is not usable" in r.message for r in caplog.records)
    with admin.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": table.NAME}).scalar() is None


def test_a_role_granted_the_table_but_not_owning_it_keeps_it_up_to_date(reader_role, tiny_onnx, tmp_path) -> None:
    """What the README tells an admin to grant a production reader: the table made once by its owner."""
    from registry.settings import Settings
    from tests.registry.conftest import log_one

    uri, role, admin = reader_role
    writer = Settings(home=tmp_path, tracking_uri=uri)
    log_one(writer, tiny_onnx, "rw", "a", top1=0.9)
    assert Registry(settings=writer).get_best(Constraints(dataset="rw")).candidate.variant == "a"  # made by the owner
    with admin.connect() as conn:
        conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"))
        conn.execute(sa.text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table.NAME}, {table.SYNC} TO {role}"))
    log_one(writer, tiny_onnx, "rw", "b", top1=0.95)
    reg = Registry(settings=Settings(home=tmp_path, tracking_uri=uri.replace("postgres@", f"{role}@")))
    assert reg.get_best(Constraints(dataset="rw")).candidate.variant == "b"
    assert reg.index.store_queries == {"table": 1} and (reg.index.table_syncs, reg.index.table_rows) == (1, 1)


def test_a_model_deleted_and_registered_again_is_rebuilt(shared_store, add_version, ds: str) -> None:
    """Another registered model under the same name, with more versions than the old one: its version 2 is not the
    old, deleted version 2."""
    add_version(ds, "a", top1=0.90)
    b = add_version(ds, "b", top1=0.95)
    add_version(ds, "c", top1=0.93)
    client = MlflowClient(shared_store.resolved_tracking_uri)
    model = names.registered_model_name(ds)
    client.delete_model_version(model, b)
    k = Constraints(dataset=ds)
    assert Registry(settings=shared_store).get_best(k).candidate.variant == "c"
    old = [client.get_model_version(model, v) for v in ("1", "3")]
    client.delete_registered_model(model)
    client.create_registered_model(model)
    for mv, top1 in zip([old[0], old[0], old[1], old[1]], ["0.90", "0.99", "0.93", "0.91"], strict=True):
        tags = names.version_tags({**mv.tags, names.TAG_VARIANT: f"new-{top1}"}, {**BASE, "top1": float(top1)})
        client.create_model_version(model, mv.source, run_id=mv.run_id, tags=tags)
    reg = Registry(settings=shared_store)
    assert reg.get_best(k).candidate.variant == "new-0.99"  # version 2 of the new model
    assert reg.index.store_queries == {"table": 1} and set(table_rows(reg.tracking_uri, model)) == {1, 2, 3, 4}


def test_a_card_edited_by_hand_is_put_back_from_its_run_by_add_cards(shared_store, tiny_onnx, ds: str) -> None:
    """What the table cannot see (MLflow moves no timestamp for a tag), and the remedy: ``add-cards`` writes each
    card from its run (the record) and has the rows rebuilt."""
    from registry.cards import add_cards

    a = log_one(shared_store, tiny_onnx, ds, "a", top1=0.80)
    log_one(shared_store, tiny_onnx, ds, "b", top1=0.90)
    k = Constraints(dataset=ds)
    assert Registry(settings=shared_store).get_best(k).candidate.variant == "b"
    model = names.registered_model_name(ds)
    client = MlflowClient(shared_store.resolved_tracking_uri)
    _edit_card(client, model, str(a.version), "top1", repr(0.99))
    stale = Registry(settings=shared_store)
    assert stale.get_best(k).candidate.variant == "b"  # the table still ranks "a" at 0.80: the documented limit
    assert add_cards(shared_store, ds) == 1  # the card disagreed with its run: put back
    fresh = Registry(settings=shared_store)
    assert fresh.get_best(k).candidate.variant == "b"
    assert fresh.index.store_queries == {"table": 1} and fresh.index.table_rows == 2  # rebuilt
    client.log_metric(a.run_id, "top1", 0.99)  # a figure corrected where it is recorded
    assert add_cards(shared_store, ds) == 1
    assert Registry(settings=shared_store).get_best(k).candidate.variant == "a"


def test_a_version_with_an_absurd_operating_point_neither_fails_the_table_nor_matches(
    shared_store, add_version, ds: str
) -> None:
    add_version(ds, "a", top1=0.90)
    odd = add_version(ds, "odd", top1=0.99)
    model = names.registered_model_name(ds)
    client = MlflowClient(shared_store.resolved_tracking_uri)
    _edit_card(client, model, odd, "point", "cpu/fp32/99999999999/all")  # before the table's first read: an INTEGER
    # column cannot hold it
    reg = Registry(settings=shared_store)
    assert reg.get_best(Constraints(dataset=ds)).candidate.variant == "a"
    assert reg.index.store_queries == {"table": 1} and reg.index.table_rows == 2
