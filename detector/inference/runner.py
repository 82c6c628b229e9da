"""The one interface of every runtime: decoded frames -> pre-processing -> model -> post-processing -> Detections.

``Runner`` holds what all runtimes share (labels, input size, the batching loop and its stage timings); a
runtime supplies ``prepare`` (frames -> its input), ``infer`` (input -> its raw outputs) and ``decode`` (raw
outputs -> ``Detections`` per frame). ``TorchRunner`` runs a PyTorch model (a checkpoint or a catalog name);
the runners of exported files (ONNX Runtime, OpenVINO, ExecuTorch, TorchScript) live with their formats in
``detector.deploy``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from detector.data.image_io import resize_batch, to_model_input
from detector.errors import UserError
from detector.inference.device import resolve_device
from detector.inference.timing import StageTimes
from detector.ssd.detections import Detections, LabelMap
from detector.ssd.postprocess import PostProcessor


class Runner:
    """``runner(frames)`` -> one ``Detections`` per (H, W, 3) uint8 RGB frame (boxes in that frame's pixels),
    every detection the model's post-processing keeps (no class filter: see ``detector.app.api``), or with
    ``runner(frames, min_score)`` those scored at least ``min_score``, selected before NMS (the same
    detections as filtering afterwards, ``PostProcessor.__call__``). ``detect_resized`` takes a batch already
    resized (a dataset's, in evaluation) and the original sizes instead.

    ``runtime`` names the engine, ``names`` / ``categories`` the classes in label order, ``input_size`` the
    (H, W) the frames are resized to and ``resize`` how (``detector.data.image_io.resize_rgb``: the model's
    ``data.resize``), ``times`` the accumulated stage milliseconds, ``max_batch`` the largest batch one call of
    the engine takes (None: any).
    """

    runtime = ""
    # Pre-, post-processing and the engine must stay in one thread (detector.app.run does not overlap them): PyTorch
    # on the CPU (one thread pool for all three: overlapped, they oversubscribe the cores) or on MPS (which aborts
    # when two threads encode Metal work at once).
    serial_stages = False

    def __init__(self, categories: list[dict], input_size: tuple[int, int], max_batch: int | None = None,
                 resize: str = "cv2") -> None:  # fmt: skip
        self.labels = LabelMap(categories)
        self.categories, self.names = self.labels.categories, self.labels.names
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.max_batch = max_batch
        self.resize = resize
        self.times = StageTimes()

    def prepare(self, frames: list[np.ndarray]):
        """Frames of any sizes -> the engine's input: the frames resized to ``input_size``, then ``from_resized``."""
        return self.from_resized(resize_batch(frames, self.input_size, self.resize))

    def from_resized(self, images: torch.Tensor):
        """(N, H, W, 3) RGB at ``input_size``, uint8 (or float32 in [0, 255]) -> the engine's input: by default
        (N, 3, H, W) float32 RGB in [0, 1], a numpy array."""
        return to_model_input(images).numpy()

    def infer(self, batch):
        """The engine on one prepared batch -> its raw outputs."""
        raise NotImplementedError

    def decode(self, outputs, sizes: list[tuple[int, int]], min_score: float = 0.0) -> list[Detections]:
        """Raw outputs of a batch -> ``Detections`` per image, in the pixels of an image of its (H, W) in
        ``sizes``, scored at least ``min_score``."""
        raise NotImplementedError

    def _chunks(self, n: int) -> range:
        return range(0, n, self.max_batch or max(n, 1))

    def _detect(self, t0: float, batch, sizes: list[tuple[int, int]], min_score: float) -> list[Detections]:
        t1 = time.perf_counter()
        outputs = self.infer(batch)
        t2 = time.perf_counter()
        dets = self.decode(outputs, sizes, min_score)
        self.times.record(t0, t1, t2, time.perf_counter(), len(sizes))
        return dets

    def __call__(self, frames: list[np.ndarray], min_score: float = 0.0) -> list[Detections]:
        results: list[Detections] = []
        for start in self._chunks(len(frames)):
            chunk = frames[start : start + (self.max_batch or len(frames))]
            t0 = time.perf_counter()
            results += self._detect(t0, self.prepare(chunk), [f.shape[:2] for f in chunk], min_score)
        return results

    def detect_resized(self, images: torch.Tensor, sizes: list[tuple[int, int]],
                       min_score: float = 0.0) -> list[Detections]:  # fmt: skip
        """(N, H, W, 3) images already resized to ``input_size`` (``from_resized``) and the (H, W) of each
        original -> ``Detections`` per image in the original's pixels."""
        results: list[Detections] = []
        for start in self._chunks(len(sizes)):
            end = start + (self.max_batch or len(sizes))
            t0 = time.perf_counter()
            results += self._detect(t0, self.from_resized(images[start:end]), list(sizes[start:end]), min_score)
        return results


class TorchRunner(Runner):
    """A PyTorch SSDLite (usually BatchNorm-folded, see ``detector.deploy.fuse``) with its post-processor, on
    ``device`` (cpu, cuda[:N], mps), float32 or with ``half`` float16 (GPU only); ``resize`` as in ``Runner``."""

    runtime = "torch"

    def __init__(self, model: nn.Module, post: PostProcessor, categories: list[dict], device: str = "cpu",
                 half: bool = False, resize: str = "cv2") -> None:  # fmt: skip
        super().__init__(categories, post.input_size, resize=resize)
        self.device = resolve_device(device)
        # MPS also keeps them together: PyTorch aborts when two threads encode Metal work at once
        self.serial_stages = self.device.type != "cuda"
        if half and self.device.type == "cpu":
            raise UserError("--half needs a GPU (cuda or mps); on the CPU use an int8 export instead")
        self.dtype = torch.float16 if half else torch.float32
        self.model = model.to(self.device, self.dtype).eval()
        self.post = post

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def from_resized(self, images: torch.Tensor) -> torch.Tensor:
        batch = to_model_input(images, self.device).to(self.dtype)
        self._sync()
        return batch

    @torch.inference_mode()
    def infer(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> (box codes (N, A, 4), class logits (N, A, C + 1)), float32."""
        boxes, logits = self.model(batch)
        self._sync()
        return boxes.float(), logits.float()

    @torch.inference_mode()
    def decode(self, outputs: tuple[torch.Tensor, torch.Tensor], sizes: list[tuple[int, int]],
               min_score: float = 0.0) -> list[Detections]:  # fmt: skip
        dets = self.post(*outputs, sizes, min_score)
        return [self.labels.detections(d["boxes"], d["scores"], d["labels"], size) for d, size in zip(dets, sizes)]
