"""What an export format supplies to the one export pipeline (``detector.deploy.pipeline``): a writer and a
runner. The pipeline does the rest once for all of them: parity with PyTorch, int8, the drift report, the
accuracy gate and the atomic move into place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detector.build import LoadedModel
from detector.deploy.exported import ExportedRunner, metadata
from detector.deploy.fuse import fuse_for_inference
from detector.deploy.graphs import RawOutputs
from detector.errors import UserError


@dataclass
class ExportJob:
    """The model being exported (BatchNorm as trained: writers fold it themselves) and how: ``dynamic_batch``
    (any batch size, where the format allows it) and ``source`` (recorded in the file's metadata)."""

    loaded: LoadedModel
    dynamic_batch: bool = False
    source: str = ""

    @property
    def input_size(self) -> tuple[int, int]:
        return self.loaded.post.input_size

    def props(self, outputs: str, precision: str) -> dict[str, str]:
        """The file's metadata for ``outputs`` ("raw" or "nms") in ``precision`` ("fp32" or "int8")."""
        m = self.loaded
        return metadata(m.config, m.post, m.categories, outputs, precision, self.source)

    def raw_graph(self) -> RawOutputs:
        """The raw graph of the checkpoint's model, BatchNorm unfolded: the reference every file is checked
        against."""
        return RawOutputs(self.loaded.model, self.loaded.post).eval()

    def folded_graph(self) -> RawOutputs:
        """The raw graph with BatchNorm folded into the convolutions: what the writers export."""
        return RawOutputs(fuse_for_inference(self.loaded.model), self.loaded.post).eval()

    def example_input(self) -> torch.Tensor:
        """A (1, 3, H, W) float32 input to trace or export with (the values do not matter, the shape does)."""
        return torch.rand(1, 3, *self.input_size)


class Format:
    """One kind of exported file. ``suffix`` names it; ``batch`` says which batch sizes its files take: "any"
    (batch 1, or dynamic with ``--dynamic-batch``), "dynamic" (always) or "one"; ``int8`` and ``nms`` say
    what else it can write; ``runtime`` is the name of the runtime that runs it (``detector.deploy.runtimes``)."""

    name = ""
    title = ""  # the engine that checks it, in report lines
    suffix = ""
    batch = "any"
    int8 = False
    nms = False

    def write(self, job: ExportJob, path: Path) -> None:
        """The fp32 raw graph of ``job`` (BatchNorm folded) with its metadata, at ``path``."""
        raise NotImplementedError

    def write_int8(self, job: ExportJob, fp32: Path, calibration: list[np.ndarray], path: Path) -> None:
        """The int8 raw graph at ``path``, from the fp32 file ``fp32`` (or from ``job``), its activation ranges
        calibrated on ``calibration`` ((1, 3, H, W) float32 model inputs)."""
        raise UserError(f"--int8 is not available for --format {self.name}")

    def write_nms(self, job: ExportJob, raw: Path, path: Path, precision: str) -> None:
        """The raw graph at ``raw`` followed by the NMS graph, at ``path``."""
        raise UserError(f"--nms is not available for --format {self.name}")

    def open(self, path: Path, precision: str = "f32") -> ExportedRunner:
        """A runner of the file at ``path``; ``precision`` is the arithmetic where the engine offers a choice."""
        raise NotImplementedError

    def accuracy_runners(self, files: dict[str, Path]) -> dict[str, ExportedRunner]:
        """The runners whose COCO AP the accuracy gate compares: one per file written ("fp32", "int8")."""
        return {name: self.open(path) for name, path in files.items()}

    def paths(self, path: Path) -> list[Path]:
        """The files that make up the export at ``path`` (the main one first)."""
        return [path]

    def describe(self, path: Path, outputs: str, precision: str, dynamic_batch: bool) -> str:
        """The final ``wrote ...`` line."""
        size = sum(p.stat().st_size for p in self.paths(path)) / 1e6
        batch = "dynamic" if dynamic_batch else 1
        return f"wrote {path} ({self.title}, {outputs} outputs, {precision}, batch {batch}, {size:.1f} MB)"
