"""The package format: ``manifest.json`` beside the model files, every file's sha256 recorded.

See docs/package-format.md. This module needs only the standard library.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from effdl.errors import InputError

PACKAGE_FORMAT = "effdl.package"
PACKAGE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(root: Path, rel: str) -> dict[str, Any]:
    p = root / rel
    return {"sha256": sha256_of(p), "bytes": p.stat().st_size}


def read_manifest(root: str | Path) -> dict[str, Any]:
    """Read and check ``root/manifest.json`` (format name and version, required keys)."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"package not found: {root}")
    if root.is_file():
        raise InputError(f"{root} is a file; an effdl package is a folder with {MANIFEST}")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise InputError(f"{root} is not an effdl package: {MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{mpath}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise InputError(f"{mpath}: not an effdl package manifest (format is {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > PACKAGE_FORMAT_VERSION:
        raise InputError(
            f"{mpath}: package format version {version!r} is newer than this effdl reads ({PACKAGE_FORMAT_VERSION})",
            "upgrade effdl",
        )
    for key in ("inputs", "outputs", "variants", "files"):
        if key not in manifest:
            raise InputError(f"{mpath}: required key {key!r} is missing")
    return manifest


def verify_files(root: Path, manifest: dict[str, Any], rels: list[str]) -> None:
    """Check size and sha256 of each file in ``rels`` against the manifest; refuse a tampered one."""
    files = manifest["files"]
    for rel in rels:
        entry = files.get(rel)
        if entry is None:
            raise InputError(f"package {root}: file {rel!r} is used by a variant but not listed in {MANIFEST}")
        p = root / rel
        if not p.is_file():
            raise InputError(f"package {root}: file {rel!r} is missing")
        size = p.stat().st_size
        if size != entry["bytes"]:
            raise InputError(
                f"package {root}: file {rel!r} has {size} bytes, the manifest says {entry['bytes']} "
                "(truncated or modified)"
            )
        if sha256_of(p) != entry["sha256"]:
            raise InputError(f"package {root}: file {rel!r} does not match its sha256 in {MANIFEST} (modified)")
