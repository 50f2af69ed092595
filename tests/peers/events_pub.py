"""A publisher for the event tests: other processes make it trigger events."""
import time

import net

_hooks = {}


def hook(name):
    if name not in _hooks:
        @net.event(name)
        def trigger(*args, **kwargs):
            return args, kwargs
        _hooks[name] = trigger
    return _hooks[name]


@net.connect()
def fire(name, values):
    """Trigger event ``name`` once per value; returns the slowest trigger call in seconds."""
    trigger = hook(name)
    slowest = 0.0
    for value in values:
        started = time.perf_counter()
        trigger(value)
        slowest = max(slowest, time.perf_counter() - started)
    return slowest
