"""``net demo``: real peers on loopback calling each other, printed as it happens.

The demo starts two worker peers as separate Python processes, calls their
functions from this process, and has one worker call the other. Everything
stays on 127.0.0.1; the workers stop when the demo ends (or after a minute).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import net

WORKER_LIFETIME = 60.0


@net.connect("demo.render")
def render(frame: int) -> dict[str, Any]:
    """Pretend to render one frame; report which process did it."""
    return {"frame": frame, "pixels": frame * 1920 * 1080, "pid": os.getpid(), "port": net.Peer().port}


@net.connect("demo.relay")
def relay(other: str, text: str) -> str:
    """Call another peer from inside a call: peers talk to peers."""
    answer = shout(text, peer=other)
    return f"{socket.gethostname()}:{net.Peer().port} relayed -> {answer}"


@net.connect("demo.shout")
def shout(text: str) -> str:
    return f"{text.upper()}! (from port {net.Peer().port}, pid {os.getpid()})"


def worker() -> None:
    """Body of a demo worker process: serve until stdin closes or the lifetime ends."""
    peer = net.Peer()
    print(f"READY {peer.id.decode()}", flush=True)
    done = threading.Event()

    def watch() -> None:
        while sys.stdin.read(1):
            pass
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    done.wait(WORKER_LIFETIME)
    peer.close()


def _start_worker(port_start: int) -> tuple[subprocess.Popen, bytes]:
    env = dict(os.environ, NET_HOST="127.0.0.1", NET_BIND="127.0.0.1",
               NET_PORT_START=str(port_start), NET_PORT_RANGE="20")
    proc = subprocess.Popen([sys.executable, "-m", "net.demo", "worker"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    if len(line) != 2 or line[0] != "READY":
        proc.kill()
        raise RuntimeError("a demo worker failed to start")
    return proc, line[1].encode()


def run(console: Any = None) -> int:
    from rich.console import Console
    from rich.table import Table
    console = console or Console()
    base = int(os.environ.get("NET_PORT_START", "3010"))
    console.print("[bold]net demo[/bold]: starting two worker peers on 127.0.0.1 ...")
    workers = []
    try:
        for offset in (0, 21):
            workers.append(_start_worker(base + offset))
        ids = [peer_id for _, peer_id in workers]
        table = Table("peer id", "address", "pid")
        for proc, peer_id in workers:
            decoded = net.peer._Peer.decode_id(peer_id)
            table.add_row(peer_id.decode(), f"{decoded['host']}:{decoded['port']}", str(proc.pid))
        console.print(table)

        started = time.perf_counter()
        results = [render(frame, peer=ids[frame % 2]) for frame in range(4)]
        elapsed = time.perf_counter() - started
        for result in results:
            console.print(f"  render({result['frame']}) ran in pid {result['pid']} "
                          f"(port {result['port']}): {result['pixels']:,} pixels")
        console.print(f"  4 remote calls in {elapsed * 1000:.1f} ms")

        console.print(f"  worker 1 -> worker 2: {relay(ids[1].decode(), 'hello', peer=ids[0])}")
        info = net.info(peer=ids[1])
        console.print(f"  net.info(worker 2): group={info['group']} hub={info['hub']} user={info['user']}")
        try:
            net.pass_through(peer=("127.0.0.1", 1))
        except net.PeerUnreachable as exc:
            console.print(f"  calling a dead address raises net.PeerUnreachable: {exc}")
        console.print("[green]demo finished: peers called each other across processes[/green]")
        return 0
    finally:
        for proc, _ in workers:
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        worker()
    else:
        sys.exit(run())
