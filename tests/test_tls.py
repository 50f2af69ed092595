"""Mutual TLS between real peer processes, and the `net certs` command that makes the certificates."""
import concurrent.futures
import os
import stat
import subprocess
import sys
import time

import basic
import pytest
from support import ROOT, peer_env

import net
from net.calls import client
from net.cli import certs

KEY = "correct horse battery staple 42"


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    directory = tmp_path_factory.mktemp("team")
    certs.create_ca(directory)
    for name in ("server", "caller"):
        certs.create_peer(directory, name)
    rogue = tmp_path_factory.mktemp("rogue")        # a CA the team never trusted
    certs.create_ca(rogue)
    certs.create_peer(rogue, "mallory")
    return directory, rogue


def tls_env(directory, name):
    return {"NET_TLS_CERT": str(directory / f"{name}.pem"), "NET_TLS_KEY": str(directory / f"{name}.key"),
            "NET_TLS_CA": str(directory / "ca.pem")}


@pytest.fixture
def as_tls(monkeypatch):
    """Make the test process a TLS caller with the given certificate."""
    def use(directory, name, ca=None):
        env = tls_env(directory, name)
        monkeypatch.setattr(net, "TLS_CERT", env["NET_TLS_CERT"])
        monkeypatch.setattr(net, "TLS_KEY", env["NET_TLS_KEY"])
        monkeypatch.setattr(net, "TLS_CA", str(ca or env["NET_TLS_CA"]))

    return use


@pytest.fixture
def tls_peer(spawn, team):
    return spawn("basic", env=peer_env(NET_HANDSHAKE_TIMEOUT="2", **tls_env(team[0], "server")))


def test_tls_peers_call_each_other(tls_peer, team, as_tls):
    as_tls(team[0], "caller")
    assert basic.add(1, 2, peer=tls_peer.id) == 3
    [connection] = [c for c in client.POOL.connections() if c.port == tls_peer.port]
    assert connection.framed.sock.ssl.version() in ("TLSv1.2", "TLSv1.3")


def test_large_messages_both_ways_from_many_threads_at_once(tls_peer, team, as_tls):
    """Reads and writes share one TLS session: this would corrupt or deadlock without the channel lock."""
    as_tls(team[0], "caller")
    blob = os.urandom(2 * 1024 * 1024)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: basic.echo(blob + bytes([i]), peer=tls_peer.id), range(12)))
    assert all(result == blob + bytes([i]) for i, result in enumerate(results))


def test_plain_caller_is_refused_by_a_tls_peer(tls_peer):
    started = time.monotonic()
    with pytest.raises(net.AuthError, match="uses mutual TLS but this process uses no security"):
        basic.add(1, 2, peer=tls_peer.id)
    assert time.monotonic() - started < 5


def test_tls_caller_refuses_a_plain_peer(spawn, team, as_tls):
    plain = spawn("basic")
    as_tls(team[0], "caller")
    with pytest.raises(net.AuthError, match="no security"):
        basic.add(1, 2, peer=plain.id)


def test_certificate_from_another_ca_is_refused_both_ways(tls_peer, team, as_tls):
    directory, rogue = team
    as_tls(rogue, "mallory")                            # mallory's own CA trusts mallory only
    started = time.monotonic()
    with pytest.raises(net.AuthError, match="TLS"):
        basic.add(1, 2, peer=tls_peer.id)
    as_tls(rogue, "mallory", ca=directory / "ca.pem")   # mallory trusts the team, the team not her
    with pytest.raises(net.AuthError):
        basic.add(1, 2, peer=tls_peer.id)
    assert time.monotonic() - started < 10
    as_tls(directory, "caller")
    assert basic.add(2, 2, peer=tls_peer.id) == 4      # the peer still serves the team


def test_tls_and_shared_key_together(spawn, team, as_tls, monkeypatch):
    both = spawn("basic", env=peer_env(NET_SECRET=KEY, **tls_env(team[0], "server")))
    as_tls(team[0], "caller")
    with pytest.raises(net.AuthError, match="mutual TLS \\+ a shared key"):
        basic.add(1, 2, peer=both.id)
    monkeypatch.setattr(net, "SECRET", KEY)
    assert basic.add(3, 4, peer=both.id) == 7


def test_half_configured_tls_fails_at_import():
    env = {k: v for k, v in os.environ.items() if not k.startswith("NET_")}
    env.update(PYTHONPATH=str(ROOT), NET_TLS_CERT="/nowhere/cert.pem")
    result = subprocess.run([sys.executable, "-c", "import net"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode != 0
    assert "ConfigError" in result.stderr and "NET_TLS_KEY" in result.stderr


def test_net_certs_command(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "net", "certs", str(tmp_path / "t"), "alice", "bob"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "NET_TLS_CERT=" in result.stdout
    files = {p.name for p in (tmp_path / "t").iterdir()}
    assert files == {"ca.pem", "ca.key", "alice.pem", "alice.key", "bob.pem", "bob.key"}
    for name in ("ca.key", "alice.key"):
        assert stat.S_IMODE((tmp_path / "t" / name).stat().st_mode) == 0o600
    ca_before = (tmp_path / "t" / "ca.pem").read_bytes()
    from cryptography import x509
    ca = x509.load_pem_x509_certificate((tmp_path / "t" / "ca.pem").read_bytes())
    alice = x509.load_pem_x509_certificate((tmp_path / "t" / "alice.pem").read_bytes())
    alice.verify_directly_issued_by(ca)
    again = subprocess.run([sys.executable, "-m", "net", "certs", str(tmp_path / "t"), "carol"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert "existing CA" in again.stdout                # a second run reuses the team's CA
    assert (tmp_path / "t" / "ca.pem").read_bytes() == ca_before
    assert (tmp_path / "t" / "carol.pem").exists()
