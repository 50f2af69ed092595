"""net's built-in connections and flags (module paths match the spec's registry keys)."""
from . import flags, handlers, introspection  # noqa: F401  (importing registers them)
