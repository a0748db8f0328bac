"""HTTP API and local web page (``ferlab serve``): FastAPI app factory in ``ferlab.serving.app``.

Needs the ``[serve]`` extra (fastapi, uvicorn, python-multipart); importing ``ferlab`` alone never
imports this package.
"""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
