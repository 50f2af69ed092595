"""The public surface: what ``net`` exports, typed and named as users see it (after httpx's test)."""
from __future__ import annotations

import net
from net import config

SPEC_NAMES = {
    "connect", "flag", "timeout", "cancelled", "Peer", "peer", "peers", "Peers", "event", "subscribe",
    "info", "pass_through", "null", "connections", "subscription_handler",
    "NetError", "ConfigError", "ProtocolError", "VersionMismatch", "FrameTooLarge", "MessageTooLarge",
    "PortsExhausted", "AuthError", "PeerUnreachable", "Timeout", "Cancelled", "RemoteError",
    "InvalidConnection", "UnknownPeer", "UserCodeError", "DiscoveryDisabled", "Connection", "Event",
    "LOGGER",
}


def test_all_names_exactly_the_public_surface_and_every_setting():
    settings = {setting.name for setting in config.SETTINGS}
    assert set(net.__all__) == SPEC_NAMES | settings
    assert len(net.__all__) == len(set(net.__all__))
    for name in net.__all__:
        assert hasattr(net, name), name


def test_exported_classes_and_functions_say_they_are_nets():
    for name in net.__all__:
        member = getattr(net, name)
        if isinstance(member, type) or (callable(member) and hasattr(member, "__code__")):
            assert member.__module__ == "net", name
    assert repr(net.RemoteError) == "<class 'net.RemoteError'>"
    assert issubclass(net.Timeout, net.NetError)


def test_every_setting_is_a_typed_attribute_read_from_one_place(monkeypatch):
    annotations = net.__annotations__
    for setting in config.SETTINGS:
        assert annotations[setting.name] == setting.annotation, setting.name
        assert getattr(net, setting.name) == config.get(setting.name)
        assert setting.applies, f"{setting.env}: say when an assignment takes effect"
    monkeypatch.setattr(net, "TIMEOUT", 7.5)
    assert config.get("TIMEOUT") == 7.5 and net.TIMEOUT == 7.5
    assert "TIMEOUT" not in vars(net)       # one store: net.config.VALUES


def test_peer_is_the_type_of_every_peer_and_the_running_one():
    peer = net.Peer()
    assert isinstance(peer, net.Peer) and net.Peer() is peer
    assert isinstance(net.peer._Peer(launch=False), net.Peer)


def test_package_ships_its_type_marker():
    from pathlib import Path
    assert (Path(net.__file__).parent / "py.typed").is_file()


def test_the_readme_says_when_each_setting_applies():
    from support import ROOT
    readme = (ROOT / "README.md").read_text()
    for setting in config.SETTINGS:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{setting.env}` |")), None)
        assert row is not None, f"README's configuration table has no row for {setting.env}"
        assert row.rstrip().endswith(f"| {setting.applies} |"), setting.env
