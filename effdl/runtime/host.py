"""Which CPU this is, in a few fields, with the standard library only.

``effdl.devices.detect_host`` says much more but needs pydantic and PyYAML; the embedded runtime needs
only numpy, so it reads ``/proc/cpuinfo`` itself. The fingerprint is recorded beside a package's
benchmark (``variants[].benchmark.host``) so that ``effdl.load(backend="auto")`` can say when the
recorded latencies came from another CPU than the one it runs on.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    for key in ("model name", "Hardware", "Model", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.M)
        if m and m.group(1).strip():
            return m.group(1).strip()
    m = re.search(r"^CPU part\s*:\s*(\S+)$", text, re.M)  # Arm cores without a model name
    if m:
        return f"Arm core part {m.group(1)}"
    return platform.processor() or None


def host_fingerprint() -> dict[str, Any]:
    """``{cpu, machine, logical_cpus, system}`` of this host (no heavy import, no subprocess)."""
    return {
        "cpu": _cpu_model(),
        "machine": platform.machine() or None,
        "logical_cpus": os.cpu_count(),
        "system": platform.system() or None,
    }


def _norm(s: Any) -> str:
    return " ".join(str(s).split()).lower()


def describe(host: dict[str, Any]) -> str:
    """``'Intel(R) Xeon(R) Gold 6430' (x86_64, 64 CPUs)``."""
    parts = [
        p for p in (host.get("machine"), f"{host['logical_cpus']} CPUs" if host.get("logical_cpus") else None) if p
    ]
    return f"{host.get('cpu') or 'unknown CPU'!r}" + (f" ({', '.join(parts)})" if parts else "")


def compare_hosts(recorded: dict[str, Any] | None, here: dict[str, Any]) -> tuple[bool | None, str]:
    """Whether a benchmark recorded on ``recorded`` was on this host's kind of CPU, and a sentence saying so.

    Returns ``(None, ...)`` when the package does not say where its benchmark ran, ``(True, ...)`` for the
    same CPU model and machine (a different CPU count is mentioned), ``(False, ...)`` otherwise.
    """
    if not recorded or not recorded.get("cpu"):
        return None, "the package does not record which CPU its benchmark ran on"
    same_cpu = _norm(recorded.get("cpu")) == _norm(here.get("cpu")) and _norm(recorded.get("machine")) == _norm(
        here.get("machine")
    )
    if not same_cpu:
        return False, (
            f"benchmark recorded on a different CPU: {describe(recorded)}, this host is {describe(here)}; "
            "the recorded order may not hold here (time it with session.benchmark())"
        )
    if recorded.get("logical_cpus") and here.get("logical_cpus") and recorded["logical_cpus"] != here["logical_cpus"]:
        return True, (
            f"benchmark recorded on this CPU model {recorded.get('cpu')!r} but with {recorded['logical_cpus']} CPUs "
            f"(this host has {here['logical_cpus']})"
        )
    return True, f"benchmark recorded on this CPU model {describe(here)}"
