"""The ``pipeline.config`` of a TF Object Detection API zoo archive -> the Config of the converted checkpoint.

``pipeline.config`` is a ``TrainEvalPipelineConfig`` in protobuf *text format*, and the compiled
``object_detection`` protos are not installed (tensorboard ships only core TF's), so ``parse`` is a small,
strict reader of that format without a schema: ``name: value`` scalars (numbers, ``true`` / ``false``, enum
names, quoted strings with C escapes, adjacent strings joined), ``name { ... }`` / ``name: { ... }`` / ``< >``
messages, ``name: [a, b]`` lists, ``,`` or ``;`` after a field, ``#`` comments. A message is a dict of field
name -> list of values (every field may repeat; the reader cannot know which do). ``pipeline_config`` maps the
``model.ssd`` message onto our config: what our model computes exactly is taken (score converter, NMS values,
input size) and anything else is refused by its field path. Absent fields take the defaults of TF's protos
(research/object_detection/protos/*.proto).
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from detector.config import Config, ConfigError
from detector.errors import UserError
from detector.ssd.anchors import MAX_SCALE, MIN_SCALE, PAPER_RATIOS

_TOKEN = re.compile(r"""\s+|\#[^\n]*|(?P<tok>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[\w.+-]+|[{}<>\[\]:,;])""")
_INT = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)")
_FLOAT = re.compile(r"[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[fF]?|inf|infinity|nan)", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z_]\w*")
_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v", "\\": b"\\",
            "'": b"'", '"': b'"', "?": b"?"}  # fmt: skip
_CLOSE = {"{": "}", "<": ">"}


class Enum(str):
    """An unquoted name as a value: an enum value of TF's protos (``SIGMOID``), as opposed to a quoted string."""


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a quoted string", Enum: "an enum name"}


def parse(text: str, source: str) -> dict[str, list]:
    """The top-level message of protobuf text ``text``; a UserError names ``source`` and the line if malformed."""
    tokens, pos, line = [], 0, 1  # (token, line)
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            what = "a string not closed on its line" if text[pos] in "\"'" else f"unexpected {text[pos]!r}"
            raise UserError(f"{source}: line {line}: {what}")
        if m["tok"]:
            tokens.append((m["tok"], line))
        line, pos = line + m[0].count("\n"), m.end()
    tokens.append(("", line))  # the end of the file
    at = 0

    def error(message: str) -> UserError:
        return UserError(f"{source}: line {tokens[at][1]}: {message}")

    def take(expected: str | None = None) -> str:
        nonlocal at
        token = tokens[at][0]
        if expected is not None and token != expected:
            raise error(f"expected {expected!r}, found {_shown(token)}")
        at = min(at + 1, len(tokens) - 1)
        return token

    def string(token: str) -> str:
        out, body, i = bytearray(), token[1:-1], 0
        for m in re.finditer(r"\\(?:([0-7]{1,3})|[xX]([0-9a-fA-F]{1,2})|(.))", body):
            if m[3] is not None and m[3] not in _ESCAPES:
                raise error(f"unknown escape \\{m[3]} in a string")
            out += body[i : m.start()].encode()
            out += bytes([int(m[1], 8) & 255]) if m[1] else bytes([int(m[2], 16)]) if m[2] else _ESCAPES[m[3]]
            i = m.end()
        try:
            return (out + body[i:].encode()).decode()
        except UnicodeDecodeError:
            raise error("a string that is not UTF-8") from None

    def value() -> object:
        token = tokens[at][0]
        if token in _CLOSE:
            take()
            return message(_CLOSE[token])
        if token[:1] in ("'", '"'):
            text = ""
            while tokens[at][0][:1] in ("'", '"'):  # "a" "b" is "ab", as in C
                text += string(tokens[at][0])
                take()
            return text
        if _INT.fullmatch(token):
            parsed = int(token, 0) if token.lstrip("+-")[:2] in ("0x", "0X") else int(token)
        elif _FLOAT.fullmatch(token):  # text_format writes 1e-08, 0.600000023841858; C++ may add an f
            parsed = float(token[:-1] if token[-1] in "fF" and not token.lower().endswith("inf") else token)
        elif token in ("true", "True", "false", "False"):
            parsed = token in ("true", "True")
        elif _NAME.fullmatch(token):
            parsed = Enum(token)
        else:
            raise error(f"expected a value, found {_shown(token)}")
        take()
        return parsed

    def message(end: str) -> dict[str, list]:
        fields: dict[str, list] = {}
        opened = tokens[at - 1][1]
        while tokens[at][0] != end:
            if not tokens[at][0]:
                raise error(f"the file ends inside the message opened on line {opened}")
            if not _NAME.fullmatch(tokens[at][0]):
                raise error(f"expected a field name{' or ' + repr(end) if end else ''}, found {_shown(tokens[at][0])}")
            name = take()
            if tokens[at][0] not in _CLOSE:  # a message may omit the ':'
                take(":")
            if tokens[at][0] == "[":  # name: [a, b] is name: a name: b
                take("[")
                while tokens[at][0] != "]":
                    fields.setdefault(name, []).append(value())
                    if tokens[at][0] != "]":
                        take(",")
                take("]")
            else:
                fields.setdefault(name, []).append(value())
            if tokens[at][0] in (",", ";"):
                take()
        take(end)
        return fields

    return message("")


def _shown(token: str) -> str:
    return repr(token) if token else "the end of the file"


def _f32(value: float) -> float:
    """A float field as TF holds it (float32), shortest decimal: text_format's 0.600000023841858 is 0.6."""
    return float(str(np.float32(value)))


class _Message:
    """One message of the parsed config at ``path``: fields with TF's defaults, refusals naming the field."""

    def __init__(self, fields: dict[str, list], path: str, source: str):
        self.fields, self.path, self.source = fields, path, source

    def refuse(self, name: str, value: object, why: str) -> UserError:
        shown = value if isinstance(value, Enum) else repr(value)
        return UserError(f"{self.source}: {self.path}{name} = {shown} is not supported: {why}")

    def get(self, name: str, default: object, kind: type) -> object:
        values = self.fields.get(name, [default])
        if len(values) > 1:
            raise UserError(f"{self.source}: {self.path}{name} is given {len(values)} times (it is not repeated)")
        value = values[0]
        if kind is bool and type(value) is int and value in (0, 1):
            value = bool(value)  # text format takes 1 / 0 for true / false
        if kind is float and type(value) is int:
            value = float(value)
        if type(value) is not kind:  # exact: a bool is no int, an enum name no string
            raise self.refuse(name, value, f"expected {_KINDS[kind]}")
        return _f32(value) if kind is float else value

    def expect(self, name: str, default: object, kind: type, wanted: object, why: str) -> None:
        value = self.get(name, default, kind)
        if not (math.isclose(value, wanted, rel_tol=1e-3) if kind is float else value == wanted):
            raise self.refuse(name, value, why)

    def sub(self, name: str) -> _Message:
        values = self.fields.get(name, [{}])
        if len(values) > 1 or not isinstance(values[0], dict):
            raise self.refuse(name, values[0] if len(values) == 1 else values, "expected one message")
        return _Message(values[0], f"{self.path}{name}.", self.source)

    def one_of(self, wanted: str) -> _Message:
        """The message of the ``oneof`` that this message is in TF's protos, which must be ``wanted``."""
        if list(self.fields) != [wanted]:
            given = ", ".join(self.fields) or "(none)"
            raise UserError(f"{self.source}: {self.path[:-1]} = {given} is not supported: ours is {wanted}")
        return self.sub(wanted)


def _put(cfg: Config, section: str, key: str, value: object, field: _Message, name: str) -> Config:
    try:
        part = dataclasses.replace(getattr(cfg, section), **{key: value})
    except ConfigError as exc:
        raise field.refuse(name, value, str(exc)) from None
    return dataclasses.replace(cfg, **{section: part})


def pipeline_config(top: dict[str, list], base: Config, source: str) -> Config:
    """``base`` (tf_graph.tf_config of the graph's backbone) with the values of a parsed pipeline.config; a
    UserError names ``source``, the field path and the value of the first setting our model cannot follow."""
    ssd = _Message(top, "", source).sub("model").one_of("ssd")
    ssd.expect("num_classes", 0, int, 90, "ours are the 90 COCO ids (detector/weights/torchvision_ssdlite.py)")
    fe = ssd.sub("feature_extractor")
    ssd_type = "ssd_" + base.model.backbone
    fe.expect("type", "", str, ssd_type, f"the graph's weights are {ssd_type}'s")
    fe.expect("depth_multiplier", 1.0, float, 1.0, "ours is the paper's width 1.0")
    fe.expect("use_explicit_padding", False, bool, False, "ours is TF's SAME padding (model.padding tf_same)")
    coder = ssd.sub("box_coder").one_of("faster_rcnn_box_coder")
    for name, scale in (("y_scale", 10.0), ("x_scale", 10.0), ("height_scale", 5.0), ("width_scale", 5.0)):
        coder.expect(name, scale, float, scale, "ours are 10, 10, 5, 5 (detector/ssd/box_coder.py)")

    # detector/ssd/anchors.py builds exactly the paper's anchors: every other generator setting is refused
    anchors = ssd.sub("anchor_generator").one_of("ssd_anchor_generator")
    paper = "ours are the paper's anchors (detector/ssd/anchors.py)"
    for name, default, kind, wanted in (("num_layers", 6, int, 6), ("min_scale", 0.2, float, MIN_SCALE),
                                        ("max_scale", 0.95, float, MAX_SCALE),
                                        ("reduce_boxes_in_lowest_layer", True, bool, True),
                                        ("interpolated_scale_aspect_ratio", 1.0, float, 1.0),
                                        ("base_anchor_height", 1.0, float, 1.0),
                                        ("base_anchor_width", 1.0, float, 1.0)):  # fmt: skip
        anchors.expect(name, default, kind, wanted, paper)
    ratios = anchors.fields.get("aspect_ratios", [])  # TF uses the list as given: none means none
    if len(ratios) != len(PAPER_RATIOS) or not all(
        type(r) in (int, float) and math.isclose(r, p, rel_tol=1e-3) for r, p in zip(ratios, PAPER_RATIOS)
    ):
        raise anchors.refuse("aspect_ratios", ratios, f"{paper}: 1, 2, 0.5, 3, 1/3 in this order")
    for name in ("scales", "height_stride", "width_stride", "height_offset", "width_offset"):
        if name in anchors.fields:  # ours: scales from min / max_scale, strides and offsets from the feature maps
            raise anchors.refuse(name, anchors.fields[name], paper)

    resizer = ssd.sub("image_resizer").one_of("fixed_shape_resizer")
    resizer.expect("resize_method", Enum("BILINEAR"), Enum, "BILINEAR", "ours is TF's bilinear (data.resize)")
    resizer.expect("convert_to_grayscale", False, bool, False, "ours are RGB images")
    size = (resizer.get("height", 300, int), resizer.get("width", 300, int))
    cfg = _put(base, "model", "image_size", size, resizer, "height / width")

    post = ssd.sub("post_processing")
    # SIGMOID: a sigmoid per slot (the paper's focal loss); SOFTMAX: a softmax over the 91 slots, background
    # (slot 0) dropped after it, which is what the scores of our softmax_hnm models are
    converter = post.get("score_converter", Enum("IDENTITY"), Enum)
    kinds = {"SIGMOID": "focal", "SOFTMAX": "softmax_hnm"}
    if converter not in kinds:
        raise post.refuse("score_converter", converter, "ours are SIGMOID and SOFTMAX")
    cfg = _put(cfg, "loss", "kind", kinds[converter], post, "score_converter")
    post.expect("logit_scale", 1.0, float, 1.0, "our scores take the logits unscaled")
    if "calibration_config" in post.fields:
        raise post.refuse("calibration_config", Enum("{ ... }"), "our scores are uncalibrated")
    nms = post.sub("batch_non_max_suppression")
    nms.expect("use_class_agnostic_nms", False, bool, False, "ours is NMS per class")
    nms.expect("soft_nms_sigma", 0.0, float, 0.0, "ours is hard NMS")
    nms.expect(
        "use_combined_nms", False, bool, False, "ours is TF's multiclass NMS (combined NMS keeps zero-area boxes)"
    )
    # the background slot and the score function as our heads and post-processing have them
    ssd.expect("add_background_class", True, bool, True, "ours have a background slot 0")
    ssd.expect("explicit_background_class", False, bool, False, "ours add the background slot as TF does by default")
    predictor = ssd.sub("box_predictor")
    for kind in predictor.fields:
        predictor.sub(kind).expect("apply_sigmoid_to_scores", False, bool, False, "ours apply the score converter")
    for name, default, kind, key in (("score_threshold", 0.0, float, "score_thresh"),
                                     ("iou_threshold", 0.6, float, "nms_thresh"),
                                     ("max_detections_per_class", 100, int, "topk_per_class"),
                                     ("max_total_detections", 100, int, "max_detections")):  # fmt: skip
        cfg = _put(cfg, "postprocess", key, nms.get(name, default, kind), nms, name)
    # TF keeps max_detections_per_class of NMS's survivors and clips after NMS (multiclass_non_max_suppression)
    post_cfg = dataclasses.replace(cfg.postprocess, per_class_limit="after_nms", clip_boxes="after_nms")
    return dataclasses.replace(cfg, postprocess=post_cfg, data=dataclasses.replace(cfg.data, resize="tf_legacy"))
