"""The `net` command, driven through its real entry point in subprocesses on loopback."""
from __future__ import annotations

import json
import signal

import pytest
import tomllib
from cli_support import Running, net_command, serve
from support import ROOT, peer_env

BASIC = "tests/peers/basic.py"


@pytest.fixture(scope="module")
def basic_peer():
    running, peer_id, port = serve(BASIC)
    with running:
        yield running, peer_id, port


def one_line_error(result, code=1):
    """The failure is one clear line on stderr: no traceback, the promised exit code."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("net: error: ")
    return lines[0]


def test_console_script_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["net"] == "net.cli:main"


def test_help_lists_every_subcommand_and_each_has_help(capsys):
    result = net_command("--help")
    assert result.returncode == 0
    for command in ("serve", "peers", "info", "call", "listen", "ping", "demo"):
        assert command in result.stdout
    sub = net_command("call", "--help")
    assert sub.returncode == 0 and "usage: net call" in sub.stdout and "--kw" in sub.stdout
    from net.cli.main import main  # the same entry point, in-process: spares 6 interpreters
    for command in ("serve", "peers", "info", "listen", "ping", "demo"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        assert f"usage: net {command}" in capsys.readouterr().out


def test_bad_command_line_exits_2():
    assert net_command().returncode == 2
    assert net_command("frobnicate").returncode == 2
    assert net_command("ping", "127.0.0.1:1", "--count", "0").returncode == 2


def test_malformed_setting_is_one_line_for_the_command_not_a_traceback():
    result = net_command("peers", "--on-host", env=peer_env(NET_PORT_START="abc"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == ("net: NET_PORT_START='abc' is not valid: "
                                      "invalid literal for int() with base 10: 'abc'")


def test_serve_runs_until_sigint_and_stops_cleanly():
    running, _peer_id, port = serve(BASIC)
    with running:
        assert "basic.add" in "\n".join(running.lines) or running.wait_for("basic.add")
        called = net_command("call", f"127.0.0.1:{port}", "basic.add", "2", "3")
        assert called.stdout.strip() == "5"
        code, out, err = running.interrupt(signal.SIGINT)
    assert code == 0, err
    assert "stopped (SIGINT)" in out
    assert "Traceback" not in err
    assert net_command("ping", f"127.0.0.1:{port}", "-c", "1").returncode == 1   # the port is free


def test_serve_stops_on_sigterm_and_honours_overrides():
    env = peer_env()
    port_start = int(env["NET_PORT_START"]) + 7
    running, peer_id, port = serve(BASIC, env=env, extra=("--group", "render-farm", "--hub",
                                                          "--port-start", str(port_start), "--json"))
    with running:
        info = json.loads(net_command("info", peer_id, "--json").stdout)
        assert info["info"]["group"] == "render-farm" and info["info"]["hub"] is True
        assert port == port_start
        code, out, _ = running.interrupt(signal.SIGTERM)
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1]) == {"stopped": "SIGTERM"}


def test_call_arguments_are_json_literals_or_plain_words(basic_peer):
    _, peer_id, port = basic_peer
    address = f"127.0.0.1:{port}"
    assert net_command("call", address, "basic.add", "1", "2.5").stdout.strip() == "3.5"
    assert net_command("call", address, "basic.add", "hello", " world").stdout.strip() == "hello world"
    result = net_command("call", peer_id, "net.pass_through", "[1, 2]", '{"a": null}', "true", "word",
                         "--kw", "k=[3]", "--kw", "name=bob", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [[[1, 2], {"a": None}, True, "word"], {"k": [3], "name": "bob"}]


def test_call_reaches_tags_and_unique_short_names(basic_peer):
    _, peer_id, _ = basic_peer
    result = net_command("call", peer_id, "MyTaggedFunction", "7", "--json")
    assert json.loads(result.stdout) == {"version": 2, "value": 7}
    assert net_command("call", peer_id, "echo", '"x y"').stdout.strip() == "x y"
    assert json.loads(net_command("call", peer_id, "nothing", "--json").stdout) is None


def test_remote_error_prints_error_and_remote_traceback(basic_peer):
    _, peer_id, _ = basic_peer
    result = net_command("call", peer_id, "basic.fail", "boom")
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith("net: error: ") and "ValueError: boom" in first and "basic.fail" in first
    assert "Remote traceback:" in result.stderr and "raise ValueError(message)" in result.stderr


def test_unknown_connection_is_one_line_listing_what_is_offered(basic_peer):
    _, peer_id, _ = basic_peer
    line = one_line_error(net_command("call", peer_id, "no_such_thing"))
    assert "unknown connection 'no_such_thing'" in line and "basic.add" in line


def test_malformed_json_argument_is_a_usage_error(basic_peer):
    _, peer_id, _ = basic_peer
    line = one_line_error(net_command("call", peer_id, "basic.echo", "[1, 2"), code=2)
    assert "not valid JSON" in line and "[1, 2" in line
    line = one_line_error(net_command("call", peer_id, "basic.echo", "--kw", "x={oops"), code=2)
    assert "not valid JSON" in line


def test_unreachable_and_unknown_peers_are_one_line_errors():
    free = peer_env()["NET_PORT_START"]     # a fresh block nobody serves on
    line = one_line_error(net_command("call", f"127.0.0.1:{free}", "basic.echo", "1"))
    assert "unreachable" in line and f"127.0.0.1:{free}" in line
    line = one_line_error(net_command("info", "zz-no-such-peer"))
    assert "no peer" in line and "zz-no-such-peer" in line


def test_failing_user_module_shows_the_users_error(tmp_path):
    broken = tmp_path / "broken_handlers.py"
    broken.write_text("import net\n\n\n@net.connect()\ndef f():\n    pass\n\n"
                      "raise RuntimeError('my config is missing')\n")
    line = one_line_error(net_command("serve", str(broken), "--duration", "5"))
    assert "RuntimeError: my config is missing" in line and "broken_handlers.py:8" in line
    typo = tmp_path / "typo_handlers.py"
    typo.write_text("def f(:\n    pass\n")
    line = one_line_error(net_command("serve", str(typo), "--duration", "5"))
    assert "SyntaxError" in line and "typo_handlers.py:1" in line
    line = one_line_error(net_command("serve", "no_such_module_anywhere", "--duration", "5"))
    assert "ModuleNotFoundError" in line and "no_such_module_anywhere" in line


def test_info_shows_connections_with_signatures_docs_and_flags(basic_peer):
    _, peer_id, port = basic_peer
    info = json.loads(net_command("info", f"127.0.0.1:{port}", "--json").stdout)
    assert info["id"] == peer_id
    assert info["info"]["port"] == port
    by_name = {entry["name"]: entry for entry in info["connections"]}
    assert by_name["basic.add"]["signature"] == "(a, b)"
    assert by_name["MyTaggedFunction"]["doc"].startswith("Renamed in 'version 2'")
    assert {"NULL", "INVALID_CONNECTION"} <= {flag["name"] for flag in info["flags"]}
    assert info["subscriptions"] == []
    table = net_command("info", peer_id)
    assert table.returncode == 0
    assert "basic.call_other" in table.stdout and "(other, value)" in table.stdout


def test_ping_reports_round_trips(basic_peer):
    _, peer_id, port = basic_peer
    result = net_command("ping", peer_id, "-c", "3", "-i", "0.05", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sent"] == 3 and summary["received"] == 3 and summary["loss"] == 0
    assert all(t > 0 for t in summary["times_ms"])
    human = net_command("ping", f"127.0.0.1:{port}", "-c", "2", "-i", "0.05")
    assert human.stdout.count("reply from") == 2 and "rtt min/avg/max" in human.stdout


def test_peers_on_host_lists_served_peers_and_resolves_prefixes():
    env = peer_env()
    first, first_id, first_port = serve(BASIC, env=env, extra=("--group", "alpha"))
    with first:
        second, second_id, second_port = serve(BASIC, env=env, extra=("--group", "beta", "--hub"))
        with second:
            listed = net_command("peers", "--on-host", "--json", env=env)
            assert listed.returncode == 0, listed.stderr
            found = json.loads(listed.stdout)
            assert {row["id"]: (row["port"], row["group"], row["hub"]) for row in found} == {
                first_id: (first_port, "alpha", False), second_id: (second_port, "beta", True)}
            hubs = json.loads(net_command("peers", "--on-host", "--hubs", "--json", env=env).stdout)
            assert [row["id"] for row in hubs] == [second_id]
            alpha = json.loads(net_command("peers", "--on-host", "--group", "alpha", "--json", env=env).stdout)
            assert [row["id"] for row in alpha] == [first_id]
            table = net_command("peers", "--on-host", "--group", "alpha", "--group", "beta", env=env)
            assert "2 peers" in table.stdout and first_id in table.stdout and "beta" in table.stdout

            # PEER as a unique prefix of an id, or of host:port; an ambiguous one is an error
            unique = next(first_id[:n] for n in range(1, len(first_id)) if not second_id.startswith(first_id[:n]))
            info = json.loads(net_command("info", unique, "--json", env=env).stdout)
            assert info["info"]["port"] == first_port
            line = one_line_error(net_command("info", "127.0.0", env=env))
            assert "matches 2 peers" in line and str(first_port) in line and str(second_port) in line
            pinged = net_command("ping", f"127.0.0.1:{second_port}", "-c", "1", env=env)
            assert pinged.returncode == 0


needs_events = pytest.mark.skipif(not hasattr(__import__("net"), "subscribe"),
                                  reason="events (net.subscribe) are not in this build")


@needs_events
def test_listen_prints_events_until_sigint():
    publisher, peer_id, port = serve("tests/peers/publisher.py")
    with publisher:
        with Running.net("listen", f"127.0.0.1:{port}", "tick", "--duration", "120") as listener:
            listening = listener.wait_for("net: listening for tick on ")
            subscriber_id = listening.split(" as ")[1].split()[0]
            summary = json.loads(net_command("info", peer_id, "--json").stdout)
            assert {"event": "tick", "subscribers": [subscriber_id]} in summary["subscriptions"]
            shown = net_command("info", peer_id)
            assert shown.returncode == 0, shown.stderr
            assert subscriber_id in shown.stdout.replace("\n", "") or subscriber_id[:20] in shown.stdout
            fired = net_command("call", peer_id, "fire", "3")
            assert fired.stdout.strip() == "3", fired.stderr
            listener.wait_for("tick(3, label='tick')")
            assert [line.split(" ", 1)[1] for line in listener.lines if "tick(" in line] == [
                "tick(1, label='tick')", "tick(2, label='tick')", "tick(3, label='tick')"]
            code, out, err = listener.interrupt(signal.SIGINT)
        assert code == 0, err
        assert "stopped (SIGINT) after 3 event(s)" in out
        assert "Traceback" not in err


@needs_events
def test_listen_json_exits_after_count():
    publisher, peer_id, _port = serve("tests/peers/publisher.py")
    with publisher:
        with Running.net("listen", peer_id, "tick", "--json", "--count", "2", "--duration", "120") as listener:
            listener.wait_for('"listening"')
            net_command("call", peer_id, "fire", "2")
            code, out, err = listener.finish()
            assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert "listening" in lines[0]
    events = lines[1:]
    assert [(e["args"], e["kwargs"]) for e in events] == [([1], {"label": "tick"}), ([2], {"label": "tick"})]


def test_demo_runs_on_loopback_and_exits_0():
    if not hasattr(__import__("net"), "event"):
        pytest.skip("events (net.event) are not in this build")
    result = net_command("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    for expected in ("net.peers(on_host=True", "render(5) ran in pid", "6 of 6 events delivered",
                     "peer -> peer:", "net.PeerUnreachable", "demo finished"):
        assert expected in result.stdout, result.stdout
    assert "Traceback" not in result.stderr


def test_peers_shows_a_progress_indicator_on_a_terminal():
    """On a terminal (stderr is a pty) a spinner runs while the scan does; stdout keeps the table."""
    import os
    import pty
    import select
    import subprocess
    import sys
    env = peer_env(TERM="xterm", COLUMNS="120")
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "net", "peers", "--on-host"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave, env=env, text=True, cwd=str(ROOT))
        os.close(slave)
        out, _ = proc.communicate(timeout=60)
        terminal = b""
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"looking for peers on this machine" in terminal
    assert "peers on this machine" in out and "looking for" not in out
