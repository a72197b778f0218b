"""Cold start: the selection guide's rule-based shortlist, for a team nothing measured satisfies yet.

Step 2 of the guide, as a function of the constraints: deployment target first, then latency (edge) or dataset size
(cloud); the shortlist is then filtered by the team's families and published parameter/GMAC budgets.
"""

from __future__ import annotations

from registry.constraints import Constraints

# the guide's decision tree, leaf -> catalog names in the guide's order of preference
EDGE_REALTIME = ["mobilenetv3_small_100.lamb_in1k", "efficientnet_lite0.ra_in1k"]  # < 10 ms
EDGE_MEDIUM = ["mobilenetv3_large_100.ra_in1k", "tf_efficientnet_lite2.in1k"]  # 10-50 ms
EDGE_RELAXED = ["efficientnet_b0.ra_in1k", "resnet18.tv_in1k"]  # > 50 ms or no latency budget
MOBILE = ["mobilenetv3_small_100.lamb_in1k", "mobilenetv3_large_100.ra_in1k"]  # + INT8
CLOUD_SMALL = ["resnet18.tv_in1k", "efficientnet_b0.ra_in1k"]  # < 10k images
CLOUD_MEDIUM = ["resnet50.tv_in1k", "efficientnet_b2.ra_in1k"]  # 10k-100k
CLOUD_LARGE = ["resnet101.tv_in1k", "efficientnet_b4.ra2_in1k", "vit_base_patch16_224.augreg2_in21k_ft_in1k"]
FALLBACK = ["mobilenetv3_small_100.lamb_in1k", "efficientnet_lite0.ra_in1k", "resnet18.tv_in1k"]


def guide_leaf(k: Constraints) -> tuple[str, list[str]]:
    """The decision-tree leaf for ``k``: (why, catalog names)."""
    dep = k.effective_deployment
    if dep == "mobile":
        return "mobile: MobileNetV3-Small (fastest), MobileNetV3-Large (balanced), INT8", MOBILE
    if dep == "edge":
        lat = k.max_latency_ms
        if lat is not None and lat < 10:
            return "edge, real-time (< 10 ms): MobileNetV3-Small, EfficientNet-Lite0", EDGE_REALTIME
        if lat is not None and lat <= 50:
            return "edge, medium latency (10-50 ms): MobileNetV3-Large, EfficientNet-Lite2", EDGE_MEDIUM
        return "edge, relaxed latency (> 50 ms): EfficientNet-B0, ResNet-18", EDGE_RELAXED
    n = k.dataset_size
    if n is None or n < 10_000:
        return "cloud, small dataset (< 10k images, or unknown): ResNet-18, EfficientNet-B0", CLOUD_SMALL
    if n <= 100_000:
        return "cloud, medium dataset (10k-100k): ResNet-50, EfficientNet-B2", CLOUD_MEDIUM
    return "cloud, large dataset (> 100k): ResNet-101, EfficientNet-B4, ViT", CLOUD_LARGE


def recommend(k: Constraints) -> list[str]:
    """Catalog names to measure first: the guide's leaf, filtered by families and the published size budgets.

    When the filters leave nothing, the guide's smallest models that pass them are offered instead; an empty list
    means no catalog entry can meet the declared families and budgets at all.
    """
    from catalog import get_entry

    _, names = guide_leaf(k)

    def allowed(name: str) -> bool:
        e = get_entry(name)
        pub = e.published
        if k.families is not None and e.family.value not in k.families:
            return False
        if pub is not None and k.max_params_m is not None and pub.params_m > k.max_params_m:
            return False
        return not (pub is not None and k.max_gmacs is not None and pub.gmacs > k.max_gmacs)

    picked = [n for n in names if allowed(n)]
    return picked or [n for n in dict.fromkeys(FALLBACK + EDGE_MEDIUM + CLOUD_SMALL) if allowed(n)]
