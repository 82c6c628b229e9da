"""SSDLite + MobileNetV3 object detection (Howard et al., "Searching for MobileNetV3", ICCV 2019).

The Python API (``detector.app.api``)::

    import detector
    model = detector.load("torchvision-coco")   # a name, a checkpoint, or an exported .onnx / .xml / .pte
    dets = model("photo.jpg")                   # or an RGB uint8 array, or a list of them
    print(dets.boxes, dets.scores, dets.category_ids, dets.names)

``load``, ``Detector`` and ``Detections`` are imported on first use, so that ``import detector.config`` (or
any other module) does not pull in the inference runtimes.
"""

__version__ = "0.1.0"
__all__ = ["Detections", "Detector", "load"]


def __getattr__(name: str):
    if name in ("load", "Detector"):
        from detector.app import api

        return getattr(api, name)
    if name == "Detections":
        from detector.ssd.detections import Detections

        return Detections
    raise AttributeError(f"module 'detector' has no attribute {name!r}")
