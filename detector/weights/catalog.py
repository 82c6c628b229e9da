"""The weights the project knows by name: where each comes from, its SHA-256 and what it becomes.

``kind`` says how a file becomes weights of ours:
    "torchvision-ssdlite": a torchvision ``ssdlite320_mobilenet_v3_large`` state dict, converted into a detector
        checkpoint of ours (torchvision layout, 90 COCO-id class slots, torchvision's post-processing);
    "torchvision-classifier": a torchvision MobileNetV3 ImageNet classifier state dict; only its feature layers
        are used (``train_coco.py --init``), as the backbone of a detector;
    "tf-frozen-graph": a TF Object Detection API zoo archive (``.tar.gz``) of the paper's own models, whose
        ``frozen_inference_graph.pb`` is converted as ``tools/convert.py GRAPH`` converts it;
    "checkpoint": a checkpoint of ours.
File names are the publishers' (torchvision's ``NAME-<first 8 hex digits of the SHA-256>.pth``, the zoo's
archive names), so a file torchvision or a zoo user already downloaded into ``$TORCH_HOME/hub/checkpoints/`` is
found and used as it is. TF publishes no checksums for its zoo: those entries have no SHA-256, and a damaged or
wrong file is caught by gzip's CRC-32 and by the converter, which needs every tensor by name and shape.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NamedWeights:
    name: str
    url: str
    sha256: str  # of the whole file, lower-case hex; "" where the publisher gives none (TF's zoo)
    size: int  # bytes; 0 where not known
    kind: str  # torchvision-ssdlite | torchvision-classifier | tf-frozen-graph | checkpoint
    backbone: str  # the model.backbone these weights fit
    description: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


CATALOG: dict[str, NamedWeights] = {
    w.name: w
    for w in (
        NamedWeights(
            name="torchvision-coco",
            url="https://download.pytorch.org/models/ssdlite320_mobilenet_v3_large_coco-a79551df.pth",
            sha256="a79551df90c79834bcd3bb3845ef9d966b5449a3a9b2833ae8404778ca5d65d2",
            size=14_069_355,
            kind="torchvision-ssdlite",
            backbone="mobilenet_v3_large",
            description="torchvision's SSDLite320 MobileNetV3-Large† on COCO (21.3 box mAP on val2017)",
        ),
        NamedWeights(
            name="imagenet-large",
            url="https://download.pytorch.org/models/mobilenet_v3_large-8738ca79.pth",
            sha256="8738ca797c879b547d18bbd15da5736ff2557b2036a9af72225393ca61759a04",
            size=22_139_423,
            kind="torchvision-classifier",
            backbone="mobilenet_v3_large",
            description="torchvision's MobileNetV3-Large ImageNet classifier (IMAGENET1K_V1, 74.0 % top-1)",
        ),
        NamedWeights(
            name="imagenet-small",
            url="https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
            sha256="047dcff4addef86ea5bc2eff13c9614dc11f47ab1160d0a71a25e7db994f4e1f",
            size=10_306_551,
            kind="torchvision-classifier",
            backbone="mobilenet_v3_small",
            description="torchvision's MobileNetV3-Small ImageNet classifier (IMAGENET1K_V1, 67.7 % top-1)",
        ),
        NamedWeights(
            name="paper-v3-large-coco",
            url="https://download.tensorflow.org/models/object_detection/ssd_mobilenet_v3_large_coco_2020_01_14.tar.gz",
            sha256="",
            size=0,
            kind="tf-frozen-graph",
            backbone="mobilenet_v3_large",
            description="the paper's SSDLite MobileNetV3-Large† (TF zoo 2020_01_14; the zoo lists 22.6 COCO mAP)",
        ),
        NamedWeights(
            name="paper-v3-small-coco",
            url="https://download.tensorflow.org/models/object_detection/ssd_mobilenet_v3_small_coco_2020_01_14.tar.gz",
            sha256="",
            size=0,
            kind="tf-frozen-graph",
            backbone="mobilenet_v3_small",
            description="the paper's SSDLite MobileNetV3-Small† (TF zoo 2020_01_14; the zoo lists 15.4 COCO mAP)",
        ),
    )
}

DEFAULT_DETECTOR = "torchvision-coco"  # what tools/detect.py runs without --weights


def names() -> list[str]:
    return list(CATALOG)


def detector_names() -> list[str]:
    """The names that are detectors (tools' --weights), not backbones."""
    return [name for name, entry in CATALOG.items() if entry.kind != "torchvision-classifier"]
