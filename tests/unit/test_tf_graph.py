"""tools/convert.py's mapping, on frozen graphs written with TF's names, ops and layouts from TF's own
architecture tables (tests/tf_frozen_graph.py, independent of our model code): every weight of the graph is
used, permuted as TF's layouts require; graphs that are not the paper's are refused by node name; the zoo
archive works as a file and as the catalog names ``paper-v3-{large,small}-coco``. The numerical check against
an implementation of TF graphs is tests/unit/test_tf_opencv_parity.py."""

import tarfile

import pytest
import torch

from detector import build, checkpoint
from detector.errors import UserError
from detector.weights import catalog, hub, resolve
from detector.weights.resolve import load_model
from detector.weights.tf_graph import backbone_of, convert, name_map, read_consts, tf_config

from ..conftest import tool_in_process
from ..tf_frozen_graph import FE, frozen_graph, write_zoo_tarball

ARCHS = ["large", "small"]


def converted(path):
    consts = read_consts(path)
    model = build.build_model(tf_config(backbone_of(consts)).model, init=False)
    return model, convert(consts, model, str(path))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_weight_of_the_graph_is_used_in_its_layout(arch, tmp_path):
    graph, weights = frozen_graph(arch)
    (tmp_path / "g.pb").write_bytes(graph)
    model, state = converted(tmp_path / "g.pb")
    assert {row[0] for row in name_map(model)} == set(weights), "the converter reads exactly TF's weight names"
    assert len(name_map(model)) == len([k for k in state if not k.endswith("num_batches_tracked")])
    # the layouts, by hand: HWIO -> OIHW, (H, W, C, 1) -> (C, 1, H, W), box codes (ty, tx, th, tw) -> ours
    stem = weights[f"{FE}/Conv/weights"]
    assert torch.equal(state["backbone.stem.conv.weight"], torch.from_numpy(stem.transpose(3, 2, 0, 1)))
    dw = weights[f"{FE}/expanded_conv_1/depthwise/depthwise_weights"]
    assert torch.equal(state["backbone.blocks.1.depthwise.conv.weight"][5, 0], torch.from_numpy(dw[:, :, 5, 0]))
    box_w, box_b = (
        weights["BoxPredictor_1/BoxEncodingPredictor/weights"],
        weights["BoxPredictor_1/BoxEncodingPredictor/biases"],
    )
    for anchor in range(6):
        for ours, theirs in enumerate((1, 0, 3, 2)):
            assert state["box_heads.1.1.bias"][anchor * 4 + ours] == box_b[anchor * 4 + theirs]
            assert torch.equal(state["box_heads.1.1.weight"][anchor * 4 + ours, :, 0, 0],
                               torch.from_numpy(box_w[0, 0, :, anchor * 4 + theirs]))  # fmt: skip
    cls_b = weights["BoxPredictor_0/ClassPredictor/biases"]
    assert torch.equal(state["cls_heads.0.1.bias"], torch.from_numpy(cls_b)), "91 slots in TF's order"


def test_reads_through_identity_names(tmp_path):
    graph, weights = frozen_graph("small", read=True)
    (tmp_path / "g.pb").write_bytes(graph)
    _, state = converted(tmp_path / "g.pb")
    stem = torch.from_numpy(weights[f"{FE}/Conv/weights"].transpose(3, 2, 0, 1))
    assert torch.equal(state["backbone.stem.conv.weight"], stem)


def test_a_missing_or_misshaped_node_is_named(tmp_path):
    name = f"{FE}/expanded_conv_3/squeeze_excite/Conv/weights"
    (tmp_path / "missing.pb").write_bytes(frozen_graph("small", drop=name)[0])
    with pytest.raises(UserError, match=f"node '{name}' not found"):
        converted(tmp_path / "missing.pb")
    bad = "BoxPredictor_2/ClassPredictor/weights"
    (tmp_path / "shape.pb").write_bytes(frozen_graph("small", misshape=bad)[0])
    with pytest.raises(UserError, match=rf"node '{bad}' has shape \(545, 512, 1, 1\) .* expected \(546, 512, 1, 1\)"):
        converted(tmp_path / "shape.pb")
    not_a_graph = tmp_path / "x.pb"
    not_a_graph.write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="x.pb: not a TF GraphDef"):
        read_consts(not_a_graph)


def test_the_tool_converts_the_zoo_archive(tmp_path):
    graph, _ = frozen_graph("small")
    write_zoo_tarball(tmp_path / "zoo.tar.gz", "ssd_mobilenet_v3_small_coco_2020_01_14", graph)
    done = tool_in_process("tools/convert.py", str(tmp_path / "zoo.tar.gz"), "--out", str(tmp_path / "c.pt"))
    assert done.returncode == 0, done.stderr
    loaded = load_model(tmp_path / "c.pt")
    model, cfg = loaded.model, loaded.config
    assert cfg.model.padding == "tf_same" and loaded.post.per_class_limit == "after_nms"
    assert len(loaded.categories) == 90
    assert len(model.anchors) == 2034 and checkpoint.load(tmp_path / "c.pt")["source"].startswith("TF frozen graph")
    (tmp_path / "g.pb").write_bytes(graph)
    reference, state = converted(tmp_path / "g.pb")
    reference.load_state_dict(state)
    x = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        for a, b in zip(model(x), reference.eval()(x)):
            assert torch.equal(a, b)


def test_a_damaged_archive_is_refused(tmp_path):
    write_zoo_tarball(tmp_path / "zoo.tar.gz", "m", frozen_graph("small")[0])
    data = (tmp_path / "zoo.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.tar.gz: a damaged archive"):
        read_consts(tmp_path / "cut.tar.gz")
    with tarfile.open(tmp_path / "empty.tar.gz", "w:gz"):
        pass
    with pytest.raises(UserError, match="an archive without frozen_inference_graph.pb"):
        read_consts(tmp_path / "empty.tar.gz")


@pytest.mark.parametrize("arch", ARCHS)
def test_paper_names_load_the_zoo_archive_from_the_cache(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(hub.OFFLINE_VARIABLE, "1")
    entry = catalog.CATALOG[f"paper-v3-{arch}-coco"]
    offline = f"{entry.filename} is not in .* from {entry.url} .*: download it and put it in"
    with pytest.raises(UserError, match=offline):
        resolve.load_model(entry.name)
    graph, weights = frozen_graph(arch)
    hub.cached_path(entry).parent.mkdir(parents=True)
    write_zoo_tarball(hub.cached_path(entry), f"ssd_mobilenet_v3_{arch}_coco_2020_01_14", graph)
    loaded = resolve.load_model(entry.name)
    cfg = loaded.config
    assert cfg.model.backbone == entry.backbone and cfg.data.class_slots == "category_id"
    assert loaded.categories[0] == {"id": 1, "name": "person"} and loaded.post.nms_thresh == 0.6
    bias = torch.from_numpy(weights["BoxPredictor_5/ClassPredictor/biases"])
    assert torch.equal(loaded.model.state_dict()["cls_heads.5.1.bias"], bias)
