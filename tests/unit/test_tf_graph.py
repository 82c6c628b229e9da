"""tools/convert_tf.py's mapping: a frozen graph written here with TF's Const names and layouts (our random
weights turned into TF's) converts back to the same weights; graphs that are not the paper's are refused."""

import numpy as np
import pytest
import torch

from detector import build, checkpoint
from detector.errors import UserError
from detector.weights.tf_graph import backbone_of, convert, name_map, read_consts, tf_config

from ..conftest import randomise_batchnorm, run_tool

graph_pb2 = pytest.importorskip("tensorboard.compat.proto.graph_pb2")
tensor_util = pytest.importorskip("tensorboard.util.tensor_util")


def to_tf(value: np.ndarray, layout: str) -> np.ndarray:
    """Our layout -> TF's (the inverse of the converter's)."""
    if layout.startswith("box"):  # per anchor (tx, ty, tw, th) -> (ty, tx, th, tw)
        value = value.reshape(-1, 4, *value.shape[1:])[:, [1, 0, 3, 2]].reshape(value.shape)
    if layout in ("conv", "box_conv"):
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if layout == "dw":
        return value.transpose(2, 3, 0, 1)  # (C, 1, H, W) -> (H, W, C, 1)
    return value


def write_graph(path, model, drop: str | None = None, reshape: str | None = None, read: bool = False) -> None:
    """A GraphDef of Consts named as TF names the weights of ``model`` (and a Placeholder, as real graphs have)."""
    graph = graph_pb2.GraphDef()
    graph.node.add(name="normalized_input_image_tensor", op="Placeholder")
    state = model.state_dict()
    for tf_name, key, layout in name_map(model):
        if tf_name == drop:
            continue
        value = to_tf(state[key].numpy(), layout)
        if tf_name == reshape:
            value = value[..., :-1]
        node = graph.node.add(name=tf_name + ("/read" if read else ""), op="Const")
        node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(np.ascontiguousarray(value)))
    path.write_bytes(graph.SerializeToString())


@pytest.fixture(scope="module", params=["mobilenet_v3_large", "mobilenet_v3_small"])
def source(request):
    torch.manual_seed(0)
    model = build.build_model(tf_config(request.param).model).eval()
    randomise_batchnorm(model)
    return model


def test_round_trip_gives_every_weight_back(source, tmp_path):
    write_graph(tmp_path / "g.pb", source)
    consts = read_consts(tmp_path / "g.pb")
    cfg = tf_config(backbone_of(consts))
    assert cfg.model.backbone == ("mobilenet_v3_large" if len(source.backbone.blocks) == 15 else "mobilenet_v3_small")
    model = build.build_model(cfg.model, init=False)
    state = convert(consts, model, "g.pb")
    for key, value in source.state_dict().items():
        assert torch.equal(state[key], value), key
    names = [row[0] for row in name_map(model)]
    assert len(names) == len(set(names)) and len(names) == len(
        [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    )


def test_reads_through_identity_names(source, tmp_path):
    write_graph(tmp_path / "g.pb", source, read=True)
    consts = read_consts(tmp_path / "g.pb")
    state = convert(consts, build.build_model(tf_config(backbone_of(consts)).model, init=False), "g.pb")
    assert torch.equal(state["backbone.stem.conv.weight"], source.state_dict()["backbone.stem.conv.weight"])


def test_a_missing_or_misshaped_node_is_named(source, tmp_path):
    if source_backbone(source) == "mobilenet_v3_large":
        pytest.skip("the refusals are the same code for both; Small is enough")
    name = "FeatureExtractor/MobilenetV3/expanded_conv_3/squeeze_excite/Conv/weights"
    write_graph(tmp_path / "missing.pb", source, drop=name)
    model = build.build_model(tf_config(source_backbone(source)).model, init=False)
    with pytest.raises(UserError, match=f"node '{name}' not found"):
        convert(read_consts(tmp_path / "missing.pb"), model, "missing.pb")
    bad = "BoxPredictor_2/ClassPredictor/weights"
    write_graph(tmp_path / "shape.pb", source, reshape=bad)
    with pytest.raises(UserError, match=f"node '{bad}' has shape .* expected"):
        convert(read_consts(tmp_path / "shape.pb"), model, "shape.pb")


def source_backbone(model) -> str:
    return "mobilenet_v3_large" if len(model.backbone.blocks) == 15 else "mobilenet_v3_small"


def test_the_tool_writes_a_checkpoint_the_other_tools_load(source, tmp_path):
    if source_backbone(source) == "mobilenet_v3_large":
        pytest.skip("the tool is the same for both; Small is enough (its round trip above covers Large)")
    write_graph(tmp_path / "g.pb", source)
    done = run_tool("tools/convert_tf.py", str(tmp_path / "g.pb"), "--out", str(tmp_path / "c.pt"), timeout=300)
    assert done.returncode == 0, done.stderr
    model, post, categories, cfg = build.load_detector(tmp_path / "c.pt")
    assert cfg.model.padding == "tf_same" and post.per_class_limit == "after_nms" and len(categories) == 90
    assert len(model.anchors) == 2034 and checkpoint.load(tmp_path / "c.pt")["source"].startswith("TF frozen graph")
    x = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        for a, b in zip(model(x), source(x)):
            assert torch.equal(a, b)
    not_a_graph = tmp_path / "x.pb"
    not_a_graph.write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="x.pb: not a TF GraphDef"):
        read_consts(not_a_graph)
