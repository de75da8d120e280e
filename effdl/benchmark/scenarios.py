"""MLPerf-style benchmark scenarios (single-stream, multi-stream, offline, server), driven by MLPerf LoadGen.

A *sample* is one prepared feed of ``batch`` items; a *query* is what the load generator hands the system
under test at once:

| scenario | query | issued | headline figure |
|---|---|---|---|
| single-stream | 1 sample | after the previous | p90 latency |
| multi-stream | ``samples_per_query`` samples (8), one call if batch is dynamic | after the previous | p99 latency |
| offline | every sample at once | once | throughput (samples per second) |
| server | 1 sample | Poisson arrivals at ``target_qps`` | p99 latency vs the bound, at that load |

:func:`run_scenario` runs one scenario on an ``infer(feed)`` callable. With ``driver="loadgen"`` (the default
when ``mlperf_loadgen`` imports) MLPerf LoadGen schedules the queries, enforces the minimum query count and
duration, and its own summary (validity, percentiles, early stopping, QPS) is parsed from its detail log and
kept. Per-query latencies are also timed on the system-under-test side (``time.perf_counter_ns`` from the
moment LoadGen hands over a query, or for server from its arrival in the queue, to the completion of its last
sample), so effdl's statistics (linear-interpolation percentiles, bootstrap CI, CV) come from the same run.

``driver="builtin"`` is a hand-written scheduler with the same rules, for hosts where LoadGen is not
installed (an edge device that only has numpy and one runtime; the wheel is x86-64/aarch64 CPython only).
"""

from __future__ import annotations

import json
import math
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effdl.errors import InputError

SCENARIOS: tuple[str, ...] = ("single-stream", "multi-stream", "offline", "server")

# The MLPerf Inference minimums: mlperf.conf shipped inside mlcommons-loadgen 6.0 (percentiles, 600 s minimum
# duration, multi-stream 8 samples/query and 662 queries, server 10 ms default bound) and the inference rules'
# table (single-stream 1024 queries, server 270,336 queries, offline 24,576 samples).
MLPERF_RULES: dict[str, dict[str, Any]] = {
    "single-stream": {"min_queries": 1024, "min_duration_s": 600.0, "percentile": 90},
    "multi-stream": {"min_queries": 662, "min_duration_s": 600.0, "percentile": 99, "samples_per_query": 8},
    "offline": {"min_queries": 24576, "min_duration_s": 600.0, "percentile": 90},
    "server": {"min_queries": 270336, "min_duration_s": 600.0, "percentile": 99, "target_latency_ms": 10.0},
}
# ``--quick``: the same rules scaled down for a first look (a few seconds per scenario).
QUICK_RULES: dict[str, dict[str, Any]] = {
    "single-stream": {"min_queries": 256, "min_duration_s": 3.0},
    "multi-stream": {"min_queries": 64, "min_duration_s": 3.0},
    "offline": {"min_queries": 1024, "min_duration_s": 3.0},
    "server": {"min_queries": 512, "min_duration_s": 3.0},
}

# Appended to each scenario's method text by the worker.
METHOD_DRIVER = (
    "; queries issued by {driver}; {warmup} untimed warm-up calls first; headline percentile p{pct}; "
    "each variant in a fresh process ({threads} intra-op threads)"
)

MAX_GENERATED_QUERIES = 2_000_000  # LoadGen's pre-generated schedule: about 1 GB at this size

Feed = Mapping[str, np.ndarray]
Infer = Callable[[Feed], Any]


@dataclass
class Settings:
    """What one scenario run must satisfy. ``min_queries`` counts samples for offline (LoadGen's rule)."""

    scenario: str = "single-stream"
    min_queries: int = 1024
    min_duration_s: float = 600.0
    warmup: int = 50
    samples_per_query: int = 8
    target_qps: float | None = None
    target_latency_ms: float = 10.0
    percentile: int = 90
    rules: str = "mlperf"  # "mlperf" (the rules' minimums), "quick" (scaled down) or "custom"
    seed: int = 0

    def validate(self) -> Settings:
        """Raise :class:`InputError` naming the option for an impossible setting."""
        if self.scenario not in SCENARIOS:
            raise InputError(f"--scenario {self.scenario!r} is not one of {', '.join(SCENARIOS)}")
        if self.min_queries < 1:
            raise InputError(f"--min-queries must be at least 1, got {self.min_queries}")
        if self.min_duration_s < 0 or not math.isfinite(self.min_duration_s):
            raise InputError(f"--duration must be a finite number of seconds >= 0, got {self.min_duration_s}")
        if self.warmup < 0:
            raise InputError(f"--warmup must be >= 0, got {self.warmup}")
        if self.samples_per_query < 1:
            raise InputError(f"--samples-per-query must be at least 1, got {self.samples_per_query}")
        if self.target_qps is not None and not (self.target_qps > 0 and math.isfinite(self.target_qps)):
            raise InputError(f"--target-qps must be a positive number, got {self.target_qps}")
        if not self.target_latency_ms > 0:
            raise InputError(f"--latency-bound-ms must be positive, got {self.target_latency_ms}")
        return self

    def shortfall(self) -> list[str]:
        """How this run falls short of the MLPerf minimums (empty when it meets them)."""
        rule = MLPERF_RULES[self.scenario]
        out = []
        unit = "samples" if self.scenario == "offline" else "queries"
        if self.min_queries < rule["min_queries"]:
            out.append(f"minimum {self.min_queries} {unit} < the rules' {rule['min_queries']}")
        if self.min_duration_s < rule["min_duration_s"]:
            out.append(f"minimum duration {self.min_duration_s:g} s < the rules' {rule['min_duration_s']:g} s")
        return out

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if self.scenario != "multi-stream":
            d.pop("samples_per_query")
        if self.scenario != "server":
            d.pop("target_qps")
            d.pop("target_latency_ms")
        d["mlperf_minimums"] = {k: v for k, v in MLPERF_RULES[self.scenario].items() if k != "percentile"}
        d["shortfall"] = self.shortfall()
        d["meets_mlperf_minimums"] = not d["shortfall"]
        return d


def settings_for(
    scenario: str,
    *,
    quick: bool = False,
    min_queries: int | None = None,
    duration_s: float | None = None,
    warmup: int | None = None,
    samples_per_query: int | None = None,
    target_qps: float | None = None,
    target_latency_ms: float | None = None,
    seed: int = 0,
) -> Settings:
    """Settings for ``scenario``: the MLPerf minimums, scaled down with ``quick``, overridden by explicit values."""
    if scenario not in SCENARIOS:
        raise InputError(f"--scenario {scenario!r} is not one of {', '.join(SCENARIOS)}")
    rule = dict(MLPERF_RULES[scenario])
    rules = "mlperf"
    if quick:
        rule.update(QUICK_RULES[scenario])
        rules = "quick"
    if min_queries is not None or duration_s is not None:
        rules = "custom"
    s = Settings(
        scenario=scenario,
        min_queries=min_queries if min_queries is not None else rule["min_queries"],
        min_duration_s=duration_s if duration_s is not None else rule["min_duration_s"],
        warmup=warmup if warmup is not None else (10 if scenario == "offline" else 50),
        samples_per_query=samples_per_query or MLPERF_RULES["multi-stream"]["samples_per_query"],
        target_qps=target_qps,
        target_latency_ms=target_latency_ms or MLPERF_RULES["server"]["target_latency_ms"],
        percentile=rule["percentile"],
        rules=rules,
        seed=seed,
    )
    return s.validate()


@dataclass
class ScenarioResult:
    """What a scenario run produced: per-query latencies (per call for offline), counts, wall time, driver."""

    scenario: str
    latencies_s: list[float]
    samples: int  # samples completed (each is one feed of ``batch`` items)
    queries: int  # queries completed (offline: 1)
    duration_s: float  # first issue to last completion
    driver: dict[str, Any]
    loadgen: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)


class _Executor:
    """Runs a query's samples: one call per sample, or one concatenated call when the batch axis is dynamic."""

    def __init__(self, infer: Infer, feeds: Sequence[Feed], concat: bool) -> None:
        self.infer, self.feeds, self.concat = infer, feeds, concat

    def run(self, indices: Sequence[int]) -> None:
        if len(indices) == 1:
            self.infer(self.feeds[indices[0]])
        elif self.concat:
            parts = [self.feeds[i] for i in indices]
            self.infer({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
        else:
            for i in indices:
                self.infer(self.feeds[i])


def loadgen_available() -> tuple[bool, str]:
    """Whether MLPerf LoadGen imports here, and its version or the reason it does not."""
    try:
        import mlperf_loadgen  # noqa: F401
    except ImportError as e:
        return False, f"mlperf_loadgen is not installed ({e}); pip install mlcommons-loadgen"
    from importlib import metadata

    try:
        return True, metadata.version("mlcommons-loadgen")
    except metadata.PackageNotFoundError:
        return True, "unknown"


def warmup(
    infer: Infer, feeds: Sequence[Feed], n: int, *, samples_per_query: int = 1, concat: bool = True
) -> list[float]:
    """``n`` warm-up queries of ``samples_per_query`` samples (the shapes the timed run will use), cycling
    through the samples; returns their latencies in seconds (not reported as results)."""
    ex = _Executor(infer, feeds, concat)
    clock = time.perf_counter
    out = []
    for i in range(n):
        idx = [(i * samples_per_query + j) % len(feeds) for j in range(samples_per_query)]
        t0 = clock()
        ex.run(idx)
        out.append(clock() - t0)
    return out


def run_scenario(
    settings: Settings,
    infer: Infer,
    feeds: Sequence[Feed],
    *,
    concat: bool = True,
    driver: str = "auto",
    expected_latency_s: float | None = None,
) -> ScenarioResult:
    """Run ``settings.scenario`` on ``infer``; ``feeds`` are the samples (prepared, in memory).

    ``expected_latency_s`` (one query, e.g. the warm-up median) lets LoadGen size its query schedule; the
    server scenario's default target QPS is half of what that latency sustains. ``driver`` is ``"loadgen"``,
    ``"builtin"`` or ``"auto"`` (LoadGen when installed).
    """
    settings.validate()
    if not feeds:
        raise InputError("no input samples to benchmark")
    if driver not in ("auto", "loadgen", "builtin"):
        raise InputError(f"--driver {driver!r} is not one of auto, loadgen, builtin")
    ok, why = loadgen_available()
    if driver == "loadgen" and not ok:
        from effdl.errors import BackendUnavailableError

        raise BackendUnavailableError(why, "pip install mlcommons-loadgen, or use --driver builtin")
    exp = expected_latency_s if expected_latency_s and expected_latency_s > 0 else 1e-3
    if settings.scenario == "server" and settings.target_qps is None:
        settings.target_qps = round(0.5 / exp, 3)
    ex = _Executor(infer, feeds, concat)
    if driver == "builtin" or (driver == "auto" and not ok):
        res = _run_builtin(settings, ex, len(feeds))
        res.driver = {"name": "effdl-builtin", "why": "requested" if driver == "builtin" else why}
    else:
        res = _run_loadgen(settings, ex, len(feeds), exp)
        res.driver = {"name": "mlperf_loadgen", "version": why}
    res.settings = settings.to_json()
    return res


# --------------------------------------------------------------------------------------------------------------
# MLPerf LoadGen
# --------------------------------------------------------------------------------------------------------------

_LG_SCENARIO = {
    "single-stream": "SingleStream",
    "multi-stream": "MultiStream",
    "offline": "Offline",
    "server": "Server",
}


def _run_loadgen(s: Settings, ex: _Executor, n_feeds: int, expected_latency_s: float) -> ScenarioResult:
    import mlperf_loadgen as lg

    clock = time.perf_counter_ns
    lat_ns: list[int] = []
    count = {"samples": 0, "queries": 0, "first": 0, "last": 0}
    complete = lg.QuerySamplesComplete
    response = lg.QuerySampleResponse
    worker: threading.Thread | None = None
    work: queue.SimpleQueue[Any] = queue.SimpleQueue()

    if s.scenario == "server":
        # LoadGen's issue thread must not block in the server scenario: queries are queued with their arrival
        # time and one worker runs them in order, so queueing delay is part of each latency.
        def issue(qs: list[Any]) -> None:
            work.put((clock(), qs))

        def serve() -> None:
            while (item := work.get()) is not None:
                t_arr, qs = item
                for q in qs:
                    ex.run([q.index])
                    t1 = clock()
                    complete([response(q.id, 0, 0)])
                    lat_ns.append(t1 - t_arr)
                    count["samples"] += 1
                    count["queries"] += 1
                    count["last"] = t1
                    if not count["first"]:
                        count["first"] = t_arr

        worker = threading.Thread(target=serve, name="effdl-sut", daemon=True)
        worker.start()
    elif s.scenario == "offline":

        def issue(qs: list[Any]) -> None:
            count["first"] = clock()
            done: list[Any] = []
            for q in qs:  # one call per sample (a sample is already a batch of `batch` items)
                t0 = clock()
                ex.run([q.index])
                lat_ns.append(clock() - t0)
                done.append(response(q.id, 0, 0))
                if len(done) == 256:  # completions in blocks: only the query's end counts in offline
                    complete(done)
                    done = []
            if done:
                complete(done)
            count["samples"] += len(qs)
            count["queries"] += 1
            count["last"] = clock()
    else:

        def issue(qs: list[Any]) -> None:
            t0 = clock()
            ex.run([q.index for q in qs])
            t1 = clock()
            complete([response(q.id, 0, 0) for q in qs])
            lat_ns.append(t1 - t0)
            count["samples"] += len(qs)
            count["queries"] += 1
            if not count["first"]:
                count["first"] = t0
            count["last"] = t1

    def flush() -> None:
        pass

    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, _LG_SCENARIO[s.scenario])
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = int(round(s.min_duration_s * 1e3))
    ts.min_query_count = int(s.min_queries)
    ts.performance_sample_count_override = n_feeds
    # LoadGen pre-generates its whole query schedule from the expected speed and ends the run (INVALID) when it
    # runs out, so the estimate is made optimistic (half the warm-up median). The schedule costs about 0.5 KB
    # per query, so it is capped at MAX_GENERATED_QUERIES: a very fast model then cannot fill a long run under
    # LoadGen, and LoadGen's verdict (min duration not met) says so; --driver builtin has no such cap.
    exp_ns = max(1.0, expected_latency_s * 1e9 * 0.5)
    if s.scenario != "offline":
        ts.max_query_count = max(int(s.min_queries), MAX_GENERATED_QUERIES)
    if s.scenario == "single-stream":
        ts.single_stream_expected_latency_ns = int(exp_ns)
        ts.single_stream_target_latency_percentile = s.percentile / 100
    elif s.scenario == "multi-stream":
        ts.multi_stream_samples_per_query = s.samples_per_query
        ts.multi_stream_expected_latency_ns = int(exp_ns)
        ts.multi_stream_target_latency_percentile = s.percentile / 100
    elif s.scenario == "offline":
        ts.offline_expected_qps = max(1.0, 2.0 / expected_latency_s)
    else:
        assert s.target_qps is not None
        ts.server_target_qps = float(s.target_qps)
        ts.server_target_latency_ns = int(s.target_latency_ms * 1e6)
        ts.server_target_latency_percentile = s.percentile / 100

    logdir = Path(tempfile.mkdtemp(prefix="effdl-loadgen-"))
    try:
        log = lg.LogSettings()
        log.log_output.outdir = str(logdir)
        log.log_output.copy_summary_to_stdout = False
        log.enable_trace = False
        sut = lg.ConstructSUT(issue, flush)
        qsl = lg.ConstructQSL(n_feeds, n_feeds, lambda _: None, lambda _: None)
        try:
            lg.StartTestWithLogSettings(sut, qsl, ts, log)
        finally:
            if worker is not None:
                work.put(None)
                worker.join()
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        summary = parse_loadgen_log(logdir)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    return ScenarioResult(
        scenario=s.scenario,
        latencies_s=[x / 1e9 for x in lat_ns],
        samples=count["samples"],
        queries=count["queries"],
        duration_s=(count["last"] - count["first"]) / 1e9,
        driver={},
        loadgen=summary,
    )


def parse_loadgen_log(logdir: Path) -> dict[str, Any]:
    """LoadGen's verdict and statistics from ``mlperf_log_detail.txt`` (its ``:::MLLOG`` JSON lines), plus the
    human summary text. Latencies are converted to milliseconds (LoadGen's percentiles are nearest-rank, over
    scheduled-to-completed time)."""
    detail = Path(logdir) / "mlperf_log_detail.txt"
    if not detail.is_file():
        raise RuntimeError(f"LoadGen wrote no detail log in {logdir}")
    kv: dict[str, Any] = {}
    warnings: list[str] = []
    errors: list[str] = []
    for line in detail.read_text(errors="replace").splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            rec = json.loads(line[len(":::MLLOG ") :])
        except json.JSONDecodeError:
            continue
        key, value = rec.get("key"), rec.get("value")
        meta = rec.get("metadata") or {}
        if meta.get("is_error"):
            errors.append(f"{key}: {value}")
        elif meta.get("is_warning"):
            warnings.append(f"{key}: {value}")
        kv[key] = value
    lat: dict[str, float] = {}
    lat_query: dict[str, float] = {}  # multi-stream: per query (of samples_per_query samples)
    for k, v in kv.items():
        if k.startswith("result_") and k.endswith("_latency_ns") and isinstance(v, int | float):
            name = k[len("result_") : -len("_latency_ns")]
            per_query = "query" in name
            name = name.replace("_per_query", "").replace("_query", "")
            name = name.replace("_percentile", "").replace(".00", "").replace(".", "_")
            name = name if name in ("min", "max", "mean") else "p" + name
            (lat_query if per_query else lat)[name] = v / 1e6
    out: dict[str, Any] = {
        "version": kv.get("loadgen_version"),
        "validity": kv.get("result_validity"),
        "invalid_reason": kv.get("result_invalid_reason") or None,
        "min_duration_met": kv.get("result_min_duration_met"),
        "min_queries_met": kv.get("result_min_queries_met"),
        "perf_constraints_met": kv.get("result_perf_constraints_met"),
        "early_stopping_met": kv.get("early_stopping_met"),
        "early_stopping": (kv.get("early_stopping_result") or "").strip() or None,
        "query_count": kv.get("result_query_count"),
        "overlatency_query_count": kv.get("result_overlatency_query_count"),
        "latency_ms": lat,
        "query_latency_ms": lat_query or None,
        "qps_with_loadgen_overhead": kv.get("result_qps_with_loadgen_overhead"),
        "qps_without_loadgen_overhead": kv.get("result_qps_without_loadgen_overhead"),
        "samples_per_second": kv.get("result_samples_per_second"),
        "completed_samples_per_sec": kv.get("result_completed_samples_per_sec"),
        "scheduled_samples_per_sec": kv.get("result_scheduled_samples_per_sec"),
        "effective_settings": {k[len("effective_") :]: v for k, v in kv.items() if k.startswith("effective_")},
        "warnings": warnings,
        "errors": errors,
    }
    summary = Path(logdir) / "mlperf_log_summary.txt"
    if summary.is_file():
        out["summary_text"] = summary.read_text(errors="replace")
    return {k: v for k, v in out.items() if v is not None}


# --------------------------------------------------------------------------------------------------------------
# Built-in driver
# --------------------------------------------------------------------------------------------------------------


def _run_builtin(s: Settings, ex: _Executor, n_feeds: int) -> ScenarioResult:
    # Written by hand only for hosts without LoadGen (edge boxes with numpy and one runtime); it follows the
    # same rules: minimum queries AND minimum duration, random sample order from a seeded RNG, Poisson arrivals
    # for server (latency from the scheduled arrival), one query of all samples for offline.
    rng = np.random.default_rng(s.seed)
    clock = time.perf_counter
    lat: list[float] = []

    def sample_order(k: int) -> Any:  # random sample indices, drawn in blocks to keep the loop cheap
        while True:
            yield from rng.integers(n_feeds, size=(4096, k)).tolist()

    if s.scenario == "offline":
        # LoadGen issues max(min samples, expected QPS x duration); without an estimate, run until both hold.
        order = sample_order(1)
        t_start = clock()
        n = 0
        while n < s.min_queries or clock() - t_start < s.min_duration_s:
            idx = next(order)
            t0 = clock()
            ex.run(idx)
            lat.append(clock() - t0)
            n += 1
        return ScenarioResult(s.scenario, lat, n, 1, clock() - t_start, {})
    if s.scenario in ("single-stream", "multi-stream"):
        k = s.samples_per_query if s.scenario == "multi-stream" else 1
        order = sample_order(k)
        t_start = clock()
        while len(lat) < s.min_queries or clock() - t_start < s.min_duration_s:
            idx = next(order)
            t0 = clock()
            ex.run(idx)
            lat.append(clock() - t0)
        return ScenarioResult(s.scenario, lat, len(lat) * k, len(lat), clock() - t_start, {})
    # server
    assert s.target_qps is not None
    n = max(s.min_queries, math.ceil(s.target_qps * s.min_duration_s))
    arrivals = np.cumsum(rng.exponential(1.0 / s.target_qps, size=n))
    indices = rng.integers(n_feeds, size=n)
    work: queue.SimpleQueue[Any] = queue.SimpleQueue()
    done: list[float] = []

    def serve() -> None:
        while (item := work.get()) is not None:
            t_sched, i = item
            ex.run([i])
            t1 = clock()
            lat.append(t1 - t_sched)
            done.append(t1)

    worker = threading.Thread(target=serve, name="effdl-sut", daemon=True)
    worker.start()
    t_start = clock()
    for a, i in zip(arrivals, indices, strict=True):
        t_sched = t_start + float(a)
        delay = t_sched - clock()
        if delay > 0:
            time.sleep(delay)
        work.put((t_sched, int(i)))
    work.put(None)
    worker.join()
    return ScenarioResult(s.scenario, lat, len(lat), len(lat), (done[-1] if done else clock()) - t_start, {})
