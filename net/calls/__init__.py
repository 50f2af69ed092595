"""The caller: the calling forms (call, submit, acall), the pool of outbound links, one outbound link,
who waits for a reply, deadlines, flags, and the caller's side of streams.
"""
