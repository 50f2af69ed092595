"""Import the user's code for ``net serve``: module names, ``.py`` files and package folders.

Importing is what registers the user's ``@net.connect``/``@net.event``/
``@net.subscribe`` functions. A file is imported under its own stem (not
``__main__``) so its untagged connections get the same keys as in a caller
that imports the module by name.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from types import ModuleType

from ..errors import UserCodeError


def load(target: str) -> ModuleType:
    """Import ``target`` (``pkg.module``, ``path/to/file.py`` or ``path/to/package``)."""
    path = os.path.abspath(target)
    try:
        if target.endswith(".py") or os.sep in target or (os.altsep and os.altsep in target) \
                or os.path.isdir(path):
            return _load_path(target, path)
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())     # like `python -m`: the current folder is importable
        return importlib.import_module(target)
    except UserCodeError:
        raise
    except (Exception, SystemExit) as exc:
        raise UserCodeError(f"cannot import {target}: {describe(exc)}") from exc


def _load_path(target: str, path: str) -> ModuleType:
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "__init__.py")):
            raise UserCodeError(f"cannot import {target}: a folder without __init__.py")
        folder, name = os.path.split(path.rstrip(os.sep))
    else:
        if not os.path.exists(path):
            raise UserCodeError(f"cannot import {target}: no such file")
        folder, filename = os.path.split(path)
        name = os.path.splitext(filename)[0]
    if folder not in sys.path:
        sys.path.insert(0, folder)      # like `python file.py`: siblings are importable
    existing = sys.modules.get(name)
    if existing is not None and os.path.abspath(getattr(existing, "__file__", "") or "").startswith(path):
        return existing
    if os.path.isdir(path):
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserCodeError(f"cannot import {target}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def describe(exc: BaseException) -> str:
    """One line: the user's exception and the place in the user's code that raised it."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{type(exc).__name__}: {exc.msg} ({exc.filename}:{exc.lineno})"
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if "importlib" not in frame.filename and not frame.filename.endswith(os.path.join("net", "loader.py"))]
    if frames:
        last = frames[-1]
        text += f" ({last.filename}:{last.lineno})"
    return text
