"""Version 1 of the app: `function` is tagged, `report` is not."""
import net

net.GROUP = "app-v1"


@net.connect("MyTaggedFunction")
def function(value):
    return f"v1 handled {value}"


@net.connect()
def report(value):                  # keyed by its path: app.module.report
    return f"v1 report {value}"
