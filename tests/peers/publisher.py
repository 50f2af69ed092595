"""A publisher for the CLI tests: `fire(n)` triggers the `tick` event n times."""
import net


@net.event("tick")
def tick(number, label="tick"):
    return [number], {"label": label}


@net.connect()
def fire(count):
    """Trigger `tick` count times (returns at once; deliveries run in the background)."""
    for number in range(1, count + 1):
        tick(number)
    return count
