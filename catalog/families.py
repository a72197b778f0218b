"""The catalog's variants with their published reference figures.

Plain data: imports nothing but ``catalog.entries`` (no torch, no timm).

Where the figures come from (see docs/catalog-sources.md for the row of every entry):

* ``top1`` (ImageNet-1k top-1, percent), ``params_m`` (millions) and ``input_size`` are the
  ``top1``, ``param_count`` and ``img_size`` columns of timm's ``results/results-imagenet.csv``
  (huggingface/pytorch-image-models, commit 0173a139a2c66db3a41ebfe1d8ac4fb02483642e), row ``arch.tag``.
* ``gmacs`` is the ``infer_gmacs`` column of timm's
  ``results/benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv`` (commit 7479d451a6dfd8af27f941b8e82a7402461fae80),
  row ``arch`` at ``infer_img_size == input_size``.  These are multiply-accumulates, not FLOPs
  (``PublishedFigures.gflops`` doubles them).  The benchmark lists one row per architecture and resolution,
  so the MACs do not depend on the pretrained tag, only on the resolution.
* ``input_size`` is the resolution at which timm evaluated the weights for results-imagenet.csv.  For
  most entries that is the pretrained config's ``input_size``; for ``efficientnet_b1..b4`` (timm-trained) and
  ``convnext_*.fb_in1k`` it is the config's ``test_input_size`` (the train size is smaller), and the
  GMACs are taken at that same evaluation size so that the three figures describe one operating point.

No number here is estimated or rounded beyond what the source file prints.
"""

from __future__ import annotations

from catalog.entries import CatalogEntry, Deployment, Family, PublishedFigures

__all__ = ["ENTRIES"]

_RESULTS = "results/results-imagenet.csv"
_BENCH = "results/benchmark-infer-amp-nchw-pt240-cu124-rtx3090.csv"
_TIMM = f"timm {_RESULTS} + {_BENCH}"
# resnet34.tv_in1k has no row in the stored results-imagenet.csv.  timm's resnet34.tv_in1k *is* torchvision's
# ResNet34_Weights.IMAGENET1K_V1, so top1/params come from torchvision's published table (acc@1 73.314,
# num_params 21797672; it also agrees with timm's older results/results-all.csv row
# ``tv_resnet34,73.314,...,21.8,224``), and the GMACs from the timm benchmark row ``resnet34,224``
# (3.67; torchvision's "GFLOPS" column says 3.66, really MACs).
_TV_RESNET34 = (
    "torchvision ResNet34_Weights.IMAGENET1K_V1 table (top1, params; "
    "https://pytorch.org/vision/stable/models/generated/torchvision.models.resnet34) + "
    f"timm {_BENCH} (gmacs)"
)

_CLOUD = frozenset({Deployment.CLOUD})
_CLOUD_EDGE = frozenset({Deployment.CLOUD, Deployment.EDGE})
_EDGE_MOBILE = frozenset({Deployment.EDGE, Deployment.MOBILE})


def _e(
    name: str,
    family: Family,
    size: int,
    params_m: float,
    gmacs: float,
    top1: float,
    source: str,
    deployments: frozenset[Deployment],
    description: str,
) -> CatalogEntry:
    """One entry with published figures."""
    return CatalogEntry(
        name=name,
        family=family,
        input_size=size,
        published=PublishedFigures(params_m=params_m, gmacs=gmacs, top1=top1, source=source),
        deployments=deployments,
        description=description,
    )


def _test(name: str, size: int, description: str) -> CatalogEntry:
    """One of timm's tiny unit-test architectures: no published figures, no deployment target."""
    return CatalogEntry(
        name=name,
        family=Family.TEST,
        input_size=size,
        published=None,
        deployments=frozenset(),
        description=description,
    )


ENTRIES: tuple[CatalogEntry, ...] = (
    # --- ResNet (torchvision weights) -----------------------------------------------------------------
    _e("resnet18.tv_in1k", Family.RESNET, 224, 11.69, 1.82, 69.760, _TIMM, _CLOUD_EDGE, "Residual baseline, 18 layers"),
    _e(
        "resnet34.tv_in1k", Family.RESNET, 224, 21.8, 3.67, 73.314, _TV_RESNET34, _CLOUD, "Residual baseline, 34 layers"
    ),
    _e(
        "resnet50.tv_in1k",
        Family.RESNET,
        224,
        25.56,
        4.11,
        76.130,
        _TIMM,
        _CLOUD,
        "Residual bottleneck network, 50 layers",
    ),
    _e(
        "resnet101.tv_in1k",
        Family.RESNET,
        224,
        44.55,
        7.83,
        77.376,
        _TIMM,
        _CLOUD,
        "Residual bottleneck network, 101 layers",
    ),
    _e(
        "resnet152.tv_in1k",
        Family.RESNET,
        224,
        60.19,
        11.56,
        78.322,
        _TIMM,
        _CLOUD,
        "Residual bottleneck network, 152 layers",
    ),
    # --- EfficientNet B0..B7 ------------------------------------------------------------------------
    _e(
        "efficientnet_b0.ra_in1k",
        Family.EFFICIENTNET,
        224,
        5.29,
        0.4,
        77.694,
        _TIMM,
        _CLOUD_EDGE,
        "Compound-scaled EfficientNet baseline B0",
    ),
    # b1..b4 (timm-trained): results row is at the config's test_input_size (b1 224->256, b2 256->288,
    # b3 288->320, b4 320->384); GMACs taken at that same size.
    _e(
        "efficientnet_b1.ft_in1k",
        Family.EFFICIENTNET,
        256,
        7.79,
        0.77,
        78.800,
        _TIMM,
        _CLOUD,
        "EfficientNet B1, compound scaled from B0",
    ),
    _e(
        "efficientnet_b2.ra_in1k",
        Family.EFFICIENTNET,
        288,
        9.11,
        1.12,
        80.610,
        _TIMM,
        _CLOUD,
        "EfficientNet B2, compound scaled from B0",
    ),
    _e(
        "efficientnet_b3.ra2_in1k",
        Family.EFFICIENTNET,
        320,
        12.23,
        2.01,
        82.242,
        _TIMM,
        _CLOUD,
        "EfficientNet B3, compound scaled from B0",
    ),
    _e(
        "efficientnet_b4.ra2_in1k",
        Family.EFFICIENTNET,
        384,
        19.34,
        4.51,
        83.414,
        _TIMM,
        _CLOUD,
        "EfficientNet B4, compound scaled from B0",
    ),
    # B5..B7: TF-ported Google weights.  b5 has a plain ``.in1k`` tag; b6/b7 have no ``.in1k`` tag, so the
    # ImageNet-1k-only AutoAugment weights ``.aa_in1k`` (the original paper's recipe) are used instead of
    # ``.ap_in1k`` (AdvProp) or ``.ns_jft_in1k`` (extra JFT data).
    _e(
        "tf_efficientnet_b5.in1k",
        Family.EFFICIENTNET,
        456,
        30.39,
        10.46,
        83.176,
        _TIMM,
        _CLOUD,
        "EfficientNet B5 (TF-ported weights)",
    ),
    _e(
        "tf_efficientnet_b6.aa_in1k",
        Family.EFFICIENTNET,
        528,
        43.04,
        19.4,
        84.116,
        _TIMM,
        _CLOUD,
        "EfficientNet B6 (TF-ported AutoAugment weights)",
    ),
    _e(
        "tf_efficientnet_b7.aa_in1k",
        Family.EFFICIENTNET,
        600,
        66.35,
        38.33,
        84.414,
        _TIMM,
        _CLOUD,
        "EfficientNet B7 (TF-ported AutoAugment weights)",
    ),
    # --- EfficientNet-Lite ---------------------------------------------------------------------------
    _e(
        "tf_efficientnet_lite0.in1k",
        Family.EFFICIENTNET_LITE,
        224,
        4.65,
        0.4,
        74.830,
        _TIMM,
        _EDGE_MOBILE,
        "EfficientNet-Lite0, edge-friendly (no SE, ReLU6)",
    ),
    _e(
        "tf_efficientnet_lite1.in1k",
        Family.EFFICIENTNET_LITE,
        240,
        5.42,
        0.62,
        76.644,
        _TIMM,
        _EDGE_MOBILE,
        "EfficientNet-Lite1, edge-friendly",
    ),
    _e(
        "tf_efficientnet_lite2.in1k",
        Family.EFFICIENTNET_LITE,
        260,
        6.09,
        0.89,
        77.464,
        _TIMM,
        _EDGE_MOBILE,
        "EfficientNet-Lite2, edge-friendly",
    ),
    _e(
        "tf_efficientnet_lite3.in1k",
        Family.EFFICIENTNET_LITE,
        300,
        8.20,
        1.65,
        79.808,
        _TIMM,
        _EDGE_MOBILE,
        "EfficientNet-Lite3, edge-friendly",
    ),
    _e(
        "tf_efficientnet_lite4.in1k",
        Family.EFFICIENTNET_LITE,
        380,
        13.01,
        4.04,
        81.532,
        _TIMM,
        _EDGE_MOBILE,
        "EfficientNet-Lite4, edge-friendly",
    ),
    _e(
        "efficientnet_lite0.ra_in1k",
        Family.EFFICIENTNET_LITE,
        224,
        4.65,
        0.4,
        75.480,
        _TIMM,
        _EDGE_MOBILE,
        "EfficientNet-Lite0 (timm RandAugment weights)",
    ),
    # --- MobileNetV2 ---------------------------------------------------------------------------------
    _e(
        "mobilenetv2_100.ra_in1k",
        Family.MOBILENET_V2,
        224,
        3.50,
        0.31,
        72.976,
        _TIMM,
        _EDGE_MOBILE,
        "Inverted-residual mobile network, width 1.0",
    ),
    _e(
        "mobilenetv2_140.ra_in1k",
        Family.MOBILENET_V2,
        224,
        6.11,
        0.6,
        76.520,
        _TIMM,
        _EDGE_MOBILE,
        "Inverted-residual mobile network, width 1.4",
    ),
    # --- MobileNetV3 ---------------------------------------------------------------------------------
    _e(
        "mobilenetv3_small_100.lamb_in1k",
        Family.MOBILENET_V3,
        224,
        2.54,
        0.06,
        67.656,
        _TIMM,
        _EDGE_MOBILE,
        "MobileNetV3-Small, fastest mobile option",
    ),
    _e(
        "mobilenetv3_large_100.ra_in1k",
        Family.MOBILENET_V3,
        224,
        5.48,
        0.23,
        75.766,
        _TIMM,
        _EDGE_MOBILE,
        "MobileNetV3-Large, balanced mobile option",
    ),
    # --- Inception -----------------------------------------------------------------------------------
    # inception_v3 param_count 23.83 is timm's model without the auxiliary classifier (torchvision quotes 27.16M
    # with it).
    _e("inception_v3.tv_in1k", Family.INCEPTION, 299, 23.83, 5.73, 77.434, _TIMM, _CLOUD, "Multi-branch Inception v3"),
    _e("inception_v4.tf_in1k", Family.INCEPTION, 299, 42.68, 12.28, 80.156, _TIMM, _CLOUD, "Multi-branch Inception v4"),
    # --- DenseNet ------------------------------------------------------------------------------------
    _e(
        "densenet121.tv_in1k",
        Family.DENSENET,
        224,
        7.98,
        2.87,
        74.764,
        _TIMM,
        _CLOUD,
        "Densely connected network, 121 layers",
    ),
    _e(
        "densenet169.tv_in1k",
        Family.DENSENET,
        224,
        14.15,
        3.4,
        75.900,
        _TIMM,
        _CLOUD,
        "Densely connected network, 169 layers",
    ),
    _e(
        "densenet201.tv_in1k",
        Family.DENSENET,
        224,
        20.01,
        4.34,
        77.286,
        _TIMM,
        _CLOUD,
        "Densely connected network, 201 layers",
    ),
    # --- VGG -----------------------------------------------------------------------------------------
    _e(
        "vgg16.tv_in1k",
        Family.VGG,
        224,
        138.36,
        15.47,
        71.592,
        _TIMM,
        _CLOUD,
        "Plain 3x3-conv stack, 16 layers (historical)",
    ),
    _e(
        "vgg19.tv_in1k",
        Family.VGG,
        224,
        143.67,
        19.63,
        72.378,
        _TIMM,
        _CLOUD,
        "Plain 3x3-conv stack, 19 layers (historical)",
    ),
    # --- ConvNeXt ------------------------------------------------------------------------------------
    # fb_in1k weights are trained at 224; timm's results row evaluates them at test_input_size 288 (crop 1.0),
    # and the GMACs are the benchmark's 288 row (224 rows: tiny 4.47, small 8.71, base 15.38).
    _e(
        "convnext_tiny.fb_in1k",
        Family.CONVNEXT,
        288,
        28.59,
        7.39,
        82.698,
        _TIMM,
        _CLOUD,
        "Modernised ResNet-style ConvNet, tiny",
    ),
    _e(
        "convnext_small.fb_in1k",
        Family.CONVNEXT,
        288,
        50.22,
        14.39,
        83.700,
        _TIMM,
        _CLOUD,
        "Modernised ResNet-style ConvNet, small",
    ),
    _e(
        "convnext_base.fb_in1k",
        Family.CONVNEXT,
        288,
        88.59,
        25.43,
        84.428,
        _TIMM,
        _CLOUD,
        "Modernised ResNet-style ConvNet, base",
    ),
    # --- ViT (non-CNN reference) ---------------------------------------------------------------------
    _e(
        "vit_small_patch16_224.augreg_in21k_ft_in1k",
        Family.VIT,
        224,
        22.05,
        4.61,
        81.384,
        _TIMM,
        _CLOUD,
        "Vision Transformer S/16 (non-CNN reference)",
    ),
    _e(
        "vit_base_patch16_224.augreg2_in21k_ft_in1k",
        Family.VIT,
        224,
        86.57,
        17.58,
        85.096,
        _TIMM,
        _CLOUD,
        "Vision Transformer B/16 (non-CNN reference)",
    ),
    # --- timm unit-test architectures (no published ImageNet figures in results-imagenet.csv) --------
    # input_size 160 from the pretrained configs: test_efficientnet.r160_in1k has input_size=(3, 160, 160) in
    # timm/models/efficientnet.py; test_resnet.r160_in1k's model card says "Image size: 160 x 160"; test_vit has a
    # 160 row in the benchmark CSV (r160 tag).  published=None: these have no row in results-imagenet.csv.
    _test("test_resnet.r160_in1k", 160, "timm tiny test ResNet (unit tests only)"),
    _test("test_efficientnet.r160_in1k", 160, "timm tiny test EfficientNet (unit tests only)"),
    _test("test_vit.r160_in1k", 160, "timm tiny test ViT (unit tests only)"),
)
