"""bench/quantization.py's bookkeeping: per-model runs merge into docs/quantization.json, and the Markdown
shows each model's limits check, best variant and quantize-auto trace. (The measuring itself is the script's
run, not a unit test.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_quantization", ROOT / "bench" / "quantization.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


META = {"date": "d", "cpu": "c", "cores": 2, "load": "1.0", "ort": "o", "ov": "v", "torch": "t", "queries": 5,
        "threads": None, "command": "python bench/quantization.py"}  # fmt: skip


def _result(model: str, int8_metric: float) -> dict[str, Any]:
    trace = [
        {"config": "fp32", "stage": "none", "metric": 90.0, "metric_drop": 0.0, "top1_agreement": 100.0,
         "meets_limits": True, "failures": [], "p50_ms": 2.0, "size_bytes": 4_000_000},
        {"config": "static(calibration=minmax)", "stage": "quantize", "metric": 80.0, "metric_drop": 10.0,
         "top1_agreement": 85.0, "meets_limits": False, "failures": ["accuracy drop 10.000 > 1.0"], "p50_ms": None},
        {"config": "sensitivity analysis", "stage": "none", "most_sensitive": [{"node": "/c1/Conv", "sqnr_db": 3.5}]},
        {"config": "static(calibration=minmax) + 1 node(s) FP32", "stage": "quantize", "metric": 89.5,
         "metric_drop": 0.5, "top1_agreement": 99.0, "meets_limits": True, "failures": [], "p50_ms": 1.0,
         "size_bytes": 1_000_000, "fp32_nodes": ["/c1/Conv"]},
    ]  # fmt: skip
    return {
        "model": model, "task": "digits", "metric": "accuracy", "unit": "%", "reference_metric": 90.0,
        "samples": 64, "limits": {"max_accuracy_drop": 1.0}, "torch_p50_ms": 8.0, "partial": False,
        "seconds": 12.0, "meta": META,
        "rows": [
            {"method": "torch eager FP32", "backend": "torch", "metric": 90.0, "p50_ms": 8.0, "size_bytes": 4e6,
             "agreement": {}},
            {"method": "static minmax (ORT)", "backend": "onnxruntime", "metric": int8_metric, "p50_ms": 1.0,
             "size_bytes": 1e6, "agreement": {"top1_agreement": 90.0}},
            {"method": "auto (<= limit, ORT)", "backend": "onnxruntime", "metric": 89.6, "p50_ms": 2.0,
             "size_bytes": 1e6, "agreement": {"top1_agreement": 99.0}, "winner": trace[-1]["config"],
             "why": "fastest of 1", "tried": len(trace), "trace": trace, "tune_split": "train",
             "tune_samples": 64},
            {"method": "FP16 ONNX", "backend": "openvino", "error": "RuntimeError: cannot"},
        ],
    }  # fmt: skip


def test_runs_per_model_merge_and_render(tmp_path: Path) -> None:
    bench = _bench()
    out = tmp_path / "q.md"
    out.write_text("# Q\n\nprose\n\n<!-- RESULTS -->\nold\n<!-- /RESULTS -->\n\nafter\n")
    bench.write({"lstm": _result("lstm", 50.0)}, out)
    # a later run of another model keeps the first model's results, and orders by the MODELS table
    merged = bench.previous_results(out.with_suffix(".json"))
    merged["resnet8"] = _result("resnet8", 89.5)
    bench.write(merged, out)
    data = json.loads(out.with_suffix(".json").read_text())
    assert [r["model"] for r in data["results"]] == ["resnet8", "lstm"]
    text = out.read_text()
    assert text.startswith("# Q\n\nprose") and text.rstrip().endswith("after") and "\nold\n" not in text
    resnet_block = text[text.index("### resnet8") : text.index("### lstm")]
    lstm_block = text[text.index("### lstm") :]
    # limits checked on the held-out metric: a 0.5-point drop passes, a 40-point drop does not
    row = "| static minmax (ORT) | onnxruntime | 89.50 | 90.0000 | 1.000 | 8.00x | 1.00 | within limits; "
    assert row + "10.0% of predictions differ from FP32 |" in resnet_block
    assert "outside limits" in lstm_block.split("| auto")[0]
    assert "Fastest variant within the limits on the held-out samples: **static minmax (ORT) on onnxruntime**" in (
        resnet_block
    )
    # the quantize-auto trace: every tried configuration, the sensitivity ranking, why the others lost
    assert "quantize-auto search (4 entries, scored on 64 samples of the task's train split" in resnet_block
    assert "| static(calibration=minmax) | 80.00 | 10.00 | top1_agreement 85.0000 | no | - | - |" in resnet_block
    assert "lowest SQNR: /c1/Conv 3.5 dB" in resnet_block
    assert "| FP16 ONNX | openvino | - | - | - | - | - | RuntimeError: cannot |" in resnet_block


def test_old_single_meta_files_are_read(tmp_path: Path) -> None:
    bench = _bench()
    res = _result("minilm", 80.0)
    del res["meta"]
    p = tmp_path / "q.json"
    p.write_text(json.dumps({"meta": META, "results": [res, {"model": "gone"}]}))
    got = bench.previous_results(p)
    assert list(got) == ["minilm"] and got["minilm"]["meta"] == META


def test_minilm_target_line() -> None:
    bench = _bench()
    res = _result("minilm", 80.0)
    res["torch_p50_ms"] = 100.0
    res["rows"][1]["agreement"] = {"cosine": 0.995, "cosine_min": 0.98}
    res["rows"][1]["p50_ms"] = 20.0
    assert "met by static minmax (ORT) on onnxruntime: cosine 0.9950" in bench._minilm_target(res)
    assert "= 5.00x" in bench._minilm_target(res)
    res["rows"][1]["p50_ms"] = 40.0
    assert "not met by" in bench._minilm_target(res)
    res["rows"][1]["agreement"] = {"cosine": 0.95}
    assert "not met: no variant keeps cosine >= 0.99" in bench._minilm_target(res)


def test_interleaved_target_check_is_rendered() -> None:
    bench = _bench()
    res = _result("minilm", 80.0)
    res["target_check"] = {
        "command": "python bench/quantization_target.py", "date": "d", "load": "9.0", "load_end": "8.0",
        "rounds": 2, "queries": 5, "threads": 1, "samples": 64, "torch_p50_ms": [100.0, 120.0],
        "rows": [{"variant": "SmoothQuant (NNCF), OpenVINO BF16", "agreement": {"cosine": 0.995, "cosine_min": 0.98},
                  "p50_ms": [20.0, 40.0], "speedups": [5.0, 3.0], "median_speedup": 4.0}],
    }  # fmt: skip
    text = "\n".join(bench.render_model(res))
    assert "| SmoothQuant (NNCF), OpenVINO BF16 | 0.9950 | 0.9800 | 20.0, 40.0 | 5.00x, 3.00x | 4.00x |" in text
    assert "Torch eager p50 per round: 100.0, 120.0 ms." in text
    assert "**MiniLM target by the interleaved check: met** by SmoothQuant (NNCF), OpenVINO BF16" in text
