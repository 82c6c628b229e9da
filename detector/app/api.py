"""The Python API: ``detector.load(...)`` -> a ``Detector``; ``detector(image)`` -> ``Detections``.

    import detector
    model = detector.load("torchvision-coco")            # a name, a checkpoint, or an .onnx / .xml / .pte file
    dets = model("photo.jpg")                            # or an RGB uint8 array, or a list of either
    for box, score, name in zip(dets.boxes, dets.scores, dets.names):
        print(name, score, box)                          # box: x1, y1, x2, y2 in the image's pixels

``tools/detect.py`` is built on it: ``dets.to_json()`` is the record its ``--save-json`` writes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from detector.data.image_io import read_image
from detector.deploy import runtime_choice, runtimes
from detector.errors import UserError
from detector.inference.runner import Runner
from detector.inference.timing import StageTimes
from detector.ssd.detections import Detections
from detector.weights import catalog

DEFAULT_CONF = 0.3  # the lowest score kept unless told otherwise (tools/detect.py --conf)
Image = str | Path | np.ndarray


def load(weights: str | Path = catalog.DEFAULT_DETECTOR, *, runtime: str | None = None, device: str = "cpu",
         conf: float = DEFAULT_CONF, classes: Sequence[str] | None = None, threads: int | None = None,
         half: bool = False) -> Detector:  # fmt: skip
    """A detector for ``weights``: a name of the weights catalog (fetched once into torch's hub cache), a
    checkpoint of ours, or a file written by ``tools/export.py`` (``.onnx``, OpenVINO ``.xml``, ExecuTorch
    ``.pte``).

    ``runtime``: one of ``detector.deploy.runtimes.RUNTIMES``, or ``"auto"`` (the fastest installed one for
    this file on this CPU, measured once and cached; a checkpoint competes through an ONNX export of it). None:
    ``auto`` on the CPU; elsewhere torch for checkpoints and names, onnxruntime for .onnx (``runtimes.
    default_runtime``). ``device``: cpu, cuda, cuda:N or mps. ``conf``: the lowest
    score kept; ``classes``: the class names kept (None: all). ``threads``: CPU threads of PyTorch and of the
    runtime (None: all cores). ``half``: float16, checkpoints on a GPU only.
    """
    if not 0.0 <= conf <= 1.0:
        raise UserError(f"conf {conf}: expected a score in [0, 1]")
    if threads is not None and threads < 1:
        raise UserError(f"threads {threads}: expected at least 1")
    if threads:
        torch.set_num_threads(threads)
    if runtime is None:
        runtime = "auto" if device == "cpu" and not half else runtimes.default_runtime(weights)
    if runtime == "auto":
        if half:
            raise UserError("--half applies to PyTorch on a GPU; --runtime auto measures the CPU runtimes")
        if device != "cpu":
            raise UserError("--runtime auto measures the CPU runtimes; with --device other than cpu, name one")
        return Detector(runtime_choice.choose(weights, threads).open(threads=threads), conf, classes)
    if runtime not in runtimes.RUNTIMES:
        raise UserError(f"runtime {runtime!r}: expected one of {', '.join(runtimes.CHOICES)}")
    return Detector(runtimes.open_runner(runtime, weights, device, half, threads), conf, classes)


def as_rgb(image: Image) -> tuple[np.ndarray, str]:
    """An image argument -> ((H, W, 3) uint8 RGB, its source name: the path as given, or "" for an array).

    Paths are decoded as stored (no EXIF turn), as ``tools/detect.py`` reads them; arrays are RGB (H, W, 3),
    grey (H, W) or (H, W, 1), or RGBA (H, W, 4), uint8."""
    if isinstance(image, (str, Path)):
        return read_image(image), str(Path(image))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise UserError(f"an image array must be uint8 RGB (H, W, 3); got dtype {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1):
        return cv2.cvtColor(array.reshape(array.shape[:2]), cv2.COLOR_GRAY2RGB), ""
    if array.ndim == 3 and array.shape[2] == 4:
        return np.ascontiguousarray(array[..., :3]), ""
    if array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise UserError(f"an image array must be uint8 RGB (H, W, 3); got shape {array.shape}")
    return array, ""


class Detector:
    """A model ready to run: ``detector(image)`` -> ``Detections`` of its detections with a score of at least
    ``conf`` and, when ``classes`` are named, of those classes; ``detector([image, ...])`` -> a list of them.

    An image is a path or an RGB uint8 array (see ``as_rgb``). ``names`` are the model's classes in label
    order, ``runtime`` the engine it runs on, ``input_size`` the (H, W) it takes, ``times`` the accumulated
    stage milliseconds of the runner.
    """

    def __init__(self, runner: Runner, conf: float = DEFAULT_CONF, classes: Sequence[str] | None = None) -> None:
        self.runner, self.conf = runner, conf
        self.classes = list(classes) if classes else None
        if self.classes:
            unknown = [n for n in self.classes if n not in runner.names]
            if unknown:
                shown = ", ".join(runner.names[:30]) + (", ..." if len(runner.names) > 30 else "")
                raise UserError(f"--classes: unknown {', '.join(map(repr, unknown))}; this model has: {shown}")
        # labels 0..C, label k at index k: the classes kept
        self._kept = np.array([False] + [self.classes is None or n in self.classes for n in runner.names])

    @property
    def names(self) -> list[str]:
        return self.runner.names

    @property
    def runtime(self) -> str:
        return self.runner.runtime

    @property
    def input_size(self) -> tuple[int, int]:
        return self.runner.input_size

    @property
    def times(self) -> StageTimes:
        return self.runner.times

    def select(self, dets: Detections) -> Detections:
        """The detections of ``dets`` with a score of at least ``conf`` and a class kept."""
        return dets.select((dets.scores >= self.conf) & self._kept[dets.labels])

    # The three stages of a call, for a loop that runs them on different threads (``detector.app.run``): each is
    # safe to run beside the others, and prepare -> infer -> finish on a frame gives what ``detector(frame)`` gives.
    def prepare(self, frame: np.ndarray):
        """One (H, W, 3) uint8 RGB frame -> the engine's input (resized and normalised), timed as pre-processing."""
        t0 = time.perf_counter()
        batch = self.runner.prepare([frame])
        self.times.add("preprocess", (time.perf_counter() - t0) * 1e3)
        return batch

    def infer(self, batch):
        """The engine on a prepared frame -> its raw outputs, timed as the model."""
        t0 = time.perf_counter()
        outputs = self.runner.infer(batch)
        self.times.add("model", (time.perf_counter() - t0) * 1e3)
        return outputs

    def finish(self, outputs, size: tuple[int, int]) -> Detections:
        """Raw outputs of a frame of (H, W) ``size`` -> its selected ``Detections``, timed as post-processing."""
        t0 = time.perf_counter()
        (dets,) = self.runner.decode(outputs, [size], self.conf)
        self.times.add("postprocess", (time.perf_counter() - t0) * 1e3)
        self.times.frames += 1
        return self.select(dets)

    def __call__(self, images: Image | list[Image]) -> Detections | list[Detections]:
        single = not isinstance(images, (list, tuple))
        decoded = [as_rgb(image) for image in ([images] if single else images)]
        dets = self.runner([rgb for rgb, _ in decoded], self.conf)  # conf before NMS: less work, same result
        results = [self.select(d).at(source) for d, (_, source) in zip(dets, decoded)]
        return results[0] if single else results
