"""Table 6 of the paper (SSDLite at 320x320 on COCO): the published figures and the model of each row."""

from __future__ import annotations

from dataclasses import dataclass

from detector.config import ModelConfig


@dataclass(frozen=True)
class Row:
    name: str  # the paper's row name, exactly
    backbone: str
    width: float
    reduced_tail: bool
    paper_map: float
    paper_latency_ms: float  # Pixel 1, one large core, TFLite
    paper_params_m: float
    paper_madds_b: float

    def model_config(self) -> ModelConfig:
        """The paper layout at 320x320 with 90 COCO classes (91 class slots)."""
        return ModelConfig(
            backbone=self.backbone,
            width=self.width,
            reduced_tail=self.reduced_tail,
            layout="paper",
            num_classes=90,
            image_size=[320, 320],
        )


ROWS = (
    Row("V1", "mobilenet_v1", 1.0, False, 22.2, 228, 5.1, 1.3),
    Row("V2", "mobilenet_v2", 1.0, False, 22.1, 162, 4.3, 0.80),
    Row("MnasNet", "mnasnet_a1", 1.0, False, 23.0, 174, 4.88, 0.84),
    Row("V3", "mobilenet_v3_large", 1.0, False, 22.0, 137, 4.97, 0.62),
    Row("V3†", "mobilenet_v3_large", 1.0, True, 22.0, 119, 3.22, 0.51),
    Row("V2 0.35", "mobilenet_v2", 0.35, False, 13.7, 66, 0.93, 0.16),
    Row("V2 0.5", "mobilenet_v2", 0.5, False, 16.6, 79, 1.54, 0.27),
    Row("MnasNet 0.35", "mnasnet_a1", 0.35, False, 15.6, 68, 1.02, 0.18),
    Row("MnasNet 0.5", "mnasnet_a1", 0.5, False, 18.5, 85, 1.68, 0.29),
    Row("V3-Small", "mobilenet_v3_small", 1.0, False, 16.0, 52, 2.49, 0.21),
    Row("V3-Small†", "mobilenet_v3_small", 1.0, True, 16.1, 43, 1.77, 0.16),
)
REFERENCE_ROW = "V3†"


def row_named(name: str) -> Row:
    for row in ROWS:
        if row.name == name:
            return row
    raise KeyError(f"no Table 6 row named {name!r}; rows: {', '.join(r.name for r in ROWS)}")


def row_for_model(backbone: str, width: float, reduced_tail: bool) -> Row | None:
    """The row whose model this is, or None."""
    for row in ROWS:
        if (row.backbone, row.reduced_tail) == (backbone, reduced_tail) and abs(row.width - width) < 1e-9:
            return row
    return None
