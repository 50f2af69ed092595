"""Events between processes: the publisher side, the subscriber side, and what both share.
(The decorators users write, ``@net.event`` and ``@net.subscribe``, are in ``net.api``.)
"""
