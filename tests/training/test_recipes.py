"""The shipped recipe is data, and the documented train command line is that recipe."""

import re
import shlex
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from cli import build_parser
from cli.training import recipe_from_args
from engine.vse.model import VSEConfig
from training.recipes import DEFAULT_RECIPE

MODEL_MD = Path(__file__).resolve().parents[2] / "docs" / "MODEL.md"


def _documented_default_command() -> list[str]:
    text = MODEL_MD.read_text()
    block = re.search(r"(python main\.py train --data \.\./shared/data/f30k8k_train(?:[^\n]*\\\n)*[^\n]*)", text)
    assert block, "docs/MODEL.md no longer shows the shipped recipe as a train command"
    return shlex.split(block.group(1).replace("\\\n", " "))[2:]


def test_documented_command_is_the_default_recipe():
    argv = _documented_default_command()
    assert "--text-cache" in argv
    recipe = recipe_from_args(build_parser().parse_args(argv))
    assert asdict(recipe.model) == asdict(DEFAULT_RECIPE.model)
    assert asdict(recipe.options) == asdict(DEFAULT_RECIPE.options)
    assert recipe == DEFAULT_RECIPE


def test_default_recipe_is_what_the_shipped_model_records():
    """The shipped checkpoint records the network and options it was trained with."""
    from engine.settings import DEFAULT_CHECKPOINT
    from engine.vse.checkpoint import read_checkpoint

    args = read_checkpoint(DEFAULT_CHECKPOINT)["training"]["args"]
    want = asdict(DEFAULT_RECIPE.options)
    recorded = {k: (tuple(v) if k == "views" else v) for k, v in args["options"].items()}
    assert {k: v for k, v in recorded.items() if k != "cache_dir"} == {k: v for k, v in want.items() if k != "cache_dir"}
    # recorded before the bank was fitted, and before VSEConfig had tuned_blocks (default 0)
    assert VSEConfig.from_dict(args["config"]) == DEFAULT_RECIPE.model


@pytest.mark.parametrize("change", [
    {"text_cache": "words"},
    {"text_cache": "pooled", "model": replace(DEFAULT_RECIPE.model, tuned_layers=1)},
    {"cached_features": True, "model": replace(DEFAULT_RECIPE.model, finetune=True)},
])
def test_impossible_recipes_are_refused(change):
    with pytest.raises(ValueError):
        replace(DEFAULT_RECIPE, **change)



@pytest.mark.slow  # EfficientNet-Lite2 features of 48 generated photos, MiniLM: ~1 min
def test_default_model_command_trains_and_ships_the_default_recipe(tmp_path, capsys):
    """`make default-model` is `main.py default-model`: it trains DEFAULT_RECIPE (too few pairs
    here for a 256 batch, so no step is taken, but every stage runs), fits the bank, calibrates
    on f30k8k_val and writes the checkpoint and caption bank where it is told to."""
    import json

    from engine.vse.checkpoint import load_checkpoint
    from main import main
    from tests.training.conftest import write_colour_dataset

    root = tmp_path / "data"
    write_colour_dataset(root / "f30k8k_train", seed=1)
    write_colour_dataset(root / "f30k8k_val", seed=2)
    out, bank = tmp_path / "shipped.pt", tmp_path / "caption_bank.txt"
    rc = main(["default-model", "--data-root", str(root), "--cache-dir", str(tmp_path / "cache"),
               "--run", str(tmp_path / "run" / "default.pt"), "--out", str(out), "--caption-bank", str(bank),
               "--threads", "1"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, ckpt = load_checkpoint(out)
    assert result["model_id"] == ckpt["model_id"]
    assert result["val_rsum"] == ckpt["metrics"]["val"]["rsum"]
    assert result["weak_match_threshold"] == ckpt["calibration"]["weak_match_threshold"]
    assert ckpt["calibration"]["calibrated_on"] == "f30k8k_val"
    options = {k: (tuple(v) if k == "views" else v) for k, v in ckpt["training"]["args"]["options"].items()}
    assert {k: v for k, v in options.items() if k != "cache_dir"} == {
        k: v for k, v in asdict(DEFAULT_RECIPE.options).items() if k != "cache_dir"
    }
    assert VSEConfig.from_dict(ckpt["training"]["args"]["config"]) == DEFAULT_RECIPE.model
    assert ckpt["metrics"]["bank_normalisation"]["bank_size"] == 16
    assert (tmp_path / "run" / "default.log.json").exists()
    assert len(bank.read_text().splitlines()) == 48  # 16 photos x 3 distinct captions
    from engine.caption_store import CaptionStore  # the bank's vectors ship beside the model

    assert CaptionStore.load(tmp_path / "shipped.captions.npz").model_id == ckpt["model_id"]
