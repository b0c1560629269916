"""Topologies the experiments build on the fly (pure; validated like user files).

Generating YAML text and parsing it with the normal loader means a generated
topology obeys exactly the same rules, and its text can be stored in results.
"""

from __future__ import annotations

import textwrap

from .model import Topology
from .topology import parse_topology

KIND_PROFILES = {
    "wifi": "wifi-80211n-2.4ghz",
    "ethernet": "gigabit-ethernet",
    "usb": "usb2-tethering",
    "batman-mesh": "batman-hop-80211n",
}


def app_topology_yaml(kind: str, n_phones: int, *, hops: int = 1, name: str = "topo") -> str:
    """One edge server and ``n_phones`` phones on a network of ``kind``.

    For ``batman-mesh`` the server sits at one end of a chain of ``hops`` hops:
    ``hops - 1`` relay phones, then the measured phones all at the far end
    (each one hop beyond the last relay is not possible in a chain, so the
    chain is server, relays..., and the ``n_phones`` phones continue the chain;
    the farthest phone is ``hops + n_phones - 1`` hops away). Keep n_phones=1
    to measure a pure hop-count effect.
    """
    if kind == "batman-mesh":
        relays = max(0, hops - 1)
        groups = [
            "  - {group: server, role: k3s-server, resources: {cpu: 1.0, memory_mib: 512}, networks: [net]}",
        ]
        if relays:
            groups.append(f"  - {{group: relay, role: phone, count: {relays}, resources: {{cpu: 0.25, memory_mib: 256}}, networks: [net]}}")
        groups.append(f"  - {{group: phone, role: phone, count: {n_phones}, resources: {{cpu: 0.25, memory_mib: 256}}, networks: [net]}}")
        return textwrap.dedent(f"""\
            name: {name}
            networks:
              - {{name: net, profile: {KIND_PROFILES[kind]}}}
            nodes:
            """) + "\n".join(groups) + "\n"
    if kind == "hybrid":
        net = ("  - name: net\n    kind: hybrid\n    segments:\n"
               "      - {profile: wifi-80211n-2.4ghz, share: 0.5}\n"
               "      - {profile: gigabit-ethernet, share: 0.5}")
    elif kind in KIND_PROFILES:
        net = f"  - {{name: net, profile: {KIND_PROFILES[kind]}}}"
    else:
        raise ValueError(f"unknown network kind {kind!r}")
    return textwrap.dedent(f"""\
        name: {name}
        networks:
        """) + net + "\n" + textwrap.dedent(f"""\
        nodes:
          - {{group: server, role: k3s-server, resources: {{cpu: 1.0, memory_mib: 512}}, networks: [{{name: net, uplink: true}}]}}
          - {{group: phone, role: phone, count: {n_phones}, resources: {{cpu: 0.25, memory_mib: 256}}, networks: [net]}}
        """)


def app_topology(kind: str, n_phones: int, *, hops: int = 1, name: str = "topo") -> Topology:
    return parse_topology(app_topology_yaml(kind, n_phones, hops=hops, name=name), f"<generated {kind}>")


def faas_topology(n_workers: int, *, name: str = "faas") -> Topology:
    """BeaglePaaS: an orchestrator, ``n_workers`` BeagleBone-class workers and a
    power meter on a Fast Ethernet switch (the BeagleBone Black's port); group
    names are those of compositions/beaglepaas, so nxc maps them. The meter
    node emulates one smart plug per worker; it is infrastructure, not a measured
    device, so it gets a full core (its plugs must sample on time)."""
    return parse_topology(textwrap.dedent(f"""\
        name: {name}
        networks:
          - {{name: lan, profile: fast-ethernet}}
        nodes:
          - {{group: orchestrator, role: beaglepaas-orchestrator, resources: {{cpu: 0.5, memory_mib: 512}}, networks: [lan]}}
          - {{group: worker, role: beaglepaas-worker, count: {n_workers}, resources: {{cpu: 0.25, memory_mib: 256}}, networks: [lan]}}
          - {{group: power, role: power-meter, resources: {{cpu: 1.0, memory_mib: 1024}}, networks: [lan]}}
        """), "<generated faas>")


def folding_topology(n_nodes: int, *, name: str = "fold") -> Topology:
    """``n_nodes`` identical phones and a server on gigabit Ethernet: the folding
    experiment keeps each phone's workload fixed and varies how many share the host.
    The server only drives the load (one generator for every phone); a full core
    keeps its own CPU quota from being what breaks first as phones are added."""
    return parse_topology(textwrap.dedent(f"""\
        name: {name}
        networks:
          - {{name: lan, profile: gigabit-ethernet}}
        nodes:
          - {{group: server, role: k3s-server, resources: {{cpu: 1.0, memory_mib: 512}}, networks: [lan]}}
          - {{group: phone, role: phone, count: {n_nodes}, resources: {{cpu: 0.1, memory_mib: 128}}, networks: [lan]}}
        """), "<generated folding>")
