"""Report JSON schema, Markdown and HTML renderings, Pareto front, comparison and the `effdl report` command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from effdl.benchmark.stats import summarize
from effdl.errors import InputError
from effdl.report import (
    SCHEMA,
    compare,
    load_report,
    pareto_front,
    render_comparison_html,
    render_comparison_markdown,
    render_html,
    render_markdown,
    validate_report,
    write_report,
)


def _bench(median_ms: float, spread: float, seed: int, *, energy: dict[str, Any] | None = None) -> dict[str, Any]:
    """A benchmark block from synthetic log-normal latencies, summarised by effdl's own statistics."""
    rng = np.random.default_rng(seed)
    lat_s = median_ms * 1e-3 * rng.lognormal(0.0, spread, size=300)
    stats = summarize(lat_s, batch=1)
    return {
        "scenario": "single-stream",
        "batch": 1,
        "threads": 2,
        "warmup": 50,
        "method": "perf_counter around each call, in a fresh process per variant, after warm-up",
        **stats,
        "peak_rss_bytes": 180_000_000 + seed * 1_000_000,
        "energy": energy,
    }


def _verification(metric: float, drop: float, agree: float, err: float, passed: bool, failures=()) -> dict:
    return {
        "samples": 500,
        "max_abs_error": err,
        "mean_abs_error": err / 8,
        "top1_agreement": agree,
        "metric": metric,
        "metric_drop": drop,
        "limits": {"max_metric_drop": 1.0, "min_top1_agreement": 97.0, "max_abs_error": None},
        "passed": passed,
        "failures": list(failures),
    }


def make_report(*, title: str = "resnet8 on digits", host: str = "box-a", version: str = "0.1.0") -> dict[str, Any]:
    """A schema-valid compress report: 4 variants, one refused, one with an energy estimate."""
    ref = _bench(4.0, 0.08, 1)
    fp32 = _bench(1.1, 0.1, 2)
    int8 = _bench(0.45, 0.12, 3, energy=None)
    int8["energy"] = {
        "joules_per_inference": 0.0021,
        "inferences_per_joule": 476.2,
        "method": "device profile TDP x measured latency",
        "estimate": True,
        "assumptions": "package power at 35 W TDP for the whole query",
    }
    bad = _bench(0.40, 0.45, 4)  # wide spread: flagged noisy
    variants = [
        {
            "name": "torch-fp32",
            "backend": "torch",
            "model": "fp32",
            "precision": "fp32",
            "files": [],
            "size_bytes": 1232296,
            "accepted": True,
            "reason": None,
            "runtime_info": {"threads": 2},
            "verification": None,
            "metric": 99.2,
            "benchmark": ref,
            "speedup": 1.0,
        },
        {
            "name": "onnxruntime-fp32",
            "backend": "onnxruntime",
            "model": "fp32",
            "precision": "fp32",
            "files": ["models/fp32.onnx"],
            "size_bytes": 1240000,
            "accepted": True,
            "reason": None,
            "runtime_info": {"threads": 2},
            "verification": _verification(99.2, 0.0, 100.0, 1.2e-6, True),
            "metric": 99.2,
            "benchmark": fp32,
            "speedup": ref["latency_ms"]["p50"] / fp32["latency_ms"]["p50"],
        },
        {
            "name": "onnxruntime-int8",
            "backend": "onnxruntime",
            "model": "int8",
            "precision": "int8",
            "files": ["models/int8.onnx"],
            "size_bytes": 345678,
            "accepted": True,
            "reason": None,
            "runtime_info": {"threads": 2},
            "verification": _verification(98.9, 0.3, 99.4, 0.031, True),
            "metric": 98.9,
            "benchmark": int8,
            "speedup": ref["latency_ms"]["p50"] / int8["latency_ms"]["p50"],
        },
        {
            "name": "openvino-int4",
            "backend": "openvino",
            "model": "int4",
            "precision": "int4 weights",
            "files": ["models/int4.xml", "models/int4.bin"],
            "size_bytes": 190000,
            "accepted": False,
            "reason": "metric drop 6.40 exceeds max_metric_drop 1.0",
            "runtime_info": {"inference_precision": "f32", "threads": 2},
            "verification": _verification(92.8, 6.4, 91.0, 0.9, False, ["top1_agreement 91.0 < 97.0"]),
            "metric": 92.8,
            "benchmark": bad,
            "speedup": ref["latency_ms"]["p50"] / bad["latency_ms"]["p50"],
        },
    ]
    return {
        "schema": SCHEMA,
        "effdl_version": version,
        "created": "2026-11-26T08:10:00Z",
        "kind": "compress",
        "title": title,
        "source": {
            "path": "runs/demo/resnet8.safetensors",
            "format": "safetensors",
            "sha256": "ab" * 32,
            "arch": "resnet8",
            "task": "digits",
            "parameters": 308074,
            "macs": 48530000,
        },
        "recipe": {"stages": [{"quantize": {"method": "static"}}]},
        "task": {
            "task": "digits",
            "metric": "top1",
            "unit": "%",
            "higher_is_better": True,
            "seed": 0,
            "sizes": {"train": 1197, "calibration": 100, "heldout": 500},
        },
        "system": {
            "hostname": host,
            "cpu": "Intel(R) Xeon(R) Platinum",
            "cores": 2,
            "isa": ["avx512_vnni", "amx_int8"],
            "memory_gb": 23.4,
            "os": "Linux 6.1",
            "python": "3.11.7",
            "libraries": {"torch": "2.13.0", "onnxruntime": "1.32.0", "openvino": "2026.4.1"},
        },
        "device": {"profile": "x86-64-avx512-vnni", "tdp_w": 35},
        "stages": [
            {"name": "load", "seconds": 0.3, "details": {"format": "safetensors"}},
            {"name": "baseline", "seconds": 1.2, "details": {"metric": 99.2}},
            {"name": "export", "seconds": 2.5, "details": {"opset": 18, "max_abs_error": 1.2e-6}},
            {"name": "quantize", "seconds": 4.0, "details": {"method": "static", "calibration": "minmax"}},
        ],
        "reference": "torch-fp32",
        "variants": variants,
        "summary": {"best": "onnxruntime-int8", "notes": ["openvino-int4 refused: accuracy"]},
    }


def _set(d: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with value=_DELETE remove) a dotted path like "variants.1.benchmark.latency_ms.p50"."""
    *parents, last = path.split(".")
    for p in parents:
        d = d[int(p)] if isinstance(d, list) else d[p]
    if value is _DELETE:
        del d[last]
    elif isinstance(d, list):
        d[int(last)] = value
    else:
        d[last] = value


_DELETE = object()


def _table_row(markdown: str, first_cell: str) -> list[str]:
    """The cells of the Markdown table row whose first cell is ``first_cell``."""
    for line in markdown.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [c.strip() for c in line.strip().strip("|").split(" | ")]
    raise AssertionError(f"no table row starting with {first_cell!r}")


# ------------------------------------------------------------------------------------------ pareto front


def test_pareto_front_higher_is_better() -> None:
    # (latency, accuracy): 0 and 2 and 4 are on the front; 1 is beaten by 0, 3 by 2, 5 has no value.
    points = [(1.0, 90.0), (2.0, 89.0), (3.0, 95.0), (4.0, 95.0), (5.0, 97.0), (0.5, None)]
    assert pareto_front(points, higher_is_better=True) == [0, 2, 4]


def test_pareto_front_lower_is_better_and_ties() -> None:
    # Quality is an error (lower better): (1, 5) and (2, 1) are on the front, (3, 1) is beaten by (2, 1).
    points = [(3.0, 1.0), (1.0, 5.0), (2.0, 1.0), (2.0, 1.0), (float("nan"), 0.0)]
    assert pareto_front(points, higher_is_better=False) == [1, 2, 3]  # identical points both kept
    assert pareto_front([], higher_is_better=True) == []
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_pareto_front_matches_brute_force_on_random_points() -> None:
    rng = np.random.default_rng(7)
    pts = [(float(a), float(b)) for a, b in rng.integers(0, 6, size=(40, 2))]
    front = set(pareto_front(pts, higher_is_better=True))
    for i, (c, q) in enumerate(pts):
        beaten = any((c2 <= c and q2 >= q) and (c2, q2) != (c, q) for c2, q2 in pts)
        assert (i in front) == (not beaten)


# ------------------------------------------------------------------------------------------ validation


def test_synthetic_report_is_valid_and_loads(tmp_path: Path) -> None:
    report = make_report()
    assert validate_report(report) is report
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    assert load_report(path) == report
    assert load_report(tmp_path / "r.json") == report


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("schema", _DELETE, "field 'schema' is missing"),
        ("schema", "effdl.report/2", "this effdl reads 'effdl.report/1'"),
        ("kind", "train", "field 'kind' is 'train'"),
        ("title", 3, "field 'title' must be a string"),
        ("system", None, "field 'system' must be an object, got null"),
        ("variants", [], "field 'variants' is empty"),
        ("reference", "nope", "field 'reference' names 'nope'"),
        ("task.higher_is_better", _DELETE, "field 'task.higher_is_better' is missing"),
        ("stages.2.seconds", "fast", "field 'stages[2].seconds' must be a number"),
        ("variants.0.accepted", "yes", "field 'variants[0].accepted' must be true or false"),
        ("variants.2.metric", True, "field 'variants[2].metric' must be a number, got bool"),
        ("variants.3.reason", None, "field 'variants[3].reason' must say why"),
        ("variants.1.name", "torch-fp32", "field 'variants[1].name' 'torch-fp32' is not unique"),
        ("variants.1.benchmark.latency_ms.p50", "fast", "field 'variants[1].benchmark.latency_ms.p50' must be a num"),
        ("variants.1.benchmark.samples_ms", [1.0, "x"], "variants[1].benchmark.samples_ms' must be a list of num"),
        ("variants.2.benchmark.energy.estimate", _DELETE, "field 'variants[2].benchmark.energy.estimate' is missing"),
        ("variants.2.verification.samples", 1.5, "field 'variants[2].verification.samples' must be an integer"),
    ],
)
def test_validate_names_the_field(path: str, value: Any, expected: str) -> None:
    report = make_report()
    _set(report, path, value)
    with pytest.raises(InputError) as info:
        validate_report(report, "runs/x/report.json")
    assert str(info.value).startswith("runs/x/report.json: ")
    assert expected in str(info.value)


def test_validate_rejects_non_objects_and_comparisons() -> None:
    with pytest.raises(InputError, match="must be a JSON object"):
        validate_report([1, 2])
    with pytest.raises(InputError, match="comparison"):
        validate_report({"schema": "effdl.comparison/1"})


def test_load_report_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_report(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "effdl.report/1",\n  "kind": }')
    with pytest.raises(InputError, match=r"bad.json: not valid JSON \(line 2"):
        load_report(bad)
    with pytest.raises(InputError, match="folder without a report.json"):
        load_report(tmp_path)


# ------------------------------------------------------------------------------------------ markdown


def test_markdown_has_every_variant_row_and_the_method() -> None:
    report = make_report()
    md = render_markdown(report)
    assert md.startswith("# resnet8 on digits\n")
    header = _table_row(md, "variant")
    assert header[:5] == ["variant", "backend", "precision", "accepted", "top1 (%)"]
    for col in ("metric drop", "top-1 agreement (%)", "max abs error", "p50 ms", "p90 ms", "p99 ms", "size"):
        assert col in header
    int8 = dict(zip(header, _table_row(md, "onnxruntime-int8"), strict=True))
    v = report["variants"][2]
    assert int8["accepted"] == "yes" and int8["top1 (%)"] == "98.90" and int8["metric drop"] == "0.30"
    assert int8["top-1 agreement (%)"] == "99.40" and int8["max abs error"] == "3.10e-02"
    assert float(int8["p50 ms"]) == pytest.approx(v["benchmark"]["latency_ms"]["p50"], rel=5e-3)
    assert float(int8["p99 ms"]) == pytest.approx(v["benchmark"]["latency_ms"]["p99"], rel=5e-3)
    assert float(int8["speedup vs ref"].rstrip("×")) == pytest.approx(v["speedup"], rel=5e-3)
    assert int8["J / inference"] == "0.00210 (est.)" and int8["size"] == "337.6 KiB"
    ref = _table_row(md, "torch-fp32 (reference)")
    assert ref[3] == "yes" and ref[5] == "-"  # the reference has no verification, so no drop
    refused = dict(zip(header, _table_row(md, "openvino-int4 (noisy)"), strict=True))
    assert refused["accepted"] == "refused"
    assert (
        "- openvino-int4: metric drop 6.40 exceeds max_metric_drop 1.0 (failures: top1_agreement 91.0 &lt; 97.0)" in md
    )
    report["variants"][3]["reason"] = "metric drop 6.40 > 1.0; top1_agreement 91.0 < 97.0"  # joins the failures
    assert "- openvino-int4: metric drop 6.40 &gt; 1.0; top1_agreement 91.0 &lt; 97.0\n" in render_markdown(report)
    for stage in ("load", "baseline", "export", "quantize"):
        assert _table_row(md, stage)
    assert "| quantize | 4.00 | method=static, calibration=minmax |" in md
    method = md[md.index("## How these numbers were measured") :]
    assert "perf_counter around each call, in a fresh process per variant" in method
    assert "50 warm-up queries (not timed), then 300 timed queries" in method
    assert "2 threads" in method
    assert "Flagged noisy" in method and "openvino-int4 (CV 0.4" in method
    assert "Throughput = batch size / mean latency" in method
    assert "0.00210 J per inference (ESTIMATE; device profile TDP x measured latency)" in method
    assert "max_metric_drop 1, min_top1_agreement 97" in method
    measured = dict(zip(_table_row(method, "variant"), _table_row(method, "openvino-int4"), strict=True))
    assert measured["noisy"] == "yes" and measured["peak RSS"] == "175.5 MiB"  # 184e6 bytes
    assert measured["timed queries"] == "300" and measured["threads"] == "2"


def test_moe_stages_get_a_table_per_layer_in_markdown_and_html() -> None:
    report = make_report()
    hist = [1472, 1640, 1560, 1155, 1610, 1342, 1650, 2772]
    before = {"experts": 8, "experts_per_token": 2.0, "active_parameters_per_token": 132746.0,
              "macs_per_token": 131594.0, "tokens_per_expert": hist}  # fmt: skip
    after = {"experts": 4, "experts_per_token": 1.0, "active_parameters_per_token": 66368.0, "macs_per_token": 65792.0,
             "tokens_per_expert": [1797, 621, 1574, 2608]}  # fmt: skip
    slim = {"layers": {"blocks.0.mlp": {"before": before, "experts_kept": [0, 3, 5, 7], "after": after}}}
    ffn = {"neurons_per_expert": [192] * 8, "tokens_per_expert": [5, 9, 0, 2, 7, 1, 3, 4],
           "router": {"recall_centroid": 0.64, "recall_mlp": 0.8554}}  # fmt: skip
    moefy = {"layers": {"encoder.layer.0": ffn}}
    report["stages"] += [
        {"name": "moe-slim", "seconds": 3.0, "details": slim},
        {"name": "moefy", "seconds": 9.0, "details": moefy},
    ]
    validate_report(report)
    md = render_markdown(report)
    assert "### moe-slim: per MoE layer" in md and "### moefy: per MoEfied FFN" in md
    row = _table_row(md, "blocks.0.mlp")
    assert row == [
        "blocks.0.mlp",
        "4 of 8",
        "1472 1640 1560 1155 1610 1342 1650 2772",
        "1797 621 1574 2608",
        "2.00 → 1.00",
        "133k → 66.4k",
        "132k → 65.8k",
    ]
    assert _table_row(md, "encoder.layer.0") == [
        "encoder.layer.0",
        "8",
        " ".join(["192"] * 8),
        "5 9 0 2 7 1 3 4",
        "0.855",
    ]
    html = render_html(report)
    assert "<h3>moe-slim: per MoE layer</h3>" in html and "1797 621 1574 2608" in html and "0.855" in html
    # stages without per-layer MoE records (the synthetic report's quantize, export...) add no table
    assert "per MoE layer" not in render_markdown(make_report())


def test_markdown_escapes_and_handles_a_bare_bench_report() -> None:
    report = make_report(title="a | b <script>")
    report["kind"] = "bench"
    for key in ("task", "source", "device", "summary", "recipe"):
        report.pop(key)
    report["stages"] = []
    for v in report["variants"]:
        v["metric"] = None
        v["verification"] = None
        v["benchmark"]["energy"] = None
    md = render_markdown(validate_report(report))
    assert md.startswith("# a | b &lt;script&gt;\n") and "<script>" not in md
    assert "## Stages" not in md and "No energy figure was recorded" in md
    html = render_html(report)
    assert "&lt;script&gt;" in html and "<script" not in html
    assert "No variant has both a task metric and a latency" in html
    assert html.count("<svg") == 1  # only the latency distribution is possible


# ------------------------------------------------------------------------------------------ html


def _assert_self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    lowered = html.lower()
    for forbidden in ("<script", "<link", "@import", "<iframe", "<object", "<embed", "http-equiv"):
        assert forbidden not in lowered, forbidden
    for attr in re.findall(r"""\b(?:src|href|xlink:href|action|poster)\s*=\s*["']([^"']*)""", html, flags=re.I):
        assert attr.startswith(("#", "data:")), attr  # only in-page anchors and inline data
    for ref in re.findall(r"url\(([^)]*)\)", html):
        assert ref.strip("'\" ").startswith("#"), ref  # SVG clip paths point inside the page
    assert "http:" not in lowered and "https:" not in lowered  # not even an SVG namespace URL
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "duplicate element ids between inline plots"


def test_html_is_one_self_contained_file_with_the_plots() -> None:
    report = make_report()
    report["variants"][1]["name"] = "ort<fp32>&co"
    report["variants"][1]["backend"] = 'onnx"runtime'
    html = render_html(report)
    _assert_self_contained(html)
    assert html.count("<svg") == 3  # accuracy vs latency, latency distribution, accuracy vs energy
    assert "<table" in html and len(re.findall(r'<tr class="[^"]*\brefused\b', html)) == 1
    assert "ort&lt;fp32&gt;&amp;co" in html and "ort<fp32>" not in html and 'onnx"runtime' not in html
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    tradeoff = next(s for s in svgs if 'aria-label="tradeoff-latency"' in s)
    for name in ("torch-fp32", "ort&lt;fp32&gt;&amp;co", "onnxruntime-int8", "openvino-int4"):
        assert name in tradeoff  # every point labelled
    assert "Pareto front" in tradeoff
    energy = next(s for s in svgs if 'aria-label="tradeoff-energy"' in s)
    assert "onnxruntime-int8 (est.)" in energy and "includes estimates" in energy
    assert "How these numbers were measured" in html and "ESTIMATE" in html


def test_latency_plot_switches_to_log_scale_for_wide_ranges() -> None:
    report = make_report()
    html = render_html(report)  # medians 0.4 ms .. 4 ms: 10x apart
    assert "latency per query (ms, log scale)" in html
    for v in report["variants"]:
        v["benchmark"]["samples_ms"] = [x / v["benchmark"]["latency_ms"]["p50"] for x in v["benchmark"]["samples_ms"]]
    assert "latency per query (ms, linear scale)" in render_html(report)


def test_rendering_leaks_no_figures() -> None:
    import gc

    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    def live_figures() -> int:
        gc.collect()
        return sum(type(o) is Figure for o in gc.get_objects())

    before_nums, before = plt.get_fignums(), live_figures()
    for _ in range(2):
        render_html(make_report())
    assert plt.get_fignums() == before_nums
    assert live_figures() == before


# ------------------------------------------------------------------------------------------ write_report


def test_write_report_writes_three_files_atomically(tmp_path: Path) -> None:
    report = make_report()
    report["variants"][3]["verification"]["max_abs_error"] = float("nan")  # a broken variant's error
    paths = write_report(report, tmp_path / "out")
    assert paths["markdown"].read_text() == render_markdown(report)
    assert _table_row(paths["markdown"].read_text(), "openvino-int4 (noisy)")[7] == "nan"
    assert set(paths) == {"json", "markdown", "html"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json", "report.md"]
    text = paths["json"].read_text()
    assert "NaN" not in text and text.startswith('{\n  "schema": "effdl.report/1"')
    loaded = load_report(paths["json"])
    assert loaded["variants"][3]["verification"]["max_abs_error"] is None
    report["variants"][3]["verification"]["max_abs_error"] = None
    assert loaded == report


def test_write_report_refuses_an_invalid_report_without_writing(tmp_path: Path) -> None:
    report = make_report()
    del report["variants"][0]["backend"]
    with pytest.raises(InputError, match=r"variants\[0\].backend"):
        write_report(report, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ comparison


def test_compare_two_hosts_and_versions() -> None:
    a = make_report(host="box-a")
    b = make_report(host="jetson", version="0.2.0")
    b["device"] = {"profile": "jetson-orin-nano"}
    b["system"]["libraries"]["onnxruntime"] = "1.31.0"
    for v in b["variants"]:
        v["name"] = v["name"].replace("onnxruntime", "ort")
    b["reference"] = "torch-fp32"
    comp = compare([a, b])
    assert comp["schema"] == "effdl.comparison/1" and len(comp["variants"]) == 8
    labels = [r["label"] for r in comp["runs"]]
    assert labels == ["resnet8 on digits @ x86-64-avx512-vnni / box-a", "resnet8 on digits @ jetson-orin-nano / jetson"]
    notes = " ".join(comp["notes"])
    assert "different hosts (box-a, jetson)" in notes and "different effdl versions (0.1.0, 0.2.0)" in notes
    assert "onnxruntime versions differ between runs: 1.32.0, 1.31.0" in notes
    base = comp["variants"][0]
    assert base["variant"] == "torch-fp32" and base["speedup_vs_baseline"] == pytest.approx(1.0)
    assert comp["baseline"]["variant"] == "torch-fp32"

    md = render_comparison_markdown(comp)
    header = _table_row(md[md.index("## All variants") :], "run")
    assert header[:2] == ["run", "variant"] and "speedup vs torch-fp32 (run 1)" in header
    assert _table_row(md, labels[1])  # the runs table row of the second run
    rows = [line for line in md.splitlines() if line.startswith(f"| {labels[1]} | ort-int8")]
    assert len(rows) == 1
    assert "different hosts" in md and "### " + labels[0] in md

    html = render_comparison_html(comp)
    _assert_self_contained(html)
    assert html.count("<svg") == 3
    assert "1: onnxruntime-int8" in html and "2: ort-int8" in html  # points labelled with the run number


def test_compare_same_label_gets_a_suffix_and_rejects_nothing_to_compare() -> None:
    comp = compare([make_report(), make_report()])
    assert [r["label"] for r in comp["runs"]][1].endswith(" #2")
    assert comp["notes"] == []
    with pytest.raises(InputError, match="no reports"):
        compare([])


# ------------------------------------------------------------------------------------------ CLI


def _cli_app():  # noqa: ANN202 - a typer.Typer mounting the command the way effdl's CLI does
    import typer

    from effdl.cli.report import report_cmd

    app = typer.Typer()
    app.command("report")(report_cmd)
    app.command("noop")(lambda: None)  # a second command keeps "report" a sub-command
    return app


def test_cli_round_trip(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    a_dir, b = tmp_path / "run-a", tmp_path / "b.json"
    write_report(make_report(host="box-a"), a_dir)
    b.write_text(json.dumps(make_report(host="box-b")))
    runner = CliRunner()
    app = _cli_app()

    res = runner.invoke(app, ["report", str(a_dir), str(b), "-o", str(tmp_path / "cmp.html")])
    assert res.exit_code == 0, res.output
    assert "different hosts" in res.output and "comparison of 2 runs" in res.output
    html = (tmp_path / "cmp.html").read_text()
    _assert_self_contained(html)
    assert "box-a" in html and "box-b" in html

    res = runner.invoke(app, ["report", str(a_dir / "report.json"), str(b), "-o", str(tmp_path / "cmp.md")])
    assert res.exit_code == 0, res.output
    assert "## All variants" in (tmp_path / "cmp.md").read_text()

    res = runner.invoke(app, ["report", str(a_dir), str(b), "--output", str(tmp_path / "sub" / "cmp.json")])
    assert res.exit_code == 0, res.output
    merged = json.loads((tmp_path / "sub" / "cmp.json").read_text())
    assert merged["schema"] == "effdl.comparison/1" and len(merged["reports"]) == 2

    res = runner.invoke(app, ["report", str(b), "-o", str(tmp_path / "one.md")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "one.md").read_text() == render_markdown(make_report(host="box-b"))
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize(
    ("setup", "output", "expected"),
    [
        ("missing", "out.html", "does not exist"),
        ("invalid-json", "out.html", "not valid JSON (line 1"),
        ("wrong-schema", "out.html", "this effdl reads 'effdl.report/1'"),
        ("ok", "out.txt", "unknown suffix '.txt'"),
        ("ok", "out", "unknown suffix '(none)'"),
    ],
)
def test_cli_errors(tmp_path: Path, setup: str, output: str, expected: str) -> None:
    from effdl.cli.report import report_cmd

    path = tmp_path / "r.json"
    if setup == "invalid-json":
        path.write_text("{not json")
    elif setup == "wrong-schema":
        path.write_text(json.dumps({"schema": "other/1"}))
    elif setup == "ok":
        path.write_text(json.dumps(make_report()))
    with pytest.raises(InputError) as info:
        report_cmd([path], output=tmp_path / output)
    assert expected in str(info.value)
    assert not (tmp_path / output).exists()


# ------------------------------------------------------------------------------------------ a real browser

CHROMIUM = Path("/usr/bin/chromium")
CONSOLE_PROBLEM = re.compile(r"CONSOLE[:(]|Uncaught")


def _chromium(page: Path, tmp_path: Path) -> tuple[str, list[str]]:
    """Open ``page`` in headless Chromium; return the DOM after load and the console lines it logged."""
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # the page must need no network; make sure none is used
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if CONSOLE_PROBLEM.search(line)]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package (/usr/bin/chromium)")
def test_html_opens_in_headless_chromium_without_console_errors(tmp_path: Path) -> None:
    # The detector itself must see an error in a page that has one, or the real check proves nothing.
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><script>throw new Error('effdl-probe')</script></body></html>")
    _, problems = _chromium(broken, tmp_path)
    assert any("effdl-probe" in line for line in problems), "console errors are not detected"

    single = write_report(make_report(), tmp_path / "run")["html"]
    cmp_page = tmp_path / "cmp.html"
    cmp_page.write_text(render_comparison_html(compare([make_report(host="a"), make_report(host="b")])))
    for page in (single, cmp_page):
        dom, problems = _chromium(page, tmp_path)
        assert problems == [], problems
        source = page.read_text()
        assert dom.count("<table") == source.count("<table") >= 3
        assert dom.count("<svg") == source.count("<svg") == 3
        assert "onnxruntime-int8" in dom and "How these numbers were measured" in dom


def test_compare_of_different_models_gives_no_cross_run_speedup() -> None:
    other = make_report(title="lenet5 on digits")
    other["source"]["sha256"] = "cd" * 32
    comp = compare([make_report(), other])
    assert comp["baseline"] is None and all(v["speedup_vs_baseline"] is None for v in comp["variants"])
    assert any("different source models (abababababab, cdcdcdcdcdcd)" in n for n in comp["notes"])
    md = render_comparison_markdown(comp)
    assert "speedup vs ref" in md and "speedup vs torch-fp32 (run 1)" not in md


def test_import_loads_neither_matplotlib_nor_torch() -> None:
    code = "import sys, effdl.report; print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"
