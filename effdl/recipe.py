"""The recipe: a validated YAML file that says which stages run, for which targets, with which limits.

Unknown keys are rejected everywhere. Errors name the field path and, for YAML files, the line::

    recipe.yaml:12: stages.0.config.calibration.method: Input should be 'minmax', 'entropy', ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from effdl.errors import InputError, RecipeError, UnknownNameError

RECIPE_VERSION = 1


class Strict(BaseModel):
    """Base for recipe sections: unknown keys are errors, and values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ExportConfig(Strict):
    """torch -> ONNX export and its numerical check against torch."""

    opset: int = Field(18, ge=13, le=23, description="ONNX opset version.")
    dynamic_batch: bool = Field(True, description="Make the first dimension of every input and output dynamic.")
    exporter: Literal["dynamo", "torchscript"] = Field(
        "dynamo", description="torch.onnx exporter: the torch.export-based one, or the legacy TorchScript one."
    )
    atol: float = Field(1e-4, ge=0, description="Export check: allowed absolute error vs torch.")
    rtol: float = Field(1e-3, ge=0, description="Export check: allowed error relative to |torch output|.")
    check_samples: int = Field(64, ge=1, description="Held-out samples used for the export check.")


class StageSpec(Strict):
    """One compression stage: a registered stage name and that stage's own config."""

    stage: str = Field(description="Registered stage name (see `effdl recipes stages`).")
    output: str | None = Field(None, description="Name of the model this stage produces (default: the stage's).")
    input: str | None = Field(None, description="Name of the model the stage starts from (default: the latest).")
    config: dict[str, Any] = Field(default_factory=dict, description="The stage's own options.")


class TargetSpec(Strict):
    """Compile the named models for one backend."""

    backend: str = Field(description="Backend name (see `effdl backends`).")
    models: list[str] = Field(default_factory=lambda: ["fp32"], min_length=1, description="Models to compile.")
    device: str = Field("cpu", description="Backend device.")
    options: dict[str, Any] = Field(default_factory=dict, description="Backend compile/load options.")


class VerifyConfig(Strict):
    """Acceptance limits for every compiled variant, checked against the FP32 reference on held-out data."""

    samples: int | None = Field(None, ge=1, description="Held-out samples to verify on (default: all).")
    batch_size: int = Field(64, ge=1, description="Batch size for verification runs (1 if the batch is static).")
    max_metric_drop: float | None = Field(1.0, ge=0, description="Largest allowed task-metric loss vs reference.")
    min_agreement: dict[str, float] = Field(
        default_factory=dict,
        description="Minimum agreement with the reference outputs, e.g. {top1_agreement: 97} (keys from the task).",
    )
    max_abs_error: float | None = Field(None, ge=0, description="Largest allowed max |output - reference|.")


class BenchmarkConfig(Strict):
    """Single-stream latency benchmark of every accepted variant (each in a fresh process)."""

    enabled: bool = True
    warmup: int = Field(50, ge=0, description="Untimed queries before timing.")
    queries: int = Field(300, ge=1, description="Timed queries (at least).")
    min_duration_s: float = Field(0.0, ge=0, description="Keep timing until this many seconds have passed.")
    batch: int = Field(1, ge=1, description="Batch size of each query.")
    threads: int | None = Field(None, ge=1, description="Intra-op threads for every runtime (default: runtime's).")
    isolate: bool = Field(True, description="Time each variant alone in a fresh process (recommended).")


class Recipe(Strict):
    """A whole compression run."""

    version: Literal[1] = RECIPE_VERSION
    name: str | None = None
    description: str = ""
    task: str | None = Field(None, description="Task name; default: the one recorded in the checkpoint.")
    task_options: dict[str, Any] = Field(default_factory=dict)
    export: ExportConfig = Field(default_factory=ExportConfig)
    stages: list[StageSpec] = Field(default_factory=list)
    targets: list[TargetSpec] = Field(default_factory=lambda: [TargetSpec(backend="onnxruntime")], min_length=1)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    device: str = Field("auto", description="Device profile name, or 'auto' to match this host.")

    @field_validator("targets")
    @classmethod
    def _known_backends(cls, targets: list[TargetSpec]) -> list[TargetSpec]:
        from effdl.backends import BACKENDS

        for t in targets:
            if t.backend not in BACKENDS:
                raise ValueError(f"unknown backend {t.backend!r}; known: {', '.join(sorted(BACKENDS))}")
        return targets

    @model_validator(mode="after")
    def _models_exist(self) -> Recipe:
        from effdl.compress import STAGES

        produced = ["fp32"]
        for i, spec in enumerate(self.stages):
            stage_cls = STAGES.get(spec.stage) if spec.stage in STAGES else None
            if stage_cls is None:
                raise ValueError(
                    f"stages.{i}.stage: unknown stage {spec.stage!r}; known: {', '.join(sorted(STAGES.names()))}"
                )
            if spec.input is not None and spec.input not in produced:
                raise ValueError(f"stages.{i}.input: no model named {spec.input!r} before it (have {produced})")
            out = spec.output or stage_cls.default_output
            if stage_cls.kind == "torch":
                out = "fp32"  # torch stages transform the model that is then exported as fp32
            if out not in produced:
                produced.append(out)
        for i, t in enumerate(self.targets):
            if t.backend == "torch" and t.models != ["fp32"]:
                raise ValueError(
                    f"targets.{i}.models: the torch backend packages the torch model after the torch stages "
                    f"(models: [fp32]); choose its precision with options.precision, not {t.models}"
                )
            for m in t.models:
                if m not in produced:
                    raise ValueError(f"targets.{i}.models: no model named {m!r} is produced (have {produced})")
        return self

    def stage_configs(self) -> list[tuple[StageSpec, BaseModel]]:
        """Each stage spec with its config validated by the stage's Config class."""
        from effdl.compress import STAGES

        return [(s, STAGES.get(s.stage).Config.model_validate(s.config)) for s in self.stages]


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based YAML line naming the field at pydantic error location ``loc`` (or its closest parent)."""
    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(key)), None)
            if pair is None:
                return line
            node, line = pair[1], pair[0].start_mark.line + 1  # the line of the key names the field
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _format_errors(err: ValidationError, where: str, root: yaml.Node | None) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        path = ".".join(str(x) for x in loc) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        line = _line_of(root, loc)
        lines.append(f"{where}{f':{line}' if line else ''}: {path}: {msg}")
    return "\n".join(lines)


def _validate_stage_configs(recipe: Recipe, where: str, root: yaml.Node | None) -> None:
    from effdl.compress import STAGES

    for i, spec in enumerate(recipe.stages):
        try:
            STAGES.get(spec.stage).Config.model_validate(spec.config)
        except ValidationError as e:
            msgs = []
            for err in e.errors():
                loc = ("stages", i, "config", *err["loc"])
                line = _line_of(root, loc)
                msg = "unknown key (not allowed here)" if err["type"] == "extra_forbidden" else err["msg"]
                msgs.append(f"{where}{f':{line}' if line else ''}: {'.'.join(map(str, loc))}: {msg}")
            raise RecipeError("invalid recipe:\n" + "\n".join(msgs)) from None


def parse_recipe(data: dict[str, Any], where: str = "recipe", root: yaml.Node | None = None) -> Recipe:
    """Validate a recipe dict; errors become one :class:`RecipeError` listing every problem."""
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe must be a mapping of keys, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError("invalid recipe:\n" + _format_errors(e, where, root)) from None
    except UnknownNameError as e:
        raise RecipeError(f"{where}: {e.message}") from None
    _validate_stage_configs(recipe, where, root)
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file. ``path`` may also name a curated recipe in recipes/."""
    p = Path(path)
    if not p.exists():
        curated = curated_recipe_path(str(path))
        if curated is None:
            raise InputError(f"recipe not found: {path}", f"curated recipes: {', '.join(list_curated()) or '(none)'}")
        p = curated
    try:
        text = p.read_text()
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"{p}: not valid YAML: {e}") from None
    except OSError as e:
        raise InputError(f"cannot read recipe {p}: {e}") from None
    return parse_recipe(data if data is not None else {}, str(p), root)


def recipes_dir() -> Path | None:
    """The repository's curated recipes/ folder, when effdl runs from a source checkout."""
    d = Path(__file__).resolve().parent.parent / "recipes"
    return d if d.is_dir() else None


def list_curated() -> list[str]:
    d = recipes_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d else []


def curated_recipe_path(name: str) -> Path | None:
    d = recipes_dir()
    if d is None or "/" in name:
        return None
    p = d / (name if name.endswith(".yaml") else f"{name}.yaml")
    return p if p.is_file() else None
