"""effdl bench: scenario rules, LoadGen and built-in drivers, targets, inputs, reports and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from effdl.benchmark import harness, scenarios
from effdl.benchmark.scenarios import MLPERF_RULES, Settings, parse_loadgen_log, run_scenario, settings_for
from effdl.errors import InputError, UnknownNameError
from effdl.report import load_report, validate_report

HAVE_LOADGEN = scenarios.loadgen_available()[0]


# ---------------------------------------------------------------------------------------------------------------
# tiny models and packages
# ---------------------------------------------------------------------------------------------------------------


def make_mlp(path: Path, din: int = 16, dout: int = 4, batch: int | str = "N", seed: int = 0) -> Path:
    """A MatMul + Relu ONNX model with a dynamic (or static) batch axis."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((din, dout)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, din])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, dout])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def make_package(root: Path) -> Path:
    """A package folder as effdl compress writes it: two ONNX Runtime variants of a tiny MLP."""
    from effdl.runtime.manifest import PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION, file_entry

    (root / "models").mkdir(parents=True)
    make_mlp(root / "models" / "fp32.onnx")
    make_mlp(root / "models" / "wide.onnx", seed=1)
    variants = [
        {"name": n, "backend": "onnxruntime", "model": m, "precision": "fp32", "device": "cpu",
         "files": [f"models/{m}.onnx"], "meta": {"format": "onnx"}, "accepted": True, "benchmark": None}
        for n, m in (("onnxruntime-fp32", "fp32"), ("onnxruntime-wide", "wide"))
    ]  # fmt: skip
    manifest = {
        "format": PACKAGE_FORMAT,
        "format_version": PACKAGE_FORMAT_VERSION,
        "name": "tiny-mlp",
        "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 16]}],
        "outputs": [{"name": "y", "dtype": "float32", "shape": [None, 4]}],
        "variants": variants,
        "files": {f"models/{m}.onnx": file_entry(root, f"models/{m}.onnx") for m in ("fp32", "wide")},
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture()
def package(tmp_path: Path) -> Path:
    return make_package(tmp_path / "pkg")


def cli_app() -> typer.Typer:
    """The command as the lead mounts it: ``app.command("bench")(bench.bench_cmd)``."""
    from effdl.cli import bench

    app = typer.Typer()
    app.command("bench")(bench.bench_cmd)
    app.command("other")(lambda: None)  # a second command keeps typer from collapsing the group
    return app


# ---------------------------------------------------------------------------------------------------------------
# rules and settings
# ---------------------------------------------------------------------------------------------------------------


def test_settings_default_to_mlperf_rules_and_report_shortfalls() -> None:
    s = settings_for("single-stream")
    assert (s.min_queries, s.min_duration_s, s.percentile, s.rules) == (1024, 600.0, 90, "mlperf")
    assert s.shortfall() == [] and s.to_json()["meets_mlperf_minimums"] is True
    ms = settings_for("multi-stream")
    assert (ms.samples_per_query, ms.min_queries, ms.percentile) == (8, 662, 99)
    sv = settings_for("server")
    assert (sv.percentile, sv.target_latency_ms, sv.min_queries) == (99, 10.0, 270336)
    assert settings_for("offline").min_queries == MLPERF_RULES["offline"]["min_queries"] == 24576
    q = settings_for("single-stream", quick=True)
    assert q.rules == "quick" and q.min_duration_s < 600 and len(q.shortfall()) == 2
    c = settings_for("single-stream", min_queries=2000, duration_s=10)
    assert c.rules == "custom" and c.shortfall() == ["minimum duration 10 s < the rules' 600 s"]
    assert c.to_json()["meets_mlperf_minimums"] is False


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"scenario": "batch"}, "--scenario"),
        ({"scenario": "single-stream", "min_queries": 0}, "--min-queries"),
        ({"scenario": "single-stream", "duration_s": -1.0}, "--duration"),
        ({"scenario": "single-stream", "warmup": -2}, "--warmup"),
        ({"scenario": "server", "target_qps": -5.0}, "--target-qps"),
        ({"scenario": "multi-stream", "samples_per_query": 0}, "--samples-per-query"),
    ],
)
def test_settings_refuse_bad_values_naming_the_option(kwargs: dict, field: str) -> None:
    scenario = kwargs.pop("scenario")
    with pytest.raises(InputError, match=field):
        if kwargs.get("samples_per_query") == 0:
            Settings(scenario=scenario, samples_per_query=0).validate()
        else:
            settings_for(scenario, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# drivers
# ---------------------------------------------------------------------------------------------------------------


class Recorder:
    """An ``infer`` that sleeps and records the batch size of every call."""

    def __init__(self, sleep_s: float = 2e-4) -> None:
        self.sleep_s, self.batches = sleep_s, []

    def __call__(self, feed: dict) -> None:
        self.batches.append(len(feed["x"]))
        time.sleep(self.sleep_s)


FEEDS = [{"x": np.full((2, 3), i, np.float32)} for i in range(6)]

# name -> (scenario, settings, sleep per call, concat, expected latency)
CASES: dict[str, tuple[str, dict, float, bool, float]] = {
    "single": ("single-stream", {"min_queries": 40, "duration_s": 0.15}, 2e-4, True, 2.5e-4),
    "multi-concat": ("multi-stream", {"min_queries": 20, "duration_s": 0.05, "samples_per_query": 4}, 2e-4, True, 1e-3),
    "multi-loop": ("multi-stream", {"min_queries": 20, "duration_s": 0.05, "samples_per_query": 4}, 2e-4, False, 1e-3),
    "offline": ("offline", {"min_queries": 200, "duration_s": 0.1}, 1e-4, True, 1.5e-4),
    "server": ("server", {"min_queries": 100, "duration_s": 0.2, "target_qps": 400, "target_latency_ms": 50}, 5e-4,
               True, 5e-4),
}  # fmt: skip


def scenario_case(name: str, driver: str) -> dict:
    """Run one case and return what the tests check, as plain JSON."""
    scenario, kw, sleep_s, concat, expected = CASES[name]
    rec = Recorder(sleep_s)
    r = run_scenario(settings_for(scenario, warmup=0, **kw), rec, FEEDS, concat=concat, driver=driver,
                     expected_latency_s=expected)  # fmt: skip
    return {
        "queries": r.queries,
        "samples": r.samples,
        "n_latencies": len(r.latencies_s),
        "min_latency_s": min(r.latencies_s),
        "duration_s": r.duration_s,
        "batches": sorted(set(rec.batches)),
        "calls": len(rec.batches),
        "driver": r.driver,
        "loadgen": r.loadgen,
    }


@pytest.fixture(scope="module")
def loadgen_runs() -> dict:
    """Every case under LoadGen, run in one fresh process: LoadGen keeps process-wide state (its logger thread),
    so effdl runs it only in benchmark worker processes, and the tests do the same."""
    if not HAVE_LOADGEN:
        pytest.skip("mlperf_loadgen is not installed")
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import test_bench as t; "
        "print(json.dumps({n: t.scenario_case(n, 'loadgen') for n in t.CASES}))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(params=["builtin", "loadgen"])
def run_case(request: pytest.FixtureRequest) -> Callable[[str], dict]:
    if request.param == "builtin":
        return lambda name: scenario_case(name, "builtin")
    runs = request.getfixturevalue("loadgen_runs")
    return lambda name: runs[name]


def test_single_stream_meets_min_queries_and_duration(run_case: Callable[[str], dict]) -> None:
    r = run_case("single")
    assert r["queries"] >= 40 and r["duration_s"] >= 0.15 and r["samples"] == r["queries"] == r["n_latencies"]
    assert r["min_latency_s"] >= 2e-4  # each latency contains the call
    assert r["batches"] == [2]
    if r["driver"]["name"] == "mlperf_loadgen":
        lg = r["loadgen"]
        assert lg["query_count"] == r["queries"]
        assert lg["min_duration_met"] is True and lg["min_queries_met"] is True
        assert 0.2 < lg["latency_ms"]["p90"] < 50
        assert lg["effective_settings"]["min_query_count"] == 40
    else:
        assert r["driver"] == {"name": "effdl-builtin", "why": "requested"} and r["loadgen"] is None


@pytest.mark.parametrize("concat", [True, False])
def test_multi_stream_runs_queries_of_n_samples(run_case: Callable[[str], dict], concat: bool) -> None:
    r = run_case("multi-concat" if concat else "multi-loop")
    assert r["queries"] >= 20 and r["samples"] == 4 * r["queries"]
    # one call of 4 x 2 items per query when the batch axis is dynamic, else four calls of 2
    assert r["batches"] == ([8] if concat else [2])
    assert r["calls"] == (r["queries"] if concat else 4 * r["queries"])


def test_offline_runs_one_query_of_many_samples(run_case: Callable[[str], dict]) -> None:
    r = run_case("offline")
    assert r["queries"] == 1 and r["samples"] >= 200 and r["n_latencies"] == r["samples"]
    assert r["duration_s"] >= 0.1 * 0.9
    if r["loadgen"]:
        assert r["loadgen"]["samples_per_second"] > 0


def test_server_poisson_arrivals_and_latency_bound(run_case: Callable[[str], dict]) -> None:
    r = run_case("server")
    assert r["samples"] >= 100 and r["queries"] == r["samples"]
    # 400 QPS for >= 100 queries: about 0.25 s of arrivals; the achieved rate follows the target
    assert 200 < r["samples"] / r["duration_s"] < 600
    assert r["min_latency_s"] >= 5e-4
    if r["loadgen"]:
        assert r["loadgen"]["perf_constraints_met"] is True  # 0.5 ms calls at 20% load are far below 50 ms
        assert r["loadgen"]["effective_settings"]["target_qps"] == 400


def test_server_default_target_qps_is_half_the_warmup_rate() -> None:
    s = settings_for("server", min_queries=20, duration_s=0.0, warmup=0)
    run_scenario(s, Recorder(1e-4), FEEDS, driver="builtin", expected_latency_s=2e-3)
    assert s.target_qps == pytest.approx(250.0)


def test_loadgen_driver_required_but_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from effdl.errors import BackendUnavailableError

    monkeypatch.setattr(scenarios, "loadgen_available", lambda: (False, "mlperf_loadgen is not installed"))
    s = settings_for("single-stream", min_queries=5, duration_s=0, warmup=0)
    with pytest.raises(BackendUnavailableError, match="not installed"):
        run_scenario(s, Recorder(0), FEEDS, driver="loadgen")
    r = run_scenario(s, Recorder(0), FEEDS, driver="auto")  # auto falls back and says why
    assert r.driver["name"] == "effdl-builtin" and "not installed" in r.driver["why"]


def test_parse_loadgen_log(tmp_path: Path) -> None:
    lines = [
        ("result_validity", "INVALID", False),
        ("result_min_duration_met", False, False),
        ("result_min_queries_met", True, False),
        ("result_query_count", 77, False),
        ("result_90.00_percentile_latency_ns", 2_500_000, False),
        ("result_99.90_percentile_latency_ns", 9_000_000, False),
        ("result_50.00_percentile_per_query_latency_ns", 4_000_000, False),
        ("effective_min_query_count", 64, False),
        ("error_runtime", "Ran out of generated queries", True),
    ]
    text = "junk line\n" + "\n".join(
        ":::MLLOG " + json.dumps({"key": k, "value": v, "metadata": {"is_error": e, "is_warning": False}})
        for k, v, e in lines
    )
    (tmp_path / "mlperf_log_detail.txt").write_text(text)
    (tmp_path / "mlperf_log_summary.txt").write_text("MLPerf Results Summary\n")
    out = parse_loadgen_log(tmp_path)
    assert out["validity"] == "INVALID" and out["min_duration_met"] is False and out["query_count"] == 77
    assert out["latency_ms"] == {"p90": 2.5, "p99_90": 9.0}
    assert out["query_latency_ms"] == {"p50": 4.0}
    assert out["effective_settings"] == {"min_query_count": 64}
    assert out["errors"] == ["error_runtime: Ran out of generated queries"]
    assert out["summary_text"].startswith("MLPerf")
    with pytest.raises(RuntimeError, match="no detail log"):
        parse_loadgen_log(tmp_path / "nothing")


# ---------------------------------------------------------------------------------------------------------------
# targets and inputs
# ---------------------------------------------------------------------------------------------------------------


def test_resolve_package_selects_variants(package: Path) -> None:
    t = harness.resolve_target(package)
    assert t.kind == "package" and [v.name for v in t.variants] == ["onnxruntime-fp32", "onnxruntime-wide"]
    assert t.concat and t.variants[0].size_bytes == (package / "models" / "fp32.onnx").stat().st_size
    t = harness.resolve_target(package, variants=["onnxruntime-wide"])
    assert [v.name for v in t.variants] == ["onnxruntime-wide"]
    with pytest.raises(UnknownNameError, match="onnxruntime-fp32"):
        harness.resolve_target(package, variants=["nope"])
    with pytest.raises(InputError, match="--backend openvino"):
        harness.resolve_target(package, backends=["openvino"])


def test_resolve_target_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        harness.resolve_target(tmp_path / "missing.onnx")
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(InputError, match="not a package folder"):
        harness.resolve_target(tmp_path / "model.txt")
    (tmp_path / "broken.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="broken.onnx"):
        harness.resolve_target(tmp_path / "broken.onnx")
    with pytest.raises(InputError, match="manifest.json is missing"):
        harness.resolve_target(tmp_path)
    onnx_path = make_mlp(tmp_path / "m.onnx")
    with pytest.raises(UnknownNameError, match="onnxruntime"):
        harness.resolve_target(onnx_path, backends=["nosuch"])


def test_inputs_random_seeded_and_static_batch_checked(tmp_path: Path) -> None:
    t = harness.resolve_target(make_mlp(tmp_path / "m.onnx"))
    a, n, how = harness.make_inputs(t, 3, seed=1)
    b, _, _ = harness.make_inputs(t, 3, seed=1)
    assert a["x"].shape == (n * 3, 16) and a["x"].dtype == np.float32 and np.array_equal(a["x"], b["x"])
    assert "random (seed 1)" in how and n == harness.MAX_SAMPLES
    static = harness.resolve_target(make_mlp(tmp_path / "s.onnx", batch=1))
    assert not static.concat
    with pytest.raises(InputError, match="static first axis"):
        harness.make_inputs(static, 4)


def test_inputs_from_the_task_when_known(tmp_path: Path) -> None:
    task = harness._get_task("digits")  # cached: the checkpoint test below reuses its splits
    x = task.split("heldout").inputs[task.input_names[0]]
    t = harness.Target(
        kind="onnx",
        path=tmp_path,
        title="t",
        inputs=[{"name": task.input_names[0], "dtype": x.dtype.name, "shape": [None, *x.shape[1:]]}],
        variants=[],
        task="digits",
    )
    arrays, n, how = harness.make_inputs(t, 2)
    assert "held-out" in how and np.array_equal(arrays[task.input_names[0]][:4], x[:4])
    t.inputs[0]["shape"] = [None, 99]  # a model that does not fit the task's data: random, and says why
    arrays, _, how = harness.make_inputs(t, 2)
    assert arrays[task.input_names[0]].shape[1:] == (99,) and "task data not used" in how


# ---------------------------------------------------------------------------------------------------------------
# end to end (each variant in its own process)
# ---------------------------------------------------------------------------------------------------------------


def test_cli_bench_onnx_writes_valid_report_and_renderings(tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    args = ["bench", str(model), "--duration", "0.3", "--min-queries", "50", "--warmup", "5"]
    res = CliRunner().invoke(cli_app(), [*args, "--json", str(out_json), "-o", str(out_md)])
    assert res.exit_code == 0, res.output
    report = load_report(out_json)
    assert report["kind"] == "bench" and report["bench"]["scenario"] == "single-stream"
    (v,) = report["variants"]
    b = v["benchmark"]
    assert v["name"] == "onnxruntime-fp32" and b["queries"] >= 50
    assert b["duration_s"] >= 0.3 * 0.95  # from the first query; LoadGen starts its own clock slightly earlier
    assert b["latency_ms"]["p50"] <= b["latency_ms"]["p90"] <= b["latency_ms"]["p99"]
    assert b["target_percentile"]["percentile"] == 90 and b["peak_rss_bytes"] > 10e6
    assert b["model_size_bytes"] == model.stat().st_size
    assert b["energy"]["joules_per_inference"] > 0 and b["energy"]["method"]
    assert b["settings"]["meets_mlperf_minimums"] is False
    assert any("shorter than the MLPerf rules" in n for n in report["summary"]["notes"])
    if HAVE_LOADGEN:
        assert b["driver"]["name"] == "mlperf_loadgen" and b["loadgen"]["query_count"] == b["queries"]
    md = out_md.read_text()
    assert "onnxruntime-fp32" in md and "single-stream" in md
    assert "method: single-stream" in res.output and f"wrote {out_json}" in res.output.replace("\n", "")


def test_cli_bench_refuses_bad_options(tmp_path: Path) -> None:
    model = make_mlp(tmp_path / "mlp.onnx")
    runner = CliRunner()
    res = runner.invoke(cli_app(), ["bench", str(model), "--scenario", "burst"])
    assert res.exit_code != 0 and "--scenario" in str(res.exception)
    res = runner.invoke(cli_app(), ["bench", str(model), "-o", str(tmp_path / "r.pdf")])
    assert isinstance(res.exception, InputError) and ".html or .md" in str(res.exception)
    assert not (tmp_path / "r.pdf").exists()


def test_worker_failure_carries_the_workers_error(package: Path) -> None:
    from effdl.benchmark.worker import BenchmarkError

    (package / "models" / "fp32.onnx").write_bytes(b"tampered")
    t = harness.resolve_target(package, variants=["onnxruntime-fp32"])
    with pytest.raises(BenchmarkError, match=r"truncated or modified\)$") as e:
        harness.run_bench(t, settings_for("single-stream", duration_s=0, min_queries=5, warmup=1))
    assert isinstance(e.value, RuntimeError) and e.value.exit_code == 2  # RuntimeError for the pipeline


@pytest.mark.parametrize(
    ("scenario", "extra"),
    [
        ("offline", {"min_queries": 300}),
        ("multi-stream", {"samples_per_query": 4, "min_queries": 30}),
        ("server", {"min_queries": 60, "target_qps": 300.0, "target_latency_ms": 100.0}),
    ],
)
def test_run_bench_scenarios_on_a_package(package: Path, scenario: str, extra: dict) -> None:
    t = harness.resolve_target(package, variants=["onnxruntime-fp32"])
    s = settings_for(scenario, duration_s=0.2, warmup=3, **extra)
    report = harness.run_bench(t, s, batch=2, threads=1)
    validate_report(report)
    b = report["variants"][0]["benchmark"]
    assert b["scenario"] == scenario and b["batch"] == 2 and b["threads"] == 1
    assert b["inferences"] == b["samples"] * 2
    if scenario == "offline":
        assert b["samples"] >= 300
        assert b["throughput_per_s"] == pytest.approx(b["inferences"] / b["duration_s"])
    if scenario == "multi-stream":
        assert b["samples_per_query"] == 4 and b["samples"] == 4 * b["queries"]
    if scenario == "server":
        assert b["server"]["target_qps"] == 300 and b["server"]["latency_bound_met"] is True
        assert any("server at 300 QPS" in n for n in report["summary"]["notes"])


def test_run_bench_checkpoint_in_torch_eager_has_roofline(tmp_path: Path) -> None:
    from effdl.sources import save_checkpoint
    from effdl.zoo import get_model_entry

    entry = get_model_entry("lenet5")  # untrained weights time the same as trained ones
    ckpt = save_checkpoint(entry.build(), tmp_path / "lenet5.safetensors", arch="lenet5", config=entry.config(),
                           task=entry.task)  # fmt: skip
    t = harness.resolve_target(ckpt)
    assert t.kind == "checkpoint" and t.macs and t.variants[0].backend == "torch"
    s = settings_for("single-stream", duration_s=0.2, min_queries=20, warmup=3)
    report = harness.run_bench(t, s, device="x86-64-avx512-vnni")
    v = report["variants"][0]
    roof = v["benchmark"]["roofline"]
    assert v["reference"] is True and report["reference"] == "torch-eager"
    assert 0 < roof["efficiency"] < 1 and roof["dtype"] == "fp32"
    assert "held-out" in v["benchmark"]["inputs"] and report["task"]["task"] == "digits"
    assert report["device"]["profile"].startswith("x86-64-avx512-vnni")  # scaled to this host


def test_build_report_names_precision_that_ran_and_flags_problems(tmp_path: Path) -> None:
    from effdl.benchmark.stats import summarize

    t = harness.Target(
        kind="package",
        path=tmp_path,
        title="m",
        inputs=[{"name": "x", "dtype": "float32", "shape": [None, 4]}],
        variants=[
            harness.VariantPlan("openvino-fp32", "openvino", "fp32", {}, size_bytes=10),
            harness.VariantPlan("onnxruntime-fp32", "onnxruntime", "fp32", {}, size_bytes=10),
        ],
        macs=1000,
    )
    s = settings_for("server", min_queries=10, duration_s=1.0, target_qps=50, target_latency_ms=1.0)

    def record(lat_s: list[float], info: dict, met: bool, validity: str) -> dict:
        b = summarize(lat_s)
        b.update(scenario="server", batch=1, threads=None, warmup=1, method="m", runtime_info=info, energy=None)
        b["server"] = {"target_qps": 50.0, "latency_percentile": 99, "latency_at_percentile_ms": 1e3 * max(lat_s),
                       "latency_bound_ms": 1.0, "latency_bound_met": met}  # fmt: skip
        b["loadgen"] = {"validity": validity, "perf_constraints_met": met, "min_duration_met": True}
        return b

    records = {
        "openvino-fp32": record([1e-3, 1e-3, 5e-2], {"inference_precision": "bf16"}, False, "INVALID"),
        "onnxruntime-fp32": record([2e-4, 2.1e-4, 2.2e-4], {}, True, "VALID"),
    }
    r = harness.build_report(t, s, records, profile=None, device=None, inputs_how="random", samples=4, seconds=1.0)
    ov, ort_ = r["variants"]
    assert ov["precision"] == "bf16" and ort_["precision"] == "fp32"  # BF16 is never shown as FP32
    assert (
        ov["benchmark"]["roofline"]["efficiency"] is None
        and "no device profile" in ov["benchmark"]["roofline"]["reason"]
    )
    notes = "\n".join(r["summary"]["notes"])
    assert "openvino-fp32: LoadGen result INVALID (perf_constraints_met not met)" in notes
    assert "p99 50.000 ms vs bound 1 ms: NOT met" in notes and "openvino-fp32: noisy run" in notes
    assert "shorter than the MLPerf rules for server" in notes
    assert r["summary"]["best"] == "onnxruntime-fp32" and "reference" not in r


def test_energy_on_a_host_without_device_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime-only remote (no pydantic/pyyaml): sensors only, else no energy with the reason; never a guess."""
    import sys

    from effdl.benchmark import worker

    monkeypatch.setitem(sys.modules, "effdl.devices", None)  # import fails as it would there
    meter, why = worker._energy_meter({"device": None}, {})
    if meter is None:
        assert "device profiles unavailable here" in why and "estimate" in why
    else:  # a readable sensor (RAPL as root on bare metal, NVML, Jetson rails)
        assert meter.name != "estimate"


def test_worker_records_openvinos_own_latency_when_asked(package: Path, tmp_path: Path) -> None:
    """A package's OpenVINO variant timed with ``backend_latency``: the record holds OpenVINO's own per-call
    latency (p50 above zero and at most the perf_counter p50 of the same calls) and says how it was measured;
    without the option the record has no such figure."""
    pytest.importorskip("openvino")
    from effdl.backends.openvino import OpenVinoBackend
    from effdl.benchmark.worker import run_spec
    from effdl.runtime.manifest import file_entry

    compiled = OpenVinoBackend().compile(package / "models" / "fp32.onnx", package / "models", "ov-fp32", {})
    manifest = json.loads((package / "manifest.json").read_text())
    files = [f"models/{f}" for f in compiled.files]
    manifest["variants"].append(
        {"name": "openvino-fp32", "backend": "openvino", "model": "fp32", "precision": "fp32", "device": "cpu",
         "files": files, "meta": compiled.meta, "accepted": True, "benchmark": None}
    )  # fmt: skip
    manifest["files"].update({f: file_entry(package, f) for f in files})
    (package / "manifest.json").write_text(json.dumps(manifest))
    npz = tmp_path / "x.npz"
    np.savez(npz, x=np.ones((1, 16), np.float32))
    spec = {"kind": "package", "root": str(package), "variant": "openvino-fp32", "warmup": 3, "queries": 30,
            "inputs_npz": str(npz), "input_names": ["x"], "threads": 1, "driver": "builtin"}  # fmt: skip
    rec = run_spec({**spec, "backend_latency": True})
    own = rec["backend_latency_ms"]
    assert 0 < own["p50"] <= rec["latency_ms"]["p50"]
    assert "InferRequest.latency" in own["method"] and "_backend_latencies" not in rec["runtime_info"]
    assert "backend_latency_ms" not in run_spec(spec)


def test_run_concurrent_streams_start_together_and_sum_throughput(tmp_path: Path) -> None:
    from effdl.benchmark.worker import run_concurrent

    model = make_mlp(tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", x=np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32))
    spec = {"kind": "onnx", "label": "mlp", "path": str(model), "warmup": 3, "queries": 50, "min_duration_s": 0.5,
            "threads": 1, "inputs_npz": str(tmp_path / "in.npz"), "input_names": ["x"], "batch": 1}  # fmt: skip
    launched = time.time()
    res = run_concurrent(spec, 2, tmp_path / "work", lead_s=8.0)
    assert res["streams"] == 2 and len(res["records"]) == 2
    spans = [r["timed_unix"] for r in res["records"]]
    assert all(b < e for b, e in spans)
    # both loaded in well under 8 s, then waited for the common start: timing began together and overlapped
    assert all(b >= launched + 8.0 - 0.05 for b, _ in spans)
    assert abs(spans[0][0] - spans[1][0]) < 0.5 and 0.0 < res["overlap"] <= 1.0
    assert res["throughput_per_s"] == pytest.approx(sum(r["inferences"] / r["duration_s"] for r in res["records"]))
    assert {r["threads"] for r in res["records"]} == {1}
    with pytest.raises(ValueError, match="streams must be >= 1"):
        run_concurrent(spec, 0, tmp_path / "work")
