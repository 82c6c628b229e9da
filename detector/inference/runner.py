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

from detector.data.image_io import preprocess
from detector.errors import UserError
from detector.inference.device import resolve_device
from detector.inference.timing import StageTimes
from detector.ssd.detections import Detections, LabelMap
from detector.ssd.postprocess import PostProcessor


class Runner:
    """``runner(frames)`` -> one ``Detections`` per (H, W, 3) uint8 RGB frame (boxes in that frame's pixels),
    every detection the model's post-processing keeps (no class filter: see ``detector.app.api``), or with
    ``runner(frames, min_score)`` those scored at least ``min_score``, selected before NMS (the same
    detections as filtering afterwards, ``PostProcessor.__call__``).

    ``runtime`` names the engine, ``names`` / ``categories`` the classes in label order, ``input_size`` the
    (H, W) the frames are resized to and ``resize`` how (``detector.data.image_io.resize_rgb``: the model's
    ``data.resize``), ``times`` the accumulated stage milliseconds, ``max_batch`` the largest batch one call of
    the engine takes (None: any).
    """

    runtime = ""

    def __init__(self, categories: list[dict], input_size: tuple[int, int], max_batch: int | None = None,
                 resize: str = "cv2") -> None:  # fmt: skip
        self.labels = LabelMap(categories)
        self.categories, self.names = self.labels.categories, self.labels.names
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.max_batch = max_batch
        self.resize = resize
        self.times = StageTimes()

    def prepare(self, frames: list[np.ndarray]):
        """Frames -> the engine's input: (N, 3, H, W) float32 RGB in [0, 1] at ``input_size``."""
        return preprocess(frames, self.input_size, self.resize).numpy()

    def infer(self, batch):
        """The engine on one prepared batch -> its raw outputs."""
        raise NotImplementedError

    def decode(self, outputs, frames: list[np.ndarray], min_score: float = 0.0) -> list[Detections]:
        """Raw outputs of a batch -> ``Detections`` per frame, in the frames' pixels, scored at least
        ``min_score``."""
        raise NotImplementedError

    def __call__(self, frames: list[np.ndarray], min_score: float = 0.0) -> list[Detections]:
        results: list[Detections] = []
        step = self.max_batch or max(len(frames), 1)
        for start in range(0, len(frames), step):
            chunk = frames[start : start + step]
            t0 = time.perf_counter()
            batch = self.prepare(chunk)
            t1 = time.perf_counter()
            outputs = self.infer(batch)
            t2 = time.perf_counter()
            results += self.decode(outputs, chunk, min_score)
            self.times.record(t0, t1, t2, time.perf_counter(), len(chunk))
        return results


class TorchRunner(Runner):
    """A PyTorch SSDLite (usually BatchNorm-folded, see ``detector.deploy.fuse``) with its post-processor, on
    ``device`` (cpu, cuda[:N], mps), float32 or with ``half`` float16 (GPU only); ``resize`` as in ``Runner``."""

    runtime = "torch"

    def __init__(self, model: nn.Module, post: PostProcessor, categories: list[dict], device: str = "cpu",
                 half: bool = False, resize: str = "cv2") -> None:  # fmt: skip
        super().__init__(categories, post.input_size, resize=resize)
        self.device = resolve_device(device)
        if half and self.device.type == "cpu":
            raise UserError("--half needs a GPU (cuda or mps); on the CPU use an int8 export instead")
        self.dtype = torch.float16 if half else torch.float32
        self.model = model.to(self.device, self.dtype).eval()
        self.post = post

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def prepare(self, frames: list[np.ndarray]) -> torch.Tensor:
        batch = preprocess(frames, self.input_size, self.resize).to(self.device, self.dtype, non_blocking=True)
        self._sync()
        return batch

    @torch.inference_mode()
    def infer(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W) -> (box codes (N, A, 4), class logits (N, A, C + 1)), float32."""
        boxes, logits = self.model(batch)
        self._sync()
        return boxes.float(), logits.float()

    @torch.inference_mode()
    def decode(self, outputs: tuple[torch.Tensor, torch.Tensor], frames: list[np.ndarray],
               min_score: float = 0.0) -> list[Detections]:  # fmt: skip
        sizes = [f.shape[:2] for f in frames]
        dets = self.post(*outputs, sizes, min_score)
        return [self.labels.detections(d["boxes"], d["scores"], d["labels"], size) for d, size in zip(dets, sizes)]
