"""Named weights through torch's hub cache (files made here, no network) and starting a model from weights."""

import dataclasses

import pytest
import torch
import torchvision
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from detector import checkpoint
from detector.build import build_model
from detector.config import Config, ModelConfig, to_dict
from detector.errors import UserError
from detector.weights import catalog, hub, resolve
from detector.weights.torchvision_ssdlite import coco_categories
from detector.weights.transfer import imagenet_backbone_state

from ..conftest import randomise_batchnorm


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty hub cache under tmp_path; downloads are forbidden."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(hub.OFFLINE_VARIABLE, "1")
    return tmp_path / "torch" / "hub" / "checkpoints"


def install(name: str, state: dict, monkeypatch) -> None:
    """Save ``state`` under the catalog's file name and let the catalog trust that file's hash."""
    entry = catalog.CATALOG[name]
    path = hub.cached_path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    monkeypatch.setitem(catalog.CATALOG, name, dataclasses.replace(entry, sha256=hub.sha256_of(path)))


def random_classifier(variant: str) -> torch.nn.Module:
    model = getattr(torchvision.models, f"mobilenet_v3_{variant}")().eval()
    randomise_batchnorm(model)
    return model


def test_catalog_entries_are_complete():
    for entry in catalog.CATALOG.values():
        assert entry.url.startswith("https://")
        if entry.kind == "tf-frozen-graph":  # TF's zoo publishes no checksum or size
            assert entry.sha256 == "" and entry.filename == f"ssd_{entry.backbone}_coco_2020_01_14.tar.gz"
            continue
        assert len(entry.sha256) == 64 and entry.size > 1_000_000
        # torchvision's file names carry the first 8 hex digits of the SHA-256
        assert entry.filename.rsplit("-", 1)[1].split(".")[0] == entry.sha256[:8]
    assert catalog.DEFAULT_DETECTOR in catalog.CATALOG


def test_torchvision_coco_loads_from_the_cache(cache, monkeypatch):
    tv = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None).eval()
    install("torchvision-coco", tv.state_dict(), monkeypatch)
    loaded = resolve.load_model("torchvision-coco")
    categories = loaded.categories
    assert categories == coco_categories() and len(categories) == 90 and categories[0]["name"] == "person"
    assert loaded.config.model.layout == "torchvision" and len(loaded.model.anchors) == 3234
    assert loaded.source.startswith("torchvision-coco: ")
    head = tv.state_dict()["head.classification_head.module_list.0.1.weight"]
    assert torch.equal(loaded.model.state_dict()["cls_heads.0.1.weight"], head)


@pytest.mark.parametrize("variant,reduced", [("large", False), ("large", True), ("small", False), ("small", True)])
def test_imagenet_backbone_loads_every_tensor_that_fits(cache, monkeypatch, variant, reduced):
    classifier = random_classifier(variant)
    install(f"imagenet-{variant}", classifier.state_dict(), monkeypatch)
    model = build_model(ModelConfig(backbone=f"mobilenet_v3_{variant}", reduced_tail=reduced, num_classes=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    summary = resolve.initialise(model, f"imagenet-{variant}", f"mobilenet_v3_{variant}", names)
    source = imagenet_backbone_state(classifier.state_dict(), model.backbone)
    after = model.state_dict()
    for key in summary.loaded:
        assert torch.equal(after[key], source[key]), key
    for key in summary.reinitialised + summary.missing:
        assert torch.equal(after[key], before[key]), key
    assert sorted(summary.skipped) == sorted(k for k in classifier.state_dict() if k.startswith("classifier."))
    assert all(k.startswith("backbone.") for k in summary.loaded)
    backbone_keys = [k for k in after if k.startswith("backbone.")]
    if reduced:  # the tail after C4 has other shapes and stays at its initialisation
        assert summary.reinitialised and all(".blocks." in k or "last_conv" in k for k in summary.reinitialised)
        assert sorted(summary.loaded + summary.reinitialised) == sorted(backbone_keys)
    else:
        assert sorted(summary.loaded) == sorted(backbone_keys) and not summary.reinitialised


def test_imagenet_weights_for_another_backbone_are_refused(cache, monkeypatch):
    install("imagenet-small", random_classifier("small").state_dict(), monkeypatch)
    model = build_model(ModelConfig(num_classes=1))
    with pytest.raises(UserError, match="mobilenet_v3_small weights; model.backbone is mobilenet_v3_large"):
        resolve.initialise(model, "imagenet-small", "mobilenet_v3_large", [{"id": 1, "name": "a"}])


def test_missing_file_offline_names_file_url_and_folder(cache):
    entry = catalog.CATALOG["imagenet-large"]
    with pytest.raises(UserError) as err:
        resolve.initialise(build_model(ModelConfig(num_classes=1)), "imagenet-large", "mobilenet_v3_large", [])
    message = str(err.value)
    assert entry.filename in message and entry.url in message and str(cache) in message
    assert "\n" not in message


def test_corrupt_file_is_refused_with_the_hash_it_should_have(cache):
    entry = catalog.CATALOG["torchvision-coco"]
    path = hub.cached_path(entry)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the weights")
    with pytest.raises(UserError) as err:
        resolve.load_model("torchvision-coco")
    assert str(path) in str(err.value) and entry.sha256 in str(err.value)
    assert path.exists()  # the user's file is theirs to delete


def test_a_classifier_name_is_not_a_detector(cache):
    with pytest.raises(UserError, match="--init imagenet-large"):
        resolve.load_model("imagenet-large")


def test_unknown_spec_lists_the_names(cache):
    with pytest.raises(UserError, match="torchvision-coco"):
        resolve.load_model("no-such-weights")


def _tiny_detector(tmp_path, names: list[str], seed: int):
    cfg = Config()
    cfg.model = ModelConfig(backbone="mobilenet_v3_small", image_size=(64, 64), num_classes=len(names))
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    randomise_batchnorm(model)
    categories = [{"id": 10 + i, "name": n} for i, n in enumerate(names)]
    path = tmp_path / f"{'-'.join(names)}.pt"
    checkpoint.save(path, {"model": model.state_dict(), "config": to_dict(cfg), "categories": categories})
    return path, model, cfg, categories


def test_class_rows_follow_the_category_names(tmp_path):
    path, old, _, _ = _tiny_detector(tmp_path, ["a", "b", "c"], seed=0)
    cfg = ModelConfig(backbone="mobilenet_v3_small", image_size=(64, 64), num_classes=3)
    torch.manual_seed(1)
    new = build_model(cfg)
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    summary = resolve.initialise(new, str(path), cfg.backbone, [{"id": 1, "name": "C"}, {"id": 2, "name": "b"},
                                                                {"id": 3, "name": "d"}])  # fmt: skip
    assert (summary.carried, summary.new, summary.dropped) == (["C", "b"], ["d"], ["a"])
    assert not summary.reinitialised and not summary.skipped
    before, after = old.state_dict(), new.state_dict()
    for level in range(len(old.cls_heads)):
        for part in ("weight", "bias"):
            key = f"cls_heads.{level}.1.{part}"
            o = before[key].reshape(-1, 4, *before[key].shape[1:])  # (anchors, background + a, b, c, ...)
            n = after[key].reshape(-1, 4, *after[key].shape[1:])  # (anchors, background + C, b, d, ...)
            f = fresh[key].reshape(n.shape)
            assert torch.equal(n[:, 0], o[:, 0]) and torch.equal(n[:, 1], o[:, 3]) and torch.equal(n[:, 2], o[:, 2])
            assert torch.equal(n[:, 3], f[:, 3])
    for key, value in before.items():  # everything else is the old model's
        if ".1." not in key or not key.startswith("cls_heads"):
            assert torch.equal(after[key], value), key


def test_init_that_fits_nothing_is_an_error(tmp_path):
    path, *_ = _tiny_detector(tmp_path, ["a"], seed=0)
    model = build_model(ModelConfig(backbone="mobilenet_v3_large", width=0.5, num_classes=1))
    with pytest.raises(UserError, match="no convolution of it fits"):
        resolve.initialise(model, str(path), "mobilenet_v3_large", [{"id": 1, "name": "a"}])


def test_a_run_with_ema_ships_the_ema_weights(tmp_path):
    """best.pt is chosen by the AP of the EMA weights: loading and --init take those, not the raw ones."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    path, model, cfg, categories = _tiny_detector(tmp_path, ["a", "b"], seed=0)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the raw weights move on after the EMA's last update
    payload = {"model": model.state_dict(), "ema": ema.state_dict(), "config": to_dict(cfg), "categories": categories}
    checkpoint.save(path, payload)
    shipped = {k.removeprefix("module."): v for k, v in ema.state_dict().items() if k != "n_averaged"}
    loaded = resolve.load_model(path).model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in shipped.items()) and set(loaded) == set(shipped)
    fresh = build_model(cfg.model)
    resolve.initialise(fresh, str(path), cfg.model.backbone, categories)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in shipped.items())
    checkpoint.save(path, {**payload, "ema": None})  # a run without EMA ships its model
    assert torch.equal(resolve.load_model(path).model.cls_heads[0][1].bias, model.cls_heads[0][1].bias)
