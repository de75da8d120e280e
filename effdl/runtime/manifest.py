"""The package format: ``manifest.json`` beside the model files, every file's sha256 recorded.

See docs/package-format.md. This module needs only the standard library.
"""

from __future__ import annotations

import hashlib
import json
import re
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
    if not isinstance(manifest["files"], dict):
        raise InputError(f"{mpath}: 'files' must be an object {{path: {{sha256, bytes}}}}")
    if not isinstance(manifest["variants"], list):
        raise InputError(f"{mpath}: 'variants' must be a list")
    for rel in manifest["files"]:
        check_relpath(rel, f"{mpath}: files")
    for i, v in enumerate(manifest["variants"]):
        where = f"{mpath}: variants[{i}]"
        if not isinstance(v, dict) or not all(k in v for k in ("name", "backend", "files")):
            raise InputError(f"{where}: a variant needs 'name', 'backend' and 'files'")
        if not isinstance(v["files"], list) or not v["files"]:
            raise InputError(f"{where} ({v['name']}): 'files' must be a non-empty list of paths")
        for rel in v["files"]:
            check_relpath(rel, f"{where} ({v['name']}).files")
        if len({str(Path(rel).parent) for rel in v["files"]}) != 1:
            raise InputError(f"{where} ({v['name']}): a variant's files must lie in one folder, got {v['files']}")
    return manifest


def check_relpath(rel: Any, where: str) -> str:
    """Refuse a manifest path that is not a plain relative path inside the package (``../x``, ``/etc/x``, ``C:``)."""
    if not isinstance(rel, str) or not rel.strip():
        raise InputError(f"{where}: {rel!r} is not a file path")
    parts = re.split(r"[\\/]", rel)
    if rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel) or ".." in parts:
        raise InputError(
            f"{where}: path {rel!r} points outside the package; a package may only reference files inside its folder",
            "the manifest was edited or crafted: rebuild the package with effdl compress",
        )
    return rel


def resolve_inside(root: Path, rel: str) -> Path:
    """``root / rel``, refused when it resolves (through a symlink) to a place outside ``root``."""
    check_relpath(rel, f"package {root}")
    p = root / rel
    real, base = p.resolve(), root.resolve()
    if not real.is_relative_to(base):
        raise InputError(
            f"package {root}: file {rel!r} resolves to {real}, outside the package (symlink?)",
            "copy the file into the package instead of linking to it",
        )
    return p


def verify_files(root: Path, manifest: dict[str, Any], rels: list[str]) -> None:
    """Check size and sha256 of each file in ``rels`` against the manifest; refuse a tampered one."""
    files = manifest["files"]
    for rel in rels:
        entry = files.get(rel)
        if entry is None:
            raise InputError(f"package {root}: file {rel!r} is used by a variant but not listed in {MANIFEST}")
        p = resolve_inside(root, rel)
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
