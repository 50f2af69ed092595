"""Version 2 of the app: `function` was renamed `function2` (same tag), `report` became `report2`."""
import os

import net

net.GROUP = "app-v2"


@net.connect("MyTaggedFunction")
def function2(value):
    return f"v2 handled {value} in process {os.getpid()}"


@net.connect()
def report2(value):                 # keyed by its path: app.module.report2 (the old key is gone)
    return f"v2 report {value}"
