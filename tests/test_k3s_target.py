"""wifi_scaling --inference k3s: the target is the Service the k3s-phones composition describes."""

import json

import pytest

from edgelab.errors import BackendError
from edgelab.scenarios.app import parse_k3s_services


def test_the_service_description_gives_port_path_and_network():
    # the shape compositions/k3s-phones/composition.nix writes (builtins.toJSON serviceInfo)
    text = json.dumps({"edgelab-phone": {"type": "LoadBalancer", "port": 8081, "network": "wlan",
                                         "path": "/detect", "health": "/healthz"}})
    assert parse_k3s_services(text, "server-1") == (8081, "/detect", "wlan")


@pytest.mark.parametrize("text, what", [
    ("{}", "KeyError"),
    ("not json", "JSONDecodeError"),
    (json.dumps({"edgelab-phone": {"port": "http"}}), "ValueError"),
    (json.dumps({"edgelab-phone": {"port": 70000, "path": "/detect"}}), "port 70000"),
    (json.dumps({"edgelab-phone": {"port": 8081, "path": "detect"}}), "path 'detect'"),
])
def test_a_bad_description_is_a_clear_error_naming_the_node(text, what):
    with pytest.raises(BackendError, match=f"server-1:/etc/edgelab/k3s-services.json.*{what}"):
        parse_k3s_services(text, "server-1")

