"""The payload shapes of the frames, built and parsed here only.

An ERROR payload is ``{"type": str, "message": str, "traceback": str}``:
``type`` is the exception's qualified name (``net.MessageTooLarge`` for net's
own errors, ``ValueError`` for a builtin, ``module.Class`` otherwise).
"""
from __future__ import annotations

import traceback as _traceback
from typing import Any

from ..errors import NetError

MESSAGE_TOO_LARGE = "net.MessageTooLarge"       # the receiver refused a message over its limit
PROTOCOL_ERROR = "net.ProtocolError"            # the receiver could not read the message


def error(type_name: str, message: str, traceback: str = "") -> dict[str, str]:
    """An ERROR payload."""
    return {"type": type_name, "message": message, "traceback": traceback}


def short_type_name(exc: BaseException) -> str:
    """``net.Name`` for net's errors, else the bare class name (errors net raises while replying)."""
    return f"net.{type(exc).__name__}" if isinstance(exc, NetError) else type(exc).__name__


def error_from(exc: BaseException) -> dict[str, str]:
    """The ERROR payload for an exception a handler raised, with its traceback."""
    kind = type(exc)
    return error(_raised_name(exc), str(exc),
                 "".join(_traceback.format_exception(kind, exc, exc.__traceback__)))


def _raised_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"
