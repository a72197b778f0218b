import subprocess
import sys

import pytest

import catalog
from catalog import Deployment, Family, UnknownNameError, get_entry, get_profile, list_entries
from tests.conftest import REPO

GUIDE_VARIANTS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    *[f"efficientnet_b{i}" for i in range(5)], *[f"tf_efficientnet_b{i}" for i in (5, 6, 7)],
    *[f"tf_efficientnet_lite{i}" for i in range(5)],
    "mobilenetv2_100", "mobilenetv3_small_100", "mobilenetv3_large_100", "inception_v3", "inception_v4",
    "densenet121", "densenet169", "densenet201", "vgg16", "vgg19", "convnext_tiny", "convnext_small", "convnext_base",
    "vit_small_patch16_224", "vit_base_patch16_224",
]  # fmt: skip


@pytest.mark.parametrize("arch", GUIDE_VARIANTS)
def test_every_guide_variant_is_catalogued(arch: str) -> None:
    assert get_entry(arch).architecture == arch


def test_every_entry_resolves_in_installed_timm() -> None:
    import timm

    missing = [e.name for e in list_entries() if not timm.is_model(e.architecture)]
    assert not missing, f"unknown to timm {timm.__version__}: {missing}"
    no_tag = [e.name for e in list_entries() if e.pretrained_tag and e.name not in timm.list_pretrained(e.architecture)]
    assert not no_tag, f"pretrained tags unknown to timm: {no_tag}"


def test_published_figures_are_sourced_and_named_apart() -> None:
    for e in list_entries():
        if e.family is Family.TEST:
            continue
        assert e.published is not None, e.name
        assert e.published.source
        assert e.published.gflops == pytest.approx(2 * e.published.gmacs)
        assert 0 < e.published.top1 < 100 and 0 < e.published.params_m < 1000


def test_guide_figures_match_catalog() -> None:
    # the guide's "GFLOPs" for ResNet-50 (4.1) are MACs: the catalog must hold 4.1 as gmacs, not gflops
    assert get_entry("resnet50").published.gmacs == pytest.approx(4.1, rel=0.02)
    assert get_entry("mobilenetv3_large_100").published.gmacs == pytest.approx(0.22, rel=0.1)


def test_deployment_tags_follow_the_guide() -> None:
    edge = {e.architecture for e in list_entries(deployment=Deployment.EDGE)}
    assert {"mobilenetv3_small_100", "tf_efficientnet_lite0"} <= edge
    assert "vgg16" not in edge
    assert Deployment.MOBILE in get_entry("mobilenetv3_small_100").deployments


def test_unknown_name_suggests_and_lists() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown catalog entry 'resnet81'.*Did you mean.*resnet18"):
        get_entry("resnet81")


def test_a_typo_names_the_close_entries_not_the_whole_catalog() -> None:
    with pytest.raises(UnknownNameError) as err:
        get_entry("efficientnet_b9")
    assert "Did you mean 'efficientnet_b4.ra2_in1k'" in str(err.value) and "convnext_base" not in str(err.value)
    assert f"Available: {len(list_entries())} names (`cnnselect catalog list` shows them)" in str(err.value)
    with pytest.raises(UnknownNameError, match=r"unknown catalog entry 'zzqqxx'. Available: convnext_base"):
        get_entry("zzqqxx")  # nothing close: every name


def test_profiles() -> None:
    demo = get_profile("demo")
    assert len({get_entry(m).family for m in demo.models}) >= 4
    assert set(get_profile("full").models) >= {e.name for e in list_entries() if e.family is not Family.TEST}
    with pytest.raises(UnknownNameError, match="Available: demo, full, smoke|Available:"):
        get_profile("nope")
    assert set(catalog.list_profiles()) == {"demo", "smoke", "full"}


def test_importing_catalog_registry_evaluators_stays_light() -> None:
    code = (
        "import sys, catalog, registry, evaluators;"
        "heavy = [m for m in ('torch', 'timm', 'mlflow', 'onnxruntime') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("pkg", ["catalog", "evaluators", "registry", "cnnselect"])
def test_packages_resolve_inside_the_repo(pkg: str) -> None:
    # PyPI has unrelated packages called `registry` and `evaluators`: ours must win
    mod = __import__(pkg)
    assert REPO in __import__("pathlib").Path(mod.__file__).resolve().parents
