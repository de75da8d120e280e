"""effdl bench --remote: a package benchmarked over SSH against an sshd started on 127.0.0.1 by the test."""

from __future__ import annotations

import getpass
import glob
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_bench import cli_app, make_mlp, make_package  # noqa: I001  (pytest puts tests/ on sys.path)
from typer.testing import CliRunner

from effdl.benchmark import harness
from effdl.benchmark.remote import RemoteHost, runtime_files, stage
from effdl.benchmark.scenarios import settings_for
from effdl.errors import BackendUnavailableError, InputError
from effdl.report import load_report

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """sshd in the foreground on 127.0.0.1, a generated host key and client key; yields the ssh -o options."""
    if not os.path.exists(SSHD) or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server / openssh-client not installed (.ci/run installs them when it runs as root)")
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True, timeout=30)
    shutil.copy(d / "client.pub", d / "authorized_keys")
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nPidFile none\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    port = _free_port()
    log = open(d / "sshd.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)], stderr=log, stdout=log)
    opts = [
        f"Port={port}",
        f"IdentityFile={d / 'client'}",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "LogLevel=ERROR",
    ]
    try:
        deadline = time.monotonic() + 20
        host = RemoteHost(f"{getpass.getuser()}@127.0.0.1", ssh_options=opts, timeout_s=60)
        while True:
            try:
                assert host.call("echo ready", timeout=10).strip() == "ready"
                break
            except BackendUnavailableError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"sshd did not come up: {(d / 'sshd.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield opts
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _leftovers() -> set[str]:
    return set(glob.glob(os.path.join(os.environ.get("TMPDIR", "/tmp"), "effdl-bench.*")))


def test_remote_bench_of_a_package_over_ssh(sshd: list[str], tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg")
    out = tmp_path / "remote.json"
    before = _leftovers()
    args = ["bench", str(pkg), "--remote", f"{getpass.getuser()}@127.0.0.1", "--remote-python", sys.executable]
    for o in sshd:
        args += ["--ssh-option", o]
    args += ["--variant", "onnxruntime-fp32", "--duration", "0.2", "--min-queries", "30", "--warmup", "3"]
    res = CliRunner().invoke(cli_app(), [*args, "--json", str(out), "--device", "raspberry-pi-5"])
    assert res.exit_code == 0, (res.output, res.exception)
    report = load_report(out)
    (v,) = report["variants"]
    b = v["benchmark"]
    assert b["queries"] >= 30 and b["latency_ms"]["p50"] > 0 and b["peak_rss_bytes"] > 0
    assert report["bench"]["remote"]["target"].endswith("@127.0.0.1")
    assert report["device"]["profile"] == "raspberry-pi-5" and "127.0.0.1" in report["title"]
    # the remote ran the shipped runtime only: no torch was imported there
    assert "torch" not in b["modules"] and "onnxruntime" in b["modules"]
    # the remote's own system facts are in the report, and its energy figure used the shipped profile
    assert report["system"]["hostname"] == socket.gethostname()
    assert b["energy"]["estimate"] is True and "raspberry-pi-5" in b["energy"]["assumptions"]
    assert _leftovers() == before  # the temporary folder was removed


def test_remote_failure_is_reported_and_cleaned_up(sshd: list[str], tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg")
    t = harness.resolve_target(pkg, variants=["onnxruntime-fp32"])
    before = _leftovers()
    host = RemoteHost(f"{getpass.getuser()}@127.0.0.1", python="/nonexistent/python3", ssh_options=sshd)
    with pytest.raises(BackendUnavailableError, match="needs Python >= 3.11 with numpy"):
        harness.run_bench(t, settings_for("single-stream", duration_s=0, min_queries=5), remote=host)
    # a worker that fails on the remote: its error comes back, the folder goes away
    (pkg / "models" / "fp32.onnx").write_bytes(b"corrupted")  # sha256 no longer matches the manifest
    host = RemoteHost(f"{getpass.getuser()}@127.0.0.1", python=sys.executable, ssh_options=sshd)
    with pytest.raises(BackendUnavailableError, match=r"fp32.onnx' has 9 bytes.*\(truncated or modified\)$"):
        harness.run_bench(t, settings_for("single-stream", duration_s=0, min_queries=5), remote=host)
    assert _leftovers() == before


def test_stage_ships_runtime_and_package_only(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg")
    t = harness.resolve_target(pkg, variants=["onnxruntime-wide"])
    npz = tmp_path / "inputs.npz"
    npz.write_bytes(b"npz")
    payload, specs = stage(t, [{"label": "w", "inputs_npz": str(npz), "variant": "onnxruntime-wide"}])
    names = set(tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz").getnames())
    assert {"pkg/manifest.json", "pkg/models/wide.onnx", "inputs.npz", "specs/w.json", *runtime_files()} <= names
    assert {"effdl/runtime/session.py", "effdl/backends/onnxruntime.py", "effdl/benchmark/worker.py"} <= names
    assert "pkg/models/fp32.onnx" not in names  # only the selected variants' files travel
    assert not any(n.startswith(("effdl/zoo", "effdl/compress", "effdl/pipeline", "effdl/cli")) for n in names)
    assert specs[0]["root"] == "pkg" and specs[0]["collect_system"] is True


def test_remote_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--remote"):
        RemoteHost("user@host; rm -rf /")
    with pytest.raises(InputError, match="--ssh-option"):
        RemoteHost("user@host", ssh_options=["-p 22"])
    with pytest.raises(InputError, match="--remote-python"):
        RemoteHost("user@host", python="python3; reboot")
    t = harness.resolve_target(make_mlp(tmp_path / "m.onnx"))
    with pytest.raises(InputError, match="--remote runs packages"):
        harness.run_bench(t, settings_for("single-stream", duration_s=0, min_queries=5), remote=RemoteHost("h"))
