"""Every scenario in examples/ runs as its README says, with real processes on loopback."""
from __future__ import annotations

import subprocess
import sys

import pytest
from cli_support import LIFETIME, Running, serve
from support import ROOT, peer_env

EXAMPLES = ROOT / "examples"


def run_script(path, env, cwd=None, timeout=60):
    return subprocess.run([sys.executable, str(path)], env=env, cwd=str(cwd or ROOT), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_readme_names_every_example():
    readme = (EXAMPLES / "README.md").read_text()
    for command in ("net serve examples/simple/worker.py", "examples/simple/caller.py",
                    "examples/hub/hub.py", "examples/hub/subscriber.py",
                    "net serve app.module", "python3 main.py"):
        assert command in readme


def test_simple_connection_between_two_peers():
    env = peer_env()
    worker, _, _ = serve("examples/simple/worker.py", env=env)
    with worker:
        result = run_script(EXAMPLES / "simple" / "caller.py", env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("local call:  rendered frame 12 in process ")
    assert lines[1] == f"remote call: rendered frame 12 in process {worker.proc.pid}"
    assert lines[2] == f"worker info: {worker.proc.pid}"


def test_tagged_connection_shared_by_two_app_versions():
    env = peer_env()
    v2 = Running.net("serve", "app.module", "--duration", LIFETIME, env=env, cwd=EXAMPLES / "tagged" / "v2")
    with v2:
        v2.wait_for("net: serving ")
        result = run_script(EXAMPLES / "tagged" / "v1" / "main.py", env, cwd=EXAMPLES / "tagged" / "v1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"tagged:   v2 handled frame 7 in process {v2.proc.pid}"
    assert lines[1].startswith("untagged: InvalidConnection - ") and "'app.module.report'" in lines[1]
    assert "app.module.report2" in lines[1]


def test_hub_with_subscribers():
    if not hasattr(__import__("net"), "subscribe"):
        pytest.skip("events (net.subscribe) are not in this build")
    env = peer_env()
    hub = Running([sys.executable, str(EXAMPLES / "hub" / "hub.py"), "--subscribers", "2", "--count", "3",
                   "--interval", "0.05"], env=env)
    with hub:
        hub.wait_for("waiting for 2 subscriber(s)")
        subscribers = [Running([sys.executable, str(EXAMPLES / "hub" / "subscriber.py"), "--count", "3"], env=env)
                       for _ in range(2)]
        outputs = []
        for subscriber in subscribers:
            with subscriber:
                code, out, err = subscriber.finish(60)
                assert code == 0, err
                outputs.append(out)
        code, hub_out, hub_err = hub.finish(60)
    assert code == 0, hub_err
    assert "published headline 3 to 2 subscriber(s)" in hub_out
    for out in outputs:
        got = [line.split(" got ")[1] for line in out.splitlines() if " got " in line]
        assert got == [f"#{n}: headline {n}: peers found each other" for n in (1, 2, 3)]
