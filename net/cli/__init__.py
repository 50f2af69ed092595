"""The ``net`` command: imports anything, imported by nothing (``net.cli:main`` is its entry point)."""
from .main import main

__all__ = ["main"]
