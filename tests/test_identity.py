"""Ids, registry keys and the Peer's static helpers, exactly as the spec shows them."""
import net
from net.peer import _Peer

SPEC_ID = b"MTkyLjE2OC4yLjI0OjMwMTAgLT4gTm9uZQ=="


def test_generate_and_decode_id_match_the_spec_example():
    assert _Peer.generate_id(3010, "192.168.2.24") == SPEC_ID
    assert _Peer.decode_id(SPEC_ID) == {"group": "None", "host": "192.168.2.24", "port": 3010}
    assert _Peer.decode_id(SPEC_ID.decode()) == _Peer.decode_id(SPEC_ID)


def test_registry_keys_match_the_spec_listing():
    assert set(_Peer.CONNECTIONS) >= {
        b"bmV0LmRlZmF1bHRzLmhhbmRsZXJzLm51bGw=", b"bmV0LmRlZmF1bHRzLmhhbmRsZXJzLmNvbm5lY3Rpb25z",
        b"bmV0LmRlZmF1bHRzLmhhbmRsZXJzLmluZm8=", b"bmV0LmRlZmF1bHRzLmhhbmRsZXJzLnBhc3NfdGhyb3VnaA=="}
    assert set(_Peer.FLAGS) >= {b"SU5WQUxJRF9DT05ORUNUSU9O", b"TlVMTA=="}
    assert _Peer.CONNECTIONS[b"bmV0LmRlZmF1bHRzLmhhbmRsZXJzLmluZm8="].__name__ == "info"


def test_encode_decode_round_trip_json_values():
    value = {"a": [1, 2.5, None, True], "b": "text ✓"}
    encoded = _Peer.encode(value)
    assert isinstance(encoded, str)
    assert _Peer.decode(encoded) == value
    assert _Peer.decode(encoded.encode()) == value


def test_tagged_connection_is_keyed_by_its_tag():
    @net.connect("SomeTag_for_identity_test")
    def anything():
        return 1
    assert _Peer.CONNECTIONS[b"U29tZVRhZ19mb3JfaWRlbnRpdHlfdGVzdA=="] is anything.function
    assert anything() == 1      # without peer= it is a plain local call


def test_peer_identity_attributes():
    with _Peer(test=True, group="g1") as peer:
        assert peer.host == "127.0.0.1"
        assert _Peer.decode_id(peer.id) == {"group": "g1", "host": "127.0.0.1", "port": peer.port}
        assert peer.hub is False
        friendly = peer.friendly_id
        assert {"group", "host", "port", "hub", "executable", "user"} <= set(friendly)
        assert friendly["group"] == "g1" and friendly["port"] == peer.port
        assert peer.get_flag("NULL") == "TlVMTA=="


def test_the_wire_names_the_built_in_keys_the_defaults_register():
    from net.wire import ids
    assert net.info.key == ids.INFO_KEY
    assert net.subscription_handler.key == ids.SUBSCRIPTION_KEY
