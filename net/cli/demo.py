"""``net demo``: real peers on loopback finding and calling each other, printed as it happens.

The demo starts three worker peers as separate Python processes (one of them
a hub), finds them with ``net.peers(on_host=True)``, spreads calls over them,
has one worker call another, subscribes to an event the workers fire, and
shows the error a dead address gives. Everything stays on 127.0.0.1, in a
group of its own (so other peers on this machine are left alone); the
workers stop when the demo ends, or after a minute whatever happens.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import net

net.HOST = net.BIND = "127.0.0.1"   # before the first @net.connect starts this process's peer

WORKER_LIFETIME = 60.0
WORKERS = ("renderer-1", "renderer-2", "hub")
PORT_RANGE = 20
EVENT = "demo.frame_done"


@net.event(EVENT)
def frame_done(frame: int, pid: int, port: int | None) -> Any:
    """Fired by a worker after each frame; subscribers get (frame, pid, port)."""
    return [frame, pid, port], {}


@net.connect("demo.render")
def render(frame: int) -> dict[str, Any]:
    """Pretend to render one frame; report which process did it, and tell subscribers."""
    port = net.Peer().port
    frame_done(frame, os.getpid(), port)
    return {"frame": frame, "pixels": frame * 1920 * 1080, "pid": os.getpid(), "port": port}


@net.connect("demo.relay")
def relay(other: str, text: str) -> str:
    """Call another peer from inside a call: peers talk to peers."""
    answer = shout(text, peer=other)
    return f"127.0.0.1:{net.Peer().port} relayed -> {answer}"


@net.connect("demo.shout")
def shout(text: str) -> str:
    """Shout back, saying who shouted."""
    return f"{text.upper()}! (from port {net.Peer().port}, pid {os.getpid()})"


def worker() -> None:
    """Body of a demo worker process: serve until stdin closes or the lifetime ends."""
    peer = net.Peer()
    print(f"READY {peer.id.decode()}", flush=True)
    done = threading.Event()

    def watch() -> None:
        try:
            while sys.stdin.read(1):
                pass
        except (OSError, ValueError):
            pass
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    done.wait(WORKER_LIFETIME)
    peer.close()


def _start_worker(name: str, group: str, port_start: int) -> subprocess.Popen[str]:
    env = dict(os.environ, NET_HOST="127.0.0.1", NET_BIND="127.0.0.1", NET_GROUP=group,
               NET_IS_HUB="1" if name == "hub" else "0",
               NET_PORT_START=str(port_start), NET_PORT_RANGE=str(PORT_RANGE))
    return subprocess.Popen([sys.executable, "-m", "net.cli.demo", "worker"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _ready(proc: subprocess.Popen[str]) -> bytes:
    line = proc.stdout.readline().split() if proc.stdout else []
    if len(line) != 2 or line[0] != "READY":
        raise RuntimeError(f"a demo worker (pid {proc.pid}) failed to start")
    return line[1].encode()


def run(console: Any = None) -> int:
    from rich.console import Console
    from rich.table import Table
    console = console or Console(highlight=False)
    began = time.perf_counter()
    base = int(net.PORT_START)
    group = f"demo-{os.getpid()}"
    net.HOST = net.BIND = "127.0.0.1"           # the demo never listens beyond loopback
    net.PORT_RANGE = PORT_RANGE                 # on_host discovery looks where the workers bind
    console.print(f"[bold]net demo[/bold]: {len(WORKERS)} peers on 127.0.0.1 in group {group}, "
                  f"each its own process")
    workers: list[subprocess.Popen[str]] = []
    try:
        workers = [_start_worker(name, group, base) for name in WORKERS]
        pids = {proc.pid: name for name, proc in zip(WORKERS, workers)}
        for proc in workers:
            _ready(proc)
        console.print(f"1. started workers {', '.join(f'{n} (pid {p})' for p, n in pids.items())}")

        with console.status("2. looking for them with net.peers(on_host=True) ..."):
            found = net.peers(on_host=True, refresh=True, groups=[group])
        entries = found["peers"]
        table = Table("peer id", "address", "group", "hub", "pid", title=f"2. net.peers(on_host=True, "
                      f"groups=['{group}']) found {len(entries)}", title_justify="left")
        for peer_id, entry in entries.items():
            table.add_row(peer_id.decode(), f"{entry['host']}:{entry['port']}", str(entry["group"]),
                          "yes" if entry["hub"] else "", f"{entry.get('pid')} ({pids.get(entry.get('pid'), '?')})")
        console.print(table)
        ids = [peer_id for peer_id in found.ids if not entries[peer_id]["hub"]]
        hubs = net.peers(on_host=True, groups=[group], hubs_only=True)      # from the cache: no rescan
        if len(ids) != len(WORKERS) - 1 or len(hubs["peers"]) != 1:
            console.print(f"[red]expected {len(WORKERS)} workers, found {len(entries)}[/red]")
            return 1

        received: list[tuple[int, int, int]] = []
        all_in = threading.Event()
        frames = range(6)

        def on_frame_done(frame: int, pid: int, port: int) -> None:
            received.append((frame, pid, port))
            if len(received) >= len(frames):
                all_in.set()

        subscription = net.subscribe(EVENT, peers=[entries[i] for i in ids])(on_frame_done)
        console.print(f"3. this process subscribed to {EVENT!r} on both renderers")

        started = time.perf_counter()
        results = [render(frame, peer=ids[frame % len(ids)]) for frame in frames]
        elapsed = time.perf_counter() - started
        for result in results:
            console.print(f"   render({result['frame']}) ran in pid {result['pid']} "
                          f"({pids.get(result['pid'])}, port {result['port']}): {result['pixels']:,} pixels")
        console.print(f"4. {len(results)} remote calls in {elapsed * 1000:.1f} ms")

        all_in.wait(10)
        for frame, pid, _port in sorted(received):
            console.print(f"   event {EVENT}({frame}) arrived from pid {pid} ({pids.get(pid)})")
        console.print(f"5. {len(received)} of {len(frames)} events delivered to this process")
        subscription.unsubscribe()

        console.print(f"6. peer -> peer: {relay(ids[1].decode(), 'hello', peer=ids[0])}")
        hub_id = hubs[0]
        info = net.info(peer=hub_id)
        console.print(f"7. net.info(hub): group={info['group']} hub={info['hub']} user={info['user']} "
                      f"pid={info['pid']}")
        try:
            with net.timeout(2):
                net.pass_through(peer=("127.0.0.1", 1))
        except net.PeerUnreachable as exc:
            console.print(f"8. calling a dead address raises net.PeerUnreachable: {exc}")
        if len(received) != len(frames):
            console.print("[red]some events did not arrive[/red]")
            return 1
        console.print(f"[green]demo finished in {time.perf_counter() - began:.1f}s: peers found, called "
                      f"and notified each other across processes[/green]")
        return 0
    finally:
        running = net.peer.running()
        if running is not None:
            running.close()
        for proc in workers:
            if proc.stdin:
                proc.stdin.close()
        for proc in workers:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        worker()
    else:
        sys.exit(run())
