from pathlib import Path

import pytest

from effdl.errors import InputError, RecipeError
from effdl.recipe import list_curated, load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_every_curated_recipe_validates() -> None:
    names = list_curated()
    assert "default" in names
    for name in names:
        recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
        assert recipe.targets


def test_curated_recipe_by_name() -> None:
    assert load_recipe("default").stages[0].stage == "quantize"


def test_unknown_top_level_key_names_field_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "version: 1\ntargest:\n  - backend: onnxruntime\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert f"{p}:2: targest: unknown key" in str(e.value)


def test_stage_config_typo_names_path(tmp_path: Path) -> None:
    p = write(tmp_path, "stages:\n  - stage: quantize\n    config:\n      calibraton: minmax\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert "stages.0.config.calibraton: unknown key" in str(e.value)
    assert ":4:" in str(e.value)


def test_bad_enum_value_lists_expected(tmp_path: Path) -> None:
    p = write(tmp_path, "stages:\n  - stage: quantize\n    config: {calibration: kl}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    msg = str(e.value)
    assert "stages.0.config.calibration" in msg and "'minmax'" in msg and "'entropy'" in msg


def test_unknown_stage_lists_known(tmp_path: Path) -> None:
    p = write(tmp_path, "stages:\n  - stage: quantise\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert "unknown stage 'quantise'" in str(e.value) and "quantize" in str(e.value)


def test_unknown_backend_lists_known(tmp_path: Path) -> None:
    p = write(tmp_path, "targets:\n  - backend: tensorflow\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert "targets" in str(e.value) and "unknown backend 'tensorflow'" in str(e.value)
    assert "onnxruntime" in str(e.value)


def test_target_needs_a_produced_model(tmp_path: Path) -> None:
    p = write(tmp_path, "targets:\n  - backend: onnxruntime\n    models: [int8]\n")
    with pytest.raises(RecipeError, match="no model named 'int8'"):
        load_recipe(p)


def test_missing_recipe_file() -> None:
    with pytest.raises(InputError, match="recipe not found"):
        load_recipe("/nonexistent/recipe.yaml")


def test_invalid_yaml(tmp_path: Path) -> None:
    p = write(tmp_path, "stages: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(p)


def test_not_a_mapping() -> None:
    with pytest.raises(RecipeError, match="must be a mapping"):
        parse_recipe([1, 2])  # type: ignore[arg-type]


def test_defaults() -> None:
    r = parse_recipe({})
    assert r.export.dynamic_batch and r.export.opset == 18
    assert [t.backend for t in r.targets] == ["onnxruntime"]
    assert r.benchmark.batch == 1
