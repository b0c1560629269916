# testScript for `nxc driver -t` (and the NixOS test driver): the cluster
# really works, over the emulated Wi-Fi.
import json

nodes = {m.name: m for m in machines}
server = nodes["@SERVER@"]
phones = sorted((m for n, m in nodes.items() if n.startswith("phone-")), key=lambda m: m.name)
assert len(phones) == @PHONES@, f"expected @PHONES@ phones, got {[m.name for m in phones]}"

with subtest("links are emulated as planned"):
    for m in [server] + phones:
        m.wait_for_unit("edgelab-netem.service")
    qdiscs = phones[0].succeed("tc qdisc show")
    assert "netem" in qdiscs, qdiscs

with subtest("every k3s node is Ready"):
    server.wait_for_unit("k3s.service")
    server.wait_until_succeeds(
        "k3s kubectl get nodes -o json | "
        "jq -e '[.items[] | select(.status.conditions[] | select(.type==\"Ready\" and .status==\"True\"))] | length == @PHONES@ + 1'",
        timeout=900,
    )
    print(server.succeed("k3s kubectl get nodes -o wide"))

with subtest("a LoadBalancer Service gets an address (ServiceLB, multiport match)"):
    # edgelab-echo:v1 is imported from the agents' images directory (no registry).
    server.succeed("k3s kubectl create deployment echo --image=edgelab-echo:v1 --port=8080")
    server.succeed("k3s kubectl expose deployment echo --type=LoadBalancer --port=8080")
    server.wait_until_succeeds(
        "k3s kubectl get svc echo -o json | jq -e '.status.loadBalancer.ingress[0].ip'", timeout=600)
    svc = json.loads(server.succeed("k3s kubectl get svc echo -o json"))
    ip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    server.wait_until_succeeds(f"curl -sf --max-time 5 http://{ip}:8080 | grep -q edgelab", timeout=600)
