"""What the command line adds to an error so that it says what would have been valid."""

from __future__ import annotations


def dataset_hint(dataset: str) -> tuple[str, list[str]]:
    """When nothing at all is measured for ``dataset``: a sentence naming the closest measured datasets, and them."""
    import difflib

    known = measured_datasets()
    if dataset in known:
        return "", known
    lower = {k.lower(): k for k in known}
    close = [lower[c] for c in difflib.get_close_matches(dataset.lower(), list(lower), n=3, cutoff=0.5)]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listed = ", ".join(known) or "(none)"
    return f"Nothing at all is measured for dataset {dataset!r}.{hint} Datasets with measurements: {listed}", known


def measured_datasets() -> list[str]:
    from mlflow import MlflowClient

    from registry.settings import Settings

    client = MlflowClient(Settings().resolved_tracking_uri)
    found = client.search_experiments(filter_string="name LIKE 'cnnselect/%'")
    return sorted(e.name.split("/", 1)[1] for e in found if e.name.count("/") == 1 and "promotions" not in e.name)


def usage_message(exc: BaseException) -> str:
    """A validation error as one line per wrong key (pydantic's own text adds types, URLs and its wrapping)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        wrong = [
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        return f"invalid {exc.title}: " + "; ".join(wrong)
    return str(exc).strip('"')
