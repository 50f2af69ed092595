"""Thread and event-loop helpers both sides use: a bounded worker pool, on-demand background threads,
callbacks handed to an event loop from other threads.
"""
