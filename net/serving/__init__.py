"""The callee: the accept loop, one inbound link, the function table it dispatches to, the request a
handler runs in, and the callee's side of streams.
"""
