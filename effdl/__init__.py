"""effdl: take a trained model to a measured, verified, packaged deployment.

``import effdl`` is cheap: it loads no backend, no torch. The public verbs are imported lazily:

- :func:`effdl.load` -- open a packaged model for embedded inference (``effdl.runtime``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from effdl.runtime import Session


def load(path: str, backend: str = "auto", device: str | None = None, threads: int | None = None, **kw: Any) -> Session:
    """Open a package written by ``effdl compress``; see :func:`effdl.runtime.load`."""
    from effdl.runtime import load as _load

    return _load(path, backend=backend, device=device, threads=threads, **kw)


__all__ = ["__version__", "load"]
