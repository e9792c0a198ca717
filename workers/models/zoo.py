"""torchvision's models and their default input shapes, known without importing torchvision.

The driver checks a plan's ``torchvision:<name>`` models against this table: importing
torchvision would cost it seconds (it pulls in torch and ``torch._dynamo``). The table is that of
torchvision ``TABLE_VERSION``; ``tests/test_light_driver.py`` compares it with the installed
torchvision (names, tasks, and shapes against each model's weights metadata), so it stays true.
A name in the table is accepted without any import, whatever torchvision is installed (the
table's version or another: on the H100 machine's image, torchvision 0.26, importing it would cost
about 10 s); only a name the table lacks is looked up in the installed torchvision's own list (one
import), so a newer model still validates. A name the installed torchvision lacks fails its
trials with torchvision's own error.

Default input shapes are per sample (no batch axis): ``(3, 224, 224)`` for image models, except

- ``inception_v3`` (and its quantizable form): ``(3, 299, 299)``, the resolution it is built for;
- video models: ``(3, 16, H, W)`` (channels, frames, height, width), 16 frames, at the crop size
  of their weights (112 for the ResNet-3D family, 224 for the others).

Other models run at 224 whatever their weights' training resolution (EfficientNet-B7's 600), as
infer-orch builds them with random weights and has always fed them 224; that includes the few whose
pretrained weights need more (Swin V2's 256, ViT-H/14's 518), built without weights at 224.
"""

from __future__ import annotations

import functools
import importlib.metadata

#: The torchvision version (major.minor) this table was taken from.
TABLE_VERSION = "0.29"

IMAGE_SHAPE = (3, 224, 224)

#: Model names by torchvision module (``torchvision.models.list_models(module=...)``).
BY_TASK: dict[str, tuple[str, ...]] = {
    "classification": (
        "alexnet", "convnext_base", "convnext_large", "convnext_small", "convnext_tiny", "densenet121",
        "densenet161", "densenet169", "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
        "efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
        "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s", "googlenet", "inception_v3",
        "maxvit_t", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3", "mobilenet_v2",
        "mobilenet_v3_large", "mobilenet_v3_small", "regnet_x_16gf", "regnet_x_1_6gf", "regnet_x_32gf",
        "regnet_x_3_2gf", "regnet_x_400mf", "regnet_x_800mf", "regnet_x_8gf", "regnet_y_128gf",
        "regnet_y_16gf", "regnet_y_1_6gf", "regnet_y_32gf", "regnet_y_3_2gf", "regnet_y_400mf",
        "regnet_y_800mf", "regnet_y_8gf", "resnet101", "resnet152", "resnet18", "resnet34", "resnet50",
        "resnext101_32x8d", "resnext101_64x4d", "resnext50_32x4d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
        "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "squeezenet1_0", "squeezenet1_1", "swin_b", "swin_s",
        "swin_t", "swin_v2_b", "swin_v2_s", "swin_v2_t", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16",
        "vgg16_bn", "vgg19", "vgg19_bn", "vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32",
        "wide_resnet101_2", "wide_resnet50_2",
    ),
    "quantization": (
        "quantized_googlenet", "quantized_inception_v3", "quantized_mobilenet_v2",
        "quantized_mobilenet_v3_large", "quantized_resnet18", "quantized_resnet50",
        "quantized_resnext101_32x8d", "quantized_resnext101_64x4d", "quantized_shufflenet_v2_x0_5",
        "quantized_shufflenet_v2_x1_0", "quantized_shufflenet_v2_x1_5", "quantized_shufflenet_v2_x2_0",
    ),
    "detection": (
        "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_mobilenet_v3_large_fpn",
        "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fcos_resnet50_fpn",
        "keypointrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2",
        "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large",
    ),
    "segmentation": (
        "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet101", "deeplabv3_resnet50", "fcn_resnet101",
        "fcn_resnet50", "lraspp_mobilenet_v3_large",
    ),
    "video": ("mc3_18", "mvit_v1_b", "mvit_v2_s", "r2plus1d_18", "r3d_18", "s3d", "swin3d_b", "swin3d_s", "swin3d_t"),
    "optical_flow": ("raft_large", "raft_small"),
}

CLIP_FRAMES = 16

#: The models whose default input is not IMAGE_SHAPE.
SHAPES: dict[str, tuple[int, ...]] = {
    "inception_v3": (3, 299, 299),
    "quantized_inception_v3": (3, 299, 299),
    **{name: (3, CLIP_FRAMES, 112, 112) for name in ("mc3_18", "r2plus1d_18", "r3d_18")},
    **{name: (3, CLIP_FRAMES, 224, 224) for name in ("mvit_v1_b", "mvit_v2_s", "s3d", "swin3d_b", "swin3d_s",
                                                     "swin3d_t")},
}

#: Every model name of the table, sorted.
NAMES: tuple[str, ...] = tuple(sorted(n for names in BY_TASK.values() for n in names))


def installed_version() -> str | None:
    """The installed torchvision's version (from its package metadata: no import), or None."""
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def torchvision_names() -> tuple[str, ...]:
    """The torchvision model names a plan may use: the table's, or, where the installed torchvision
    is another version than the table's, that torchvision's own list (that one import is then paid)."""
    version = installed_version()
    if version is None or ".".join(version.split("+")[0].split(".")[:2]) == TABLE_VERSION:
        return NAMES
    import torchvision

    return tuple(sorted(torchvision.models.list_models()))


def default_shape(name: str) -> tuple[int, ...]:
    """The per-sample input shape a plan gets for ``torchvision:<name>`` when it declares none."""
    return SHAPES.get(name, IMAGE_SHAPE)
