"""The recipes in configs/: the paper ones are generated from Table 6, every one is complete."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from detector.config import Config, load
from detector.paper.table6 import ROWS, paper_recipe, recipe_file_name, recipe_yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_paper_recipes_are_generated_from_the_rows():
    files = sorted(p.name for p in CONFIGS.glob("table6_*_paper.yaml"))
    assert files == sorted(recipe_file_name(row) for row in ROWS)
    assert len(files) == len(ROWS) == 11
    for row in ROWS:
        text = (CONFIGS / recipe_file_name(row)).read_text(encoding="utf-8")
        assert text == recipe_yaml(row), f"{recipe_file_name(row)}: run tools/table6.py --write-recipes configs"


def missing_and_unknown(cls: type, data: object, prefix: str = "") -> list[str]:
    """Keys of ``cls`` (recursively) absent from ``data``, and keys of ``data`` that ``cls`` does not have."""
    assert isinstance(data, dict), f"{prefix or 'top level'}: not a mapping"
    problems = []
    for f in dataclasses.fields(cls):
        if f.name not in data:
            problems.append(f"missing {prefix}{f.name}")
        elif dataclasses.is_dataclass(f.default_factory):
            problems += missing_and_unknown(f.default_factory, data[f.name], f"{prefix}{f.name}.")
    names = {f.name for f in dataclasses.fields(cls)}
    problems += [f"unknown {prefix}{key}" for key in data if key not in names]
    return problems


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_is_complete(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert missing_and_unknown(Config, data) == []


def test_the_walk_sees_missing_and_unknown_keys():
    data = dataclasses.asdict(Config())
    assert missing_and_unknown(Config, data) == []
    del data["train"]["checkpoint_every"]
    data["data"]["extra"] = 1
    assert missing_and_unknown(Config, data) == ["unknown data.extra", "missing train.checkpoint_every"]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_paper_recipe_model_is_the_row_model(row):
    assert paper_recipe(row).model == row.model_config()
    assert load(CONFIGS / recipe_file_name(row)).model == row.model_config()
