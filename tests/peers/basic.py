"""Handlers used by the core tests."""
import os
import threading
import time

import net


@net.connect()
def add(a, b):
    return a + b


@net.connect("MyTaggedFunction")
def tagged_v2(value):
    """Renamed in 'version 2' of an app; callers reach it through the tag."""
    return {"version": 2, "value": value}


@net.connect()
def echo(value):
    return value


@net.connect()
def slow(seconds):
    time.sleep(seconds)
    return seconds


@net.connect()
def fail(message):
    raise ValueError(message)


@net.connect()
def unsendable():
    return object()


@net.connect()
def nothing():
    return net.Peer().get_flag("NULL")


@net.connect()
def custom_flagged():
    return net.Peer().get_flag("CUSTOM_FLAG")


@net.connect()
def whoami():
    return {"pid": os.getpid(), "port": net.Peer().port, "thread": threading.current_thread().name}


@net.connect()
def call_other(other, value):
    """Peers calling peers: this peer calls `echo` on another peer."""
    return echo(value, peer=other)


@net.connect()
def exit_now():
    os._exit(3)


@net.connect()
def thread_count():
    return threading.active_count()
