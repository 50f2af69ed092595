"""What an event publisher and its subscribers both rely on, kept apart so neither side imports the other.

Both sides talk through the built-in ``subscription_handler`` connection
(:data:`SUBSCRIPTION_KEY`): a subscriber sends ``["subscribe", request]``
(its lease), a publisher sends ``["deliver", meta, [event, ...]]`` (a batch).
Both name the process they run in with :data:`INSTANCE`, so a restarted
process is never mistaken for its predecessor, and both name a publisher's
route the same way (:func:`address_text`).
"""
from __future__ import annotations

import secrets

from ..wire import ids as identity

INSTANCE = secrets.token_hex(8)     # this process; a restarted process is a new instance
SUBSCRIPTION_KEY = identity.SUBSCRIPTION_KEY
FAILURE_LOG_INTERVAL = 10.0         # seconds between reports of one subscriber's failures or drops
LEASES_UNTIL_EXPIRY = 3             # a publisher drops a lease not renewed for this many of the periods it
                                    # granted; a subscriber renews at least once a granted period


def address_text(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets: how routes and log lines name an address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
