"""Every helper process a test starts stops by itself after NET_TEST_LIFETIME seconds."""
import os
import threading


def limit() -> float:
    return float(os.environ.get("NET_TEST_LIFETIME", "120"))


def exit_after_lifetime() -> None:
    """End this process after NET_TEST_LIFETIME seconds, whatever it is doing then."""
    timer = threading.Timer(limit(), os._exit, args=(0,))
    timer.daemon = True
    timer.start()
