"""Remote calls between real OS processes on loopback."""
import concurrent.futures
import threading
import time

# The callee's functions are imported here too so the caller has the same keys.
import basic
import pytest

import net
from net.peer import _Peer


def test_call_by_id_tuple_string_and_entry(spawn):
    p = spawn("basic")
    assert basic.add(1, 2, peer=p.id) == 3
    assert basic.add("a", "b", peer=p.id.decode()) == "ab"
    assert basic.add(2, 3, peer=p.address) == 5
    assert basic.add(4, 5, peer=f"127.0.0.1:{p.port}") == 9
    assert basic.add(1, 1, peer={"host": "127.0.0.1", "port": p.port, "group": "None"}) == 2
    assert basic.add(1, 1) == 2                 # no peer=: a plain local call


def test_the_call_runs_in_the_other_process(spawn):
    p = spawn("basic")
    remote = basic.whoami(peer=p.id)
    assert remote["pid"] == p.pid
    assert remote["port"] == p.port


def test_values_survive_the_trip(spawn):
    p = spawn("basic")
    value = {"none": None, "bool": True, "int": -2**63, "big": 2**64 - 1, "float": 1.5,
             "text": "héllo ✓ 日本", "bytes": b"\x00\xff" * 10, "list": [1, [2, [3]]], "empty": {}}
    assert basic.echo(value, peer=p.id) == value
    assert net.pass_through(1, "two", b"3", k=[4], peer=p.id) == [[1, "two", b"3"], {"k": [4]}]


def test_large_values_up_to_the_limit(spawn):
    p = spawn("basic")
    blob = bytes(range(256)) * (32 * 1024)          # 8 MiB
    assert basic.echo(blob, peer=p.id) == blob


def test_oversized_message_fails_on_the_sender(spawn, monkeypatch):
    p = spawn("basic", env=None)
    basic.echo(1, peer=p.id)                        # connection exists with the default limit
    from net.calls import client
    client.POOL.close_all()
    monkeypatch.setattr(net, "MAX_MESSAGE", 1000)
    with pytest.raises(net.MessageTooLarge, match="NET_MAX_MESSAGE"):
        basic.echo(b"x" * 5000, peer=p.id)
    monkeypatch.undo()
    client.POOL.close_all()
    assert basic.echo("still fine", peer=p.id) == "still fine"


def test_tag_reaches_the_renamed_function(spawn):
    p = spawn("basic")

    # "App version 1": a differently named function carrying the same tag.
    @net.connect("MyTaggedFunction")
    def tagged_v1(value):
        return {"version": 1, "value": value}

    assert tagged_v1("x", peer=p.id) == {"version": 2, "value": "x"}
    assert tagged_v1("x") == {"version": 1, "value": "x"}


def test_remote_exception_carries_type_message_and_traceback(spawn):
    p = spawn("basic")
    with pytest.raises(net.RemoteError) as caught:
        basic.fail("it broke", peer=p.id)
    error = caught.value
    assert error.remote_type == "ValueError"
    assert error.remote_message == "it broke"
    assert "raise ValueError(message)" in error.remote_traceback
    assert error.peer == f"127.0.0.1:{p.port}"
    assert "basic.fail" in str(error)


def test_unsendable_result_is_a_remote_error_not_a_hang(spawn):
    p = spawn("basic")
    with pytest.raises(net.RemoteError, match="cannot be sent"):
        basic.unsendable(peer=p.id)
    assert basic.add(1, 1, peer=p.id) == 2


def test_unknown_connection_raises_invalid_connection_naming_both_sides(spawn):
    p = spawn("basic")

    @net.connect("NobodyOffersThis")
    def missing():
        return None

    with pytest.raises(net.InvalidConnection) as caught:
        missing(peer=p.id)
    assert caught.value.connection == "NobodyOffersThis"
    assert "basic.add" in caught.value.offered
    assert "NobodyOffersThis" in str(caught.value) and "basic.add" in str(caught.value)


def test_null_flag_returns_none_and_custom_flags_run_on_the_caller(spawn):
    p = spawn("basic")
    assert basic.nothing(peer=p.id) is None
    assert net.null(peer=p.id) is None
    seen = []

    @net.flag("CUSTOM_FLAG")
    def on_custom(connection, peer):
        seen.append((connection, peer))
        return "handled here"

    assert basic.custom_flagged(peer=p.id) == "handled here"
    assert seen == [("basic.custom_flagged", p.id)]


def test_info_returns_the_friendly_id(spawn):
    p = spawn("basic")
    info = net.info(peer=p.id)
    assert info["port"] == p.port and info["host"] == "127.0.0.1" and info["hub"] is False
    assert {"group", "executable", "user"} <= set(info)
    listing = {entry["name"]: entry for entry in net.connections(peer=p.id)}
    assert listing["basic.add"]["signature"] == "(a, b)"


def test_unreachable_peer_raises_peer_unreachable():
    with _Peer(test=True) as peer:
        address = (peer.host, peer.port)
    with pytest.raises(net.PeerUnreachable, match=r"127\.0\.0\.1"):
        basic.add(1, 2, peer=address)


def test_timeout_context_without_stealing_a_keyword(spawn):
    p = spawn("basic")
    started = time.monotonic()
    with net.timeout(0.5):
        with pytest.raises(net.Timeout, match=r"within 0\.5s"):
            basic.slow(3, peer=p.id)
    assert time.monotonic() - started < 2.5
    assert basic.slow(0.01, peer=p.id) == 0.01     # the connection is still usable


def test_slow_call_does_not_delay_other_callers(spawn):
    p = spawn("basic")
    basic.add(0, 0, peer=p.id)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = pool.submit(basic.slow, 2, peer=p.id)
        started = time.monotonic()
        fast = [pool.submit(basic.add, i, 1, peer=p.id) for i in range(20)]
        assert [f.result(timeout=10) for f in fast] == [i + 1 for i in range(20)]
        fast_done = time.monotonic() - started
        assert not slow.done(), "the fast calls must finish while the slow one still runs"
        assert slow.result(timeout=10) == 2
    assert fast_done < 2


def test_many_threads_share_one_connection(spawn):
    p = spawn("basic")
    from net.calls import client
    errors = []

    def worker(n):
        try:
            for i in range(50):
                assert basic.add(n, i, peer=p.id) == n + i
        except Exception as exc:        # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len([c for c in client.POOL.connections() if c.port == p.port]) == 1


def test_peers_call_each_other(spawn):
    a = spawn("basic")
    b = spawn("basic")
    assert basic.call_other(b.id.decode(), "hop", peer=a.id) == "hop"


def test_callee_dying_mid_call_raises_peer_unreachable(spawn):
    p = spawn("basic")
    with pytest.raises(net.PeerUnreachable):
        basic.exit_now(peer=p.id)


def test_restarted_peer_is_reached_again_transparently(spawn):
    from support import peer_env
    env = peer_env()
    first = spawn("basic", env=env)
    assert basic.add(1, 1, peer=first.id) == 2
    first.stop()
    second = spawn("basic", env=env)
    assert second.port == first.port
    assert basic.whoami(peer=second.id)["pid"] == second.pid


def test_submit_and_acall(spawn):
    import asyncio
    p = spawn("basic")
    assert basic.add.submit(2, 2, peer=p.id).result(timeout=10) == 4

    async def many():
        return await asyncio.gather(*(basic.add.acall(i, 1, peer=p.id) for i in range(200)))

    assert asyncio.run(many()) == [i + 1 for i in range(200)]


def test_a_fast_reply_is_not_held_back_by_a_slow_call_read_with_it(spawn):
    """Calls read in one batch (one loop turn sends them in one write) have their replies
    sent together; a slow call in the batch must not hold back the fast ones' replies."""
    import asyncio
    p = spawn("basic")
    basic.add(0, 0, peer=p.id)

    async def fast_then_slow():
        started = time.monotonic()
        with net.timeout(10):           # a held-back reply fails the test instead of hanging it
            fast = asyncio.ensure_future(basic.add.acall(1, 1, peer=p.id))
            slow = asyncio.ensure_future(basic.slow.acall(2, peer=p.id))
        assert await fast == 2
        fast_after = time.monotonic() - started
        assert not slow.done()
        assert await slow == 2
        return fast_after

    assert asyncio.run(fast_then_slow()) < 1.0


class FakeService:
    """A real listening socket that answers a greeting with ``reply`` (or nothing) and keeps quiet."""

    def __init__(self, reply: bytes | None):
        import socket as _socket
        self.listener = _socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.reply = reply
        self.accepted = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.accepted.append(conn)
        if self.reply is not None:
            conn.sendall(self.reply)

    def close(self):
        self.listener.close()
        for conn in self.accepted:
            conn.close()


def test_first_call_to_a_silent_non_net_service_times_out_on_the_greeting(monkeypatch):
    monkeypatch.setattr(net, "CONNECT_TIMEOUT", 0.5)
    monkeypatch.setattr(net, "HEARTBEAT", 2.0)
    service = FakeService(reply=None)
    try:
        started = time.monotonic()
        with pytest.raises(net.Timeout, match="did not greet"):
            basic.add(1, 2, peer=service.address)
        assert time.monotonic() - started < 5
    finally:
        service.close()


def test_first_call_to_a_peer_of_another_protocol_version_says_so():
    from net.wire import frames as wire
    service = FakeService(reply=wire.PREAMBLE.pack(b"NET", 99, 0))
    try:
        with pytest.raises(net.VersionMismatch, match="version 99"):
            basic.add(1, 2, peer=service.address)
    finally:
        service.close()


def test_first_call_to_something_that_is_not_a_net_peer():
    service = FakeService(reply=b"SSH-2.0-OpenSSH_9.2\r\n")
    try:
        with pytest.raises(net.ProtocolError, match="not a net peer"):
            basic.add(1, 2, peer=service.address)
    finally:
        service.close()
