"""Settings from the environment, checked in fresh interpreters (import-time behaviour)."""
import json
import os
import subprocess
import sys

import pytest
from support import ROOT


def import_net(env_overrides, expression="json.dumps(net.config.dump())"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NET_")}
    env.update(env_overrides)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", f"import json, net; print({expression})"],
                          env=env, capture_output=True, text=True, timeout=30)


def test_defaults_match_the_spec():
    result = import_net({})
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["NET_THREAD_LIMIT"] == 5
    assert values["NET_PORT_START"] == 3010
    assert values["NET_PORT_RANGE"] == 5
    assert values["NET_GROUP"] is None
    assert values["NET_IS_HUB"] is False
    assert values["NET_DEV"] is False
    assert values["NET_MAX_MESSAGE"] == 256 * 1024 * 1024
    assert values["NET_BUSY_POLL"] == 100
    assert not values["NET_HOST"].startswith("127."), "must advertise the LAN address, not loopback"


def test_values_are_read_and_exposed_as_attributes():
    result = import_net({"NET_THREAD_LIMIT": "9", "NET_GROUP": "render", "NET_IS_HUB": "yes",
                         "NET_TIMEOUT": "2.5", "NET_HOST": "10.1.2.3"},
                        "[net.THREAD_LIMIT, net.GROUP, net.IS_HUB, net.TIMEOUT, net.HOST]")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[9, 'render', True, 2.5, '10.1.2.3']"


@pytest.mark.parametrize("variable,value", [("NET_PORT_START", "abc"), ("NET_THREAD_LIMIT", "-1"),
                                            ("NET_IS_HUB", "maybe"), ("NET_TIMEOUT", "-3"),
                                            ("NET_BUSY_POLL", "fast"), ("NET_BUSY_POLL", "100000")])
def test_malformed_value_fails_at_import_naming_variable_and_value(variable, value):
    result = import_net({variable: value})
    assert result.returncode != 0
    assert "ConfigError" in result.stderr
    assert variable in result.stderr and repr(value) in result.stderr


def test_dev_turns_on_debug_logging():
    result = import_net({"NET_DEV": "1"}, "logging_level")
    result = import_net({"NET_DEV": "1"}, "__import__('logging').getLogger('net').level")
    assert result.stdout.strip() == "10"


def test_a_misspelt_variable_is_reported_once_with_the_closest_name():
    env = {k: v for k, v in os.environ.items() if not k.startswith("NET_")}
    env.update({"NET_TIMOUT": "5", "NET_HOST": "127.0.0.1", "PYTHONPATH": str(ROOT)})
    code = "import logging; logging.basicConfig(format='%(levelname)s %(message)s'); import net"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "NET_TIMOUT" in line]
    assert lines == ["WARNING net: NET_TIMOUT: no such setting; did you mean NET_TIMEOUT?"]


def test_assigning_a_setting_changes_what_every_reader_sees():
    result = import_net({"NET_HOST": "127.0.0.1"},
                        "[net.config.get('TIMEOUT'), setattr(net, 'TIMEOUT', 4.0), net.config.get('TIMEOUT'), "
                        "net.TIMEOUT, net.config.dump()['NET_TIMEOUT'], 'TIMEOUT' in vars(net)]")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[None, None, 4.0, 4.0, 4.0, False]"


def test_net_dev_assigned_at_run_time_turns_debug_logging_on_and_off():
    result = import_net({"NET_HOST": "127.0.0.1"},
                        "[net.LOGGER.level, setattr(net, 'DEV', True), net.LOGGER.level, setattr(net, 'DEV', False), "
                        "net.LOGGER.level]")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0, None, 10, None, 0]"
