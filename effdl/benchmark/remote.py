"""Benchmarks on a remote edge device over SSH: ``effdl bench PACKAGE --remote user@host``.

What travels (one gzipped tar piped through ``ssh``, so the remote needs only ``sh``, ``tar`` and ``mktemp``,
no rsync or scp): the package's ``manifest.json`` and the selected variants' files, the prepared input samples,
one spec per variant, the device profile's YAML when one was given, and the minimal effdl code that loads a
package and times it (:func:`runtime_files`: the runtime, the backends, the benchmark worker and scenarios). The
remote needs Python >= 3.11 with numpy and onnxruntime or openvino; no torch, no effdl install. Each variant runs
in its own ``python -m effdl.benchmark.worker`` process there; the JSON record comes back on stdout, and the
temporary folder is removed at the end whatever happened.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from effdl.errors import BackendUnavailableError, InputError

# The effdl code a remote benchmark imports (relative to the folder holding the effdl package): every module of
# the embedded runtime and of the backends (whatever they import among themselves), the benchmark worker and
# what it uses. devices.py is used only where the remote has pydantic and pyyaml (energy estimate, host facts).
RUNTIME_PACKAGES: tuple[str, ...] = ("effdl/runtime", "effdl/backends")
RUNTIME_MODULES: tuple[str, ...] = (
    "effdl/__init__.py",
    "effdl/errors.py",
    "effdl/devices.py",
    "effdl/benchmark/worker.py",
    "effdl/benchmark/scenarios.py",
    "effdl/benchmark/stats.py",
    "effdl/benchmark/system.py",
    "effdl/benchmark/energy.py",
    "effdl/benchmark/gpu.py",
)


def runtime_files() -> list[str]:
    """The effdl source files shipped to the remote, relative to the folder holding the effdl package."""
    import effdl

    code_root = Path(effdl.__file__).resolve().parent.parent
    files = list(RUNTIME_MODULES)
    for pkg in RUNTIME_PACKAGES:
        files += sorted(p.relative_to(code_root).as_posix() for p in (code_root / pkg).glob("*.py"))
    return files


_TMP_RE = re.compile(r"^/[\w./-]*effdl-bench\.[A-Za-z0-9]+$")
_TARGET_RE = re.compile(r"^([A-Za-z0-9._-]+@)?[A-Za-z0-9._:\[\]-]+$")


class RemoteHost:
    """An SSH destination (``user@host``) and how to reach and run Python on it.

    ``ssh_options`` are ``-o`` options (``Port=2222``, ``IdentityFile=~/.ssh/edge``, ...); ``BatchMode=yes`` and
    ``ConnectTimeout=20`` are always added so a password prompt or an unreachable host fails instead of hanging.
    """

    def __init__(
        self,
        target: str,
        *,
        python: str = "python3",
        ssh_options: list[str] | None = None,
        ssh: str = "ssh",
        timeout_s: float = 900.0,
    ) -> None:
        if not _TARGET_RE.match(target):
            raise InputError(f"--remote {target!r}: expected user@host or host")
        if not python or any(c in python for c in "\n;&|`$"):
            raise InputError(f"--remote-python {python!r}: expected a command such as python3 or /usr/bin/python3")
        for o in ssh_options or []:
            if "=" not in o or o.startswith("-"):
                raise InputError(f"--ssh-option {o!r}: expected an ssh -o option such as Port=2222")
        self.target, self.python, self.ssh = target, python, ssh
        self.ssh_options = list(ssh_options or [])
        self.timeout_s = timeout_s

    def describe(self) -> dict[str, Any]:
        return {"target": self.target, "python": self.python, "ssh_options": self.ssh_options}

    def _argv(self, command: str) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"]
        for o in self.ssh_options:
            opts += ["-o", o]
        return [self.ssh, *opts, self.target, command]

    def call(self, command: str, *, stdin: bytes | None = None, timeout: float | None = None) -> str:
        """Run ``command`` (a shell line) on the remote; its stdout, or :class:`BackendUnavailableError`."""
        try:
            proc = subprocess.run(
                self._argv(command),
                input=stdin,
                capture_output=True,
                timeout=timeout or self.timeout_s,
                check=False,
            )
        except FileNotFoundError:
            raise BackendUnavailableError(f"{self.ssh!r} not found", "install an OpenSSH client") from None
        except subprocess.TimeoutExpired:
            raise BackendUnavailableError(
                f"remote {self.target}: command did not finish in {timeout or self.timeout_s:.0f} s"
            ) from None
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            tail = "\n".join(err[-6:]) or f"exit {proc.returncode}"
            raise BackendUnavailableError(f"remote {self.target}: {tail}")
        return proc.stdout.decode(errors="replace")

    def run_specs(
        self,
        target: Any,
        specs: list[dict[str, Any]],
        *,
        device: str | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Copy ``target`` (a package) and the runtime to a temporary folder, run each spec there in a fresh
        process, bring the records back, remove the folder. Returns the records and the remote's system facts."""
        say = progress or (lambda _m: None)
        if target.kind != "package":
            raise InputError(
                f"--remote runs packages (folders written by `effdl compress`); {target.path} is a {target.kind}",
                "compress it first: effdl compress MODEL -r RECIPE -o PACKAGE",
            )
        payload, specs = stage(target, specs, device=device)
        py = shlex.quote(self.python)
        probe = (
            f"{py} -c 'import sys; assert sys.version_info >= (3, 11), sys.version; import numpy' >&2 || "
            f"{{ echo 'effdl bench --remote needs Python >= 3.11 with numpy on the remote ({self.python})' >&2; "
            "exit 3; }; "
            'd=$(mktemp -d "${TMPDIR:-/tmp}/effdl-bench.XXXXXX") && tar -xzf - -C "$d" && echo "$d"'
        )
        remote_dir = self.call(probe, stdin=payload).strip().splitlines()[-1]
        if not _TMP_RE.match(remote_dir):
            raise BackendUnavailableError(f"remote {self.target}: unexpected temporary folder {remote_dir!r}")
        records: list[dict[str, Any]] = []
        system = None
        try:
            for spec in specs:
                say(f"benchmark {spec['variant']} on {self.target}")
                label = spec["label"]
                line = (
                    f"cd {shlex.quote(remote_dir)} && {py} -s -E -m effdl.benchmark.worker "
                    f"specs/{label}.json out/{label}.json && cat out/{label}.json"
                )
                timeout = self.timeout_s + float(spec["settings"].get("min_duration_s", 0)) * 3
                out = self.call(line, timeout=timeout)
                try:
                    rec = json.loads(out.strip().splitlines()[-1])
                except (json.JSONDecodeError, IndexError):
                    raise BackendUnavailableError(
                        f"remote {self.target}: no benchmark record came back for {spec['variant']}"
                    ) from None
                system = rec.pop("system", None) or system
                records.append(rec)
        finally:
            self.call(f"rm -rf {shlex.quote(remote_dir)}", timeout=60)
        return records, system


def stage(target: Any, specs: list[dict[str, Any]], *, device: str | None = None) -> tuple[bytes, list[dict[str, Any]]]:
    """The gzipped tar for the remote and the specs rewritten to paths inside it (``pkg/``, ``inputs.npz``)."""
    import effdl

    code_root = Path(effdl.__file__).resolve().parent.parent
    root = Path(target.path)
    buf = io.BytesIO()
    files = {"pkg/manifest.json": root / "manifest.json"}
    for v in target.variants:
        for f in v.files:
            files[f"pkg/{f}"] = root / f
    for rel in runtime_files():
        files[rel] = code_root / rel
    files["inputs.npz"] = Path(specs[0]["inputs_npz"])
    remote_device = None
    if device:
        from effdl.devices import load_profile, profile_dirs

        p = Path(device)
        if not p.is_file():
            name = load_profile(device).name
            p = next(d / f"{name}.yaml" for d in profile_dirs() if (d / f"{name}.yaml").is_file())
        remote_device = f"devices/{p.name}"
        files[remote_device] = p
    out_specs = []
    for s in specs:
        s = {**s, "root": "pkg", "inputs_npz": "inputs.npz", "device": remote_device, "collect_system": True}
        out_specs.append(s)
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for arc, path in files.items():
            if not path.is_file():
                raise InputError(f"cannot stage {path} for the remote run: file missing")
            tar.add(str(path), arcname=arc)
        for s in out_specs:
            data = json.dumps(s).encode()
            info = tarfile.TarInfo(f"specs/{s['label']}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        d = tarfile.TarInfo("out")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        tar.addfile(d)
    return buf.getvalue(), out_specs
