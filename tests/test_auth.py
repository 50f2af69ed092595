"""Shared-key authentication: the sans-IO handshake, then real peer processes."""
import socket
import threading

import basic
import pytest
from hypothesis import given, settings, strategies as st
from support import peer_env

import net
from net.calls import client
from net.errors import AuthError
from net.wire import frames as wire, handshake as auth
from net.wire.frames import Kind

KEY = "correct horse battery staple 42"
OTHER = "a completely different key 1234"


def run(server, client_side):
    """Drive both state machines to the end; returns (server error, client error)."""
    outbox, server_error, client_error = server.start(), None, None
    to_client = True
    while outbox:
        replies = []
        for message in outbox:
            machine = client_side if to_client else server
            try:
                replies += machine.receive(message)
            except AuthError as exc:
                if to_client:
                    client_error = exc
                else:
                    server_error = exc
                    if server.farewell:
                        try:
                            client_side.receive(server.farewell)
                        except AuthError as farewell_error:
                            client_error = farewell_error
                return server_error, client_error
        outbox, to_client = replies, not to_client
    return server_error, client_error


def test_same_key_authenticates_both_ways():
    server, client_side = auth.ServerHandshake(KEY.encode()), auth.ClientHandshake(KEY.encode())
    assert run(server, client_side) == (None, None)
    assert server.done and client_side.done


def test_wrong_key_is_refused_and_the_client_is_told_why():
    server, client_side = auth.ServerHandshake(KEY.encode()), auth.ClientHandshake(OTHER.encode())
    server_error, client_error = run(server, client_side)
    assert "NET_SECRET differs" in str(server_error)
    assert "refused this process" in str(client_error) and "wrong shared key" in str(client_error)
    assert not server.done and not client_side.done


def test_a_server_that_cannot_prove_the_key_is_refused_by_the_client():
    # An impostor server: it does not know the key, so it invents a proof.
    client_side = auth.ClientHandshake(KEY.encode())
    [answer] = client_side.receive({"nonce": b"n" * 32})
    assert set(answer) == {"nonce", "proof"}
    with pytest.raises(AuthError, match="could not prove it knows the shared key"):
        client_side.receive({"ok": True, "proof": b"p" * 32})
    assert not client_side.done


def test_replaying_a_captured_client_answer_fails():
    server = auth.ServerHandshake(KEY.encode())
    client_side = auth.ClientHandshake(KEY.encode())
    [challenge] = server.start()
    [captured] = client_side.receive(challenge)
    server.receive(captured)                        # the genuine exchange succeeds
    assert server.done
    replay_target = auth.ServerHandshake(KEY.encode())
    replay_target.start()                           # a fresh nonce
    with pytest.raises(AuthError, match="replayed"):
        replay_target.receive(captured)
    assert not replay_target.done


def test_reflecting_the_servers_own_nonce_fails():
    server = auth.ServerHandshake(KEY.encode())
    [challenge] = server.start()
    forged = auth.proof(KEY.encode(), b"client", challenge["nonce"], challenge["nonce"])
    with pytest.raises(AuthError):
        server.receive({"nonce": challenge["nonce"], "proof": forged})


def test_tls_only_handshake_is_the_servers_ok():
    server, client_side = auth.ServerHandshake(None), auth.ClientHandshake(None)
    assert run(server, client_side) == (None, None)
    assert client_side.done


messages = st.one_of(
    st.none(), st.integers(), st.binary(max_size=40), st.text(max_size=10),
    st.lists(st.binary(max_size=33), max_size=3),
    st.dictionaries(st.sampled_from(["nonce", "proof", "ok", "error", "x"]),
                    st.one_of(st.binary(min_size=30, max_size=34), st.booleans(), st.text(max_size=5),
                              st.none(), st.integers()), max_size=4))


@given(st.lists(messages, max_size=4), st.booleans(), st.booleans())
@settings(max_examples=200, deadline=None)
def test_fuzzed_handshake_messages_only_ever_raise_auth_error(sequence, as_server, keyed):
    secret = KEY.encode() if keyed else None
    machine = auth.ServerHandshake(secret) if as_server else auth.ClientHandshake(secret)
    machine.start()
    for message in sequence:
        try:
            machine.receive(message)
        except AuthError:
            return
    # Random bytes never authenticate a keyed exchange.
    assert not (keyed and machine.done)


# -- real peer processes --------------------------------------------------------------------------
@pytest.fixture
def keyed(spawn):
    return spawn("basic", env=peer_env(NET_SECRET=KEY, NET_HANDSHAKE_TIMEOUT="1"))


def test_peers_with_the_same_key_call_each_other(keyed, monkeypatch):
    monkeypatch.setattr(net, "SECRET", KEY)
    assert basic.add(1, 2, peer=keyed.id) == 3


def test_peer_without_the_key_gets_auth_error_and_no_call_runs(keyed):
    with pytest.raises(net.AuthError, match="uses a shared key but this process uses no security"):
        basic.add(1, 2, peer=keyed.id)


def test_peer_with_a_wrong_key_gets_auth_error(keyed, monkeypatch):
    monkeypatch.setattr(net, "SECRET", OTHER)
    with pytest.raises(net.AuthError, match="wrong shared key"):
        basic.add(1, 2, peer=keyed.id)
    monkeypatch.setattr(net, "SECRET", KEY)
    assert basic.add(2, 2, peer=keyed.id) == 4       # the keyed peer still serves


def test_keyed_caller_refuses_a_plain_peer(spawn, monkeypatch):
    plain = spawn("basic")
    monkeypatch.setattr(net, "SECRET", KEY)
    with pytest.raises(net.AuthError, match="no security"):
        basic.add(1, 2, peer=plain.id)


def greeted(p, modes):
    sock = socket.create_connection(p.address, timeout=5)
    sock.sendall(wire.preamble(modes))
    assert wire.check_preamble(sock.recv(6)) == modes
    return sock


def read_frames(sock, limit=1 << 16):
    """Every frame the peer sends until it closes the connection."""
    decoder, frames = wire.FrameDecoder(limit), []
    sock.settimeout(5)
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not data:
            break
        decoder.feed(data)
        frames += list(decoder.frames())
    return frames


def test_a_call_before_authenticating_is_never_read(keyed):
    sock = greeted(keyed, wire.MODE_KEY)
    sock.sendall(wire.frame_bytes(Kind.CALL, 1, [basic.exit_now.key, [], {}, {}], max_message=1 << 16))
    frames = read_frames(sock)
    assert [f.kind for f in frames] == [Kind.AUTH, Kind.AUTH]    # the challenge, then the refusal
    assert frames[1].payload["ok"] is False
    sock.close()
    assert keyed.proc.poll() is None, "exit_now must not have run"


def test_silence_after_the_preamble_is_dropped_at_the_handshake_timeout(keyed):
    sock = greeted(keyed, wire.MODE_KEY)
    frames = read_frames(sock)          # returns when the peer closes (1 s handshake timeout)
    assert [f.kind for f in frames] == [Kind.AUTH]
    sock.close()


class Recorder:
    """A loopback TCP relay that records what the client sends: an eavesdropper."""

    def __init__(self, target):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target
        self.sent = bytearray()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        inbound, _ = self.listener.accept()
        outbound = socket.create_connection(self.target, timeout=10)

        def pump(src, dst, record):
            try:
                while data := src.recv(65536):
                    if record:
                        self.sent += data
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        threading.Thread(target=pump, args=(outbound, inbound, False), daemon=True).start()
        pump(inbound, outbound, True)
        self.listener.close()


def test_replaying_a_recorded_session_runs_nothing(keyed, monkeypatch):
    monkeypatch.setattr(net, "SECRET", KEY)
    relay = Recorder(keyed.address)
    assert basic.add(20, 22, peer=("127.0.0.1", relay.port)) == 42
    client.POOL.close_all()
    recorded = bytes(relay.sent)
    assert len(recorded) > wire.PREAMBLE_SIZE + 100      # preamble, proof and the call were captured
    sock = socket.create_connection(keyed.address, timeout=5)
    sock.sendall(recorded)                               # the attacker replays it all, byte for byte
    sock.settimeout(5)
    assert wire.check_preamble(sock.recv(6)) == wire.MODE_KEY
    frames = read_frames(sock)
    sock.close()
    assert Kind.RESULT not in [f.kind for f in frames]
    assert frames[-1].kind is Kind.AUTH and frames[-1].payload["ok"] is False
    assert basic.add(1, 1, peer=keyed.id) == 2


def test_discovery_lists_only_peers_that_share_our_key(monkeypatch):
    """net.peers() probes through the normal client path: a peer we cannot authenticate is absent."""
    from support import PeerProcess, port_block
    start = port_block()
    started = [PeerProcess("basic", env=peer_env(port_start=start, **extra))
               for extra in ({}, {"NET_SECRET": KEY}, {"NET_SECRET": OTHER})]
    plain, keyed_peer, _other = started
    try:
        monkeypatch.setattr(net, "PORT_START", start)
        monkeypatch.setattr(net, "PORT_RANGE", 19)
        assert set(net.peers(on_host=True, refresh=True)["peers"]) == {plain.id}
        monkeypatch.setattr(net, "SECRET", KEY)
        client.POOL.close_all()
        assert set(net.peers(on_host=True, refresh=True)["peers"]) == {keyed_peer.id}
    finally:
        for process in started:
            process.stop()


def test_refused_connections_do_not_flood_the_log(caplog):
    import logging

    from net.serving.link import _RefusalLog
    caplog.set_level(logging.WARNING, logger="net")
    refusals = _RefusalLog()
    for i in range(50):
        refusals.report(AuthError(f"refused 10.0.0.{i}: wrong shared key"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "10.0.0.0" in warnings[0].getMessage()
