"""``effdl recipes``: curated recipes, registered stages and their options, and recipe checks."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Curated recipes, the stages a recipe can name, and recipe validation.", no_args_is_help=True)


@app.command("list")
def list_cmd() -> None:
    """The curated recipes in recipes/ with their descriptions."""
    from rich.table import Table

    from effdl.cli import console
    from effdl.pipeline import variant_name
    from effdl.recipe import curated_recipe_path, list_curated, load_recipe

    table = Table(title="curated recipes (use with -r NAME)")
    for col in ("recipe", "stages", "variants", "description"):
        table.add_column(col)
    for name in list_curated():
        r = load_recipe(curated_recipe_path(name))  # type: ignore[arg-type]
        targets = ", ".join(variant_name(t, m) for t in r.targets for m in t.models)
        table.add_row(name, " -> ".join(s.stage for s in r.stages) or "-", targets, r.description)
    console.print(table)


@app.command("stages")
def stages_cmd() -> None:
    """Every registered stage: its kind (torch / onnx), what it does and its config keys with defaults."""
    from rich.markup import escape
    from rich.table import Table

    from effdl.cli import console
    from effdl.compress import STAGES

    table = Table(title="registered stages")
    for col in ("stage", "kind", "output", "what", "config keys (default)"):
        table.add_column(col)
    for name in STAGES.names():
        cls = STAGES.get(name)
        keys = ", ".join(
            f"{k}={'required' if f.is_required() else f.get_default(call_default_factory=True)!r}"
            for k, f in cls.Config.model_fields.items()
        )
        table.add_row(name, cls.kind, cls.default_output, cls.summary, escape(keys))
    console.print(table)


@app.command("check")
def check_cmd(recipe: Path = typer.Argument(..., help="Recipe YAML file to validate.")) -> None:
    """Validate a recipe (every key, every stage's config) without running it."""
    from effdl.cli import console
    from effdl.recipe import load_recipe

    r = load_recipe(recipe)
    console.print(
        f"{recipe}: ok ({len(r.stages)} stage(s): {', '.join(s.stage for s in r.stages) or '-'}; "
        f"targets: {', '.join(t.backend for t in r.targets)})"
    )
