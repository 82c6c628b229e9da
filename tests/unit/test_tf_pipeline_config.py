"""The zoo archive's pipeline.config: the text-format reader (detector/weights/tf_pipeline_config.py), its
mapping onto our config (what is taken, what is refused by field path), and the converter that uses it
(detector/weights/tf_graph.py). The configs are TF's own samples for the paper's models
(tensorflow/models research/object_detection/samples/configs/ssdlite_mobilenet_v3_{large,small}_320x320_coco.config:
the Large one whole in tests/data/, the Small one as its differences from it)."""

import logging
import re
from pathlib import Path

import pytest

from detector import build, checkpoint, config
from detector.errors import UserError
from detector.weights.resolve import load_model
from detector.weights.tf_graph import graph_checkpoint, tf_config
from detector.weights.tf_pipeline_config import Enum, parse, pipeline_config

from ..tf_frozen_graph import frozen_graph, write_zoo_tarball

LARGE = (Path(__file__).parents[1] / "data" / "ssdlite_mobilenet_v3_large_320x320_coco.config").read_text()

# TF's Small sample is the Large one with three differences (checked on the two files of tensorflow/models):
# the first comment line, the feature extractor's type, and 800000 training steps for 400000.
SMALL = LARGE.replace("v3 large feature", "v3 small feature").replace("# 3.22M parameters, 1.02B FLOPs\n", "")
SMALL = SMALL.replace("'ssd_mobilenet_v3_large'", "'ssd_mobilenet_v3_small'").replace("400000", "800000")
CONFIGS = {"large": LARGE, "small": SMALL}
BACKBONES = {"large": "mobilenet_v3_large", "small": "mobilenet_v3_small"}


def edited(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def mapped(text: str, arch: str = "large", source: str = "p.config") -> config.Config:
    return pipeline_config(parse(text, source), tf_config(BACKBONES[arch]), source)


def the_paper(cfg: config.Config) -> bool:
    post = cfg.postprocess
    return (post.score_thresh, post.nms_thresh, post.topk_per_class, post.max_detections, post.per_class_limit,
            post.clip_boxes, cfg.model.image_size, build.score_fn(cfg.loss), cfg.data.resize) == (
        1e-8, 0.6, 100, 100, "after_nms", "after_nms", (320, 320), "sigmoid", "tf_legacy")  # fmt: skip


def test_the_reader_on_tfs_sample_config(tmp_path):
    (tmp_path / "pipeline.config").write_text(LARGE)
    top = parse((tmp_path / "pipeline.config").read_text(), "pipeline.config")
    (ssd,) = top["model"][0]["ssd"]
    assert ssd["num_classes"] == [90] and ssd["encode_background_as_zeros"] == [True]
    assert ssd["feature_extractor"][0]["type"] == ["ssd_mobilenet_v3_large"]
    assert not isinstance(ssd["feature_extractor"][0]["type"][0], Enum), "a quoted string is no enum name"
    anchors = ssd["anchor_generator"][0]["ssd_anchor_generator"][0]
    assert anchors["aspect_ratios"] == [1.0, 2.0, 0.5, 3.0, 0.3333] and anchors["min_scale"] == [0.2]
    post = ssd["post_processing"][0]
    assert post["score_converter"] == ["SIGMOID"] and isinstance(post["score_converter"][0], Enum)
    nms = post["batch_non_max_suppression"][0]
    assert nms == {"score_threshold": [1e-8], "iou_threshold": [0.6], "max_detections_per_class": [100],
                   "max_total_detections": [100], "use_static_shapes": [True]}  # fmt: skip
    batch_norm = ssd["box_predictor"][0]["convolutional_box_predictor"][0]["conv_hyperparams"][0]["batch_norm"][0]
    assert batch_norm == {"train": [True], "scale": [True], "center": [True], "decay": [0.97], "epsilon": [0.001]}
    assert ssd["similarity_calculator"] == [{"iou_similarity": [{}]}]
    train = top["train_config"][0]
    assert train["batch_size"] == [512] and len(train["data_augmentation_options"]) == 2
    rate = train["optimizer"][0]["momentum_optimizer"][0]["learning_rate"][0]["cosine_decay_learning_rate"][0]
    assert rate["warmup_learning_rate"] == [0.13333] and rate["total_steps"] == [400000]
    reader = top["eval_input_reader"][0]
    assert reader["tf_record_input_reader"][0]["input_path"] == [
        "PATH_TO_BE_CONFIGURED/mscoco_val.record-?????-of-00010"
    ]
    assert set(top) == {"model", "train_config", "train_input_reader", "eval_config", "eval_input_reader"}


def test_the_reader_on_the_rest_of_the_text_format():
    text = r"""a: "x\ty\"z\101\x42\n" 'it''s'  # adjacent strings are one
    b: [1, -2, 0x1F]; c: -1.5e-3, d: 2.5f e: inf
    m < f: t > m: { } n: [ ] u: "caf\303\251"
    """
    top = parse(text, "t")
    assert top["a"] == ['x\ty"zAB\nits'] and top["b"] == [1, -2, 31] and top["c"] == [-1.5e-3]
    assert top["d"] == [2.5] and top["e"] == [float("inf")] and top["m"] == [{"f": ["t"]}, {}]
    assert "n" not in top and top["u"] == ["café"]


@pytest.mark.parametrize("arch", ["large", "small"])
def test_the_samples_map_to_the_papers_settings(arch):
    cfg = mapped(CONFIGS[arch], arch)
    assert the_paper(cfg) and cfg.model.backbone == BACKBONES[arch] and cfg.model.padding == "tf_same"
    assert cfg == tf_config(BACKBONES[arch]), "the samples are what the paper's settings already are"


def test_text_format_dump_values_pass_as_float32():
    """The zoo's pipeline.config is text_format's dump of float32 fields: 1e-8 is 9.99999993922529e-09."""
    text = LARGE
    for old, new in (("score_threshold: 1e-8", "score_threshold: 9.99999993922529e-09"),
                     ("iou_threshold: 0.6", "iou_threshold: 0.600000023841858"),
                     ("min_scale: 0.2", "min_scale: 0.200000002980232"),
                     ("max_scale: 0.95", "max_scale: 0.949999988079071"),
                     ("aspect_ratios: 0.3333", "aspect_ratios: 0.333299994468689"),
                     ("type: 'ssd_mobilenet_v3_large'", 'type: "ssd_mobilenet_v3_large"')):  # fmt: skip
        text = edited(text, old, new)
    cfg = mapped(text)
    assert the_paper(cfg) and repr(cfg.postprocess.score_thresh) == "1e-08" and cfg.postprocess.nms_thresh == 0.6


def test_changed_supported_values_are_used():
    text = LARGE
    for old, new in (("score_threshold: 1e-8", "score_threshold: 0.3"), ("iou_threshold: 0.6", "iou_threshold: 0.5"),
                     ("max_detections_per_class: 100", "max_detections_per_class: 20"),
                     ("max_total_detections: 100", "max_total_detections: 50"),
                     ("score_converter: SIGMOID", "score_converter: SOFTMAX"),
                     ("height: 320\n        width: 320", "height: 300\n        width: 256")):  # fmt: skip
        text = edited(text, old, new)
    cfg = mapped(text)
    post = cfg.postprocess
    assert (post.score_thresh, post.nms_thresh, post.topk_per_class, post.max_detections) == (0.3, 0.5, 20, 50)
    assert cfg.loss.kind == "softmax_hnm" and build.score_fn(cfg.loss) == "softmax"
    assert cfg.model.image_size == (300, 256) and post.per_class_limit == post.clip_boxes == "after_nms"


def test_absent_fields_take_tfs_defaults():
    text = LARGE
    for line in ("        aspect_ratios: 0.3333\n", "        score_threshold: 1e-8\n", "        iou_threshold: 0.6\n",
                 "        max_total_detections: 100\n", "        num_layers: 6\n", "        min_scale: 0.2\n",
                 "      depth_multiplier: 1.0\n", "        y_scale: 10.0\n"):  # fmt: skip
        text = edited(text, line, "" if "aspect" not in line else "        aspect_ratios: 0.333333333\n")
    text = edited(text, "        height: 320\n        width: 320\n", "")
    cfg = mapped(text)
    assert cfg.postprocess.score_thresh == 0.0 and cfg.postprocess.nms_thresh == 0.6  # TF: 0.0, 0.6
    assert cfg.postprocess.max_detections == 100 and cfg.model.image_size == (300, 300)  # TF: 100, 300 x 300


REFUSED = [  # (old text, new text, the field path and value in the message)
    ("score_converter: SIGMOID", "score_converter: IDENTITY", "post_processing.score_converter = IDENTITY"),
    ("      score_converter: SIGMOID\n", "", "post_processing.score_converter = IDENTITY"),  # TF's default
    ("score_converter: SIGMOID", "score_converter: SIGMOID logit_scale: 2.0", "post_processing.logit_scale = 2.0"),
    ("use_static_shapes: true", "use_class_agnostic_nms: true", "suppression.use_class_agnostic_nms = True"),
    ("use_static_shapes: true", "soft_nms_sigma: 0.5", "batch_non_max_suppression.soft_nms_sigma = 0.5"),
    ("use_static_shapes: true", "use_combined_nms: true", "batch_non_max_suppression.use_combined_nms = True"),
    ("num_classes: 90", "num_classes: 90 add_background_class: false", "model.ssd.add_background_class = False"),
    ("num_classes: 90", "num_classes: 90 explicit_background_class: true", "ssd.explicit_background_class = True"),
    ("apply_sigmoid_to_scores: false", "apply_sigmoid_to_scores: true",
     "convolutional_box_predictor.apply_sigmoid_to_scores = True"),
    ("score_threshold: 1e-8", "score_threshold: 1.5", "batch_non_max_suppression.score_threshold = 1.5"),
    ("max_total_detections: 100", "max_total_detections: 0", "batch_non_max_suppression.max_total_detections = 0"),
    ("fixed_shape_resizer {", "keep_aspect_ratio_resizer {", "model.ssd.image_resizer = keep_aspect_ratio_resizer"),
    ("width: 320", "width: 320 resize_method: AREA", "fixed_shape_resizer.resize_method = AREA"),
    ("height: 320", "height: 16", r"fixed_shape_resizer.height / width = \(16, 320\)"),
    ("num_layers: 6", "num_layers: 5", "ssd_anchor_generator.num_layers = 5"),
    ("min_scale: 0.2", "min_scale: 0.1", "ssd_anchor_generator.min_scale = 0.1"),
    ("max_scale: 0.95", "max_scale: 0.9", "ssd_anchor_generator.max_scale = 0.9"),
    ("aspect_ratios: 0.3333", "aspect_ratios: 0.25", r"generator.aspect_ratios = \[1.0, 2.0, 0.5, 3.0, 0.25\]"),
    ("        aspect_ratios: 3.0\n", "", r"ssd_anchor_generator.aspect_ratios = \[1.0, 2.0, 0.5, 0.3333\]"),
    ("num_layers: 6", "num_layers: 6 reduce_boxes_in_lowest_layer: false",
     "ssd_anchor_generator.reduce_boxes_in_lowest_layer = False"),
    ("num_layers: 6", "num_layers: 6 interpolated_scale_aspect_ratio: 0.0",
     "ssd_anchor_generator.interpolated_scale_aspect_ratio = 0.0"),
    ("num_layers: 6", "num_layers: 6 base_anchor_height: 0.5", "ssd_anchor_generator.base_anchor_height = 0.5"),
    ("num_layers: 6", "num_layers: 6 height_stride: 16", r"ssd_anchor_generator.height_stride = \[16\]"),
    ("ssd_anchor_generator {", "multiscale_anchor_generator {", "anchor_generator = multiscale_anchor_generator"),
    ("y_scale: 10.0", "y_scale: 5.0", "faster_rcnn_box_coder.y_scale = 5.0"),
    ("width_scale: 5.0", "width_scale: 1.0", "faster_rcnn_box_coder.width_scale = 1.0"),
    ("num_classes: 90", "num_classes: 80", "model.ssd.num_classes = 80"),
    ("type: 'ssd_mobilenet_v3_large'", "type: 'ssd_mobilenet_v3_small'",
     "feature_extractor.type = 'ssd_mobilenet_v3_small'"),
    ("type: 'ssd_mobilenet_v3_large'", "type: ssd_mobilenet_v3_large", "extractor.type = ssd_mobilenet_v3_large"),
    ("depth_multiplier: 1.0", "depth_multiplier: 0.75", "feature_extractor.depth_multiplier = 0.75"),
    ("use_depthwise: true\n      conv", "use_explicit_padding: true\n      conv",
     "feature_extractor.use_explicit_padding = True"),
    ("iou_threshold: 0.6", "iou_threshold: 0.6 iou_threshold: 0.5", "iou_threshold is given 2 times"),
    ("model {\n  ssd {", "model {\n  faster_rcnn {", "model = faster_rcnn is not supported"),
]  # fmt: skip


@pytest.mark.parametrize("old, new, message", REFUSED)
def test_unsupported_values_are_refused_by_field(old, new, message):
    with pytest.raises(UserError, match=f"^zoo/pipeline.config: (model.ssd.)?.*{message}"):
        mapped(edited(LARGE, old, new), source="zoo/pipeline.config")


@pytest.mark.parametrize("text, line, message", [
    ("model {\n  ssd {\n    num_classes: 90\n", 4, "the file ends inside the message opened on line 2"),
    ("model {\n  num_classes 90\n}", 2, "expected ':', found '90'"),
    ("a: 1\nb: 'open\n", 2, "a string not closed on its line"),
    ("a: 1\n\nb: 1.2.3\n", 3, "expected a value, found '1.2.3'"),
    ("a {\n}\n}\n", 3, "expected a field name, found '}'"),
    ("a: 1 @\n", 1, "unexpected '@'"),
    ("a: [1, 2\nb: 3", 2, "expected ',', found 'b'"),
    ("a: 'bad \\q escape'", 1, "unknown escape \\q"),
])  # fmt: skip
def test_malformed_text_is_named_with_its_line(text, line, message):
    with pytest.raises(UserError, match=f"^x.config: line {line}: {re.escape(message)}"):
        parse(text, "x.config")


def test_an_archive_with_pipeline_config_converts_with_its_values(tmp_path):
    graph, _ = frozen_graph("small")
    folder = "ssd_mobilenet_v3_small_coco_2020_01_14"
    write_zoo_tarball(tmp_path / "paper.tar.gz", folder, graph, SMALL)
    cfg = config.from_dict(graph_checkpoint(tmp_path / "paper.tar.gz", "test")["config"])
    assert the_paper(cfg) and cfg.model.backbone == "mobilenet_v3_small"
    changed = edited(edited(SMALL, "score_threshold: 1e-8", "score_threshold: 0.3"),
                     "max_total_detections: 100", "max_total_detections: 50")  # fmt: skip
    write_zoo_tarball(tmp_path / "zoo.tar.gz", folder, graph, changed)
    checkpoint.save(tmp_path / "c.pt", graph_checkpoint(tmp_path / "zoo.tar.gz", "test"))
    loaded = load_model(tmp_path / "c.pt")
    assert (loaded.config.postprocess.score_thresh, loaded.config.postprocess.max_detections) == (0.3, 50)
    assert loaded.post.max_detections == 50 and loaded.config.data.resize == "tf_legacy"
    write_zoo_tarball(tmp_path / "bad.tar.gz", folder, graph, LARGE)  # a Large config beside a Small graph
    with pytest.raises(UserError, match=f"bad.tar.gz:{folder}/pipeline.config: model.ssd.feature_extractor.type"):
        graph_checkpoint(tmp_path / "bad.tar.gz", "test")


def test_without_pipeline_config_the_papers_settings_are_used_and_said(tmp_path, caplog):
    graph, _ = frozen_graph("small")
    (tmp_path / "g.pb").write_bytes(graph)
    write_zoo_tarball(tmp_path / "zoo.tar.gz", "m", graph)
    for path in (tmp_path / "g.pb", tmp_path / "zoo.tar.gz"):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            cfg = config.from_dict(graph_checkpoint(path, "test")["config"])
        assert the_paper(cfg) and cfg == tf_config("mobilenet_v3_small")
        lines = [r.getMessage() for r in caplog.records if "pipeline.config" in r.getMessage()]
        assert lines == [f"{path}: no pipeline.config: using the paper's settings (sigmoid scores, score > 1e-8, "
                         "NMS 0.6, 100 per class, 100 in all, 320x320)"]  # fmt: skip
