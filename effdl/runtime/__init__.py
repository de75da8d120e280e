"""Embedded inference: ``effdl.runtime.load(path)`` then ``session.run(...)``, numpy in and out.

Needs only numpy and one inference runtime; torch, onnx, nncf and openvino are imported only when
the chosen variant's backend needs them.
"""

from effdl.runtime.host import host_fingerprint
from effdl.runtime.manifest import PACKAGE_FORMAT, PACKAGE_FORMAT_VERSION, read_manifest
from effdl.runtime.session import Session, load

__all__ = ["PACKAGE_FORMAT", "PACKAGE_FORMAT_VERSION", "Session", "host_fingerprint", "load", "read_manifest"]
