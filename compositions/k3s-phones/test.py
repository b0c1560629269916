# testScript for `nxc driver -t` and the NixOS test driver (flake checks):
# the cluster really runs the phone workload, over the emulated Wi-Fi, with
# no registry anywhere.
import json

nodes = {m.name: m for m in machines}
server = nodes["@SERVER@"]
planned_ips = json.loads('@NODE_IPS@')
phones = sorted((m for n, m in nodes.items() if n.startswith("phone-")), key=lambda m: m.name)
agents = sorted((m for n, m in nodes.items() if n != "@SERVER@"), key=lambda m: m.name)
assert len(phones) == @PHONES@, f"expected @PHONES@ phones, got {[m.name for m in phones]}"
assert set(nodes) == set(planned_ips), f"nodes {sorted(nodes)} != plan {sorted(planned_ips)}"

with subtest("links are emulated as planned"):
    for m in [server] + agents:
        m.wait_for_unit("edgelab-netem.service")
    qdiscs = phones[0].succeed("tc qdisc show")
    assert "netem" in qdiscs, qdiscs

with subtest("the kernel has what ServiceLB needs (loaded, not rebuilt)"):
    for m in agents:
        m.succeed("modprobe xt_multiport && grep -q '^xt_multiport ' /proc/modules")

with subtest("every k3s node is Ready with its planned InternalIP"):
    server.wait_for_unit("k3s.service")
    server.wait_until_succeeds(
        "k3s kubectl get nodes -o json | "
        f"jq -e '[.items[] | select(.status.conditions[] | select(.type==\"Ready\" and .status==\"True\"))] | length == {len(nodes)}'",
        timeout=900,
    )
    print(server.succeed("k3s kubectl get nodes -o wide"))
    listed = json.loads(server.succeed("k3s kubectl get nodes -o json"))["items"]
    got = {n["metadata"]["name"]: next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
           for n in listed}
    assert got == planned_ips, f"InternalIPs {got} != plan {planned_ips}"

with subtest("the phone workload runs on every phone, from local images"):
    server.wait_until_succeeds(
        "k3s kubectl rollout status deployment/edgelab-phone --timeout=10s", timeout=900)
    pods = json.loads(server.succeed("k3s kubectl get pods -l app=edgelab-phone -o json"))["items"]
    on = sorted(p["spec"]["nodeName"] for p in pods)
    assert on == sorted(m.name for m in phones), f"workload pods on {on}"

with subtest("the LoadBalancer Service answers /detect through every node"):
    for m in [server] + agents:
        m.wait_for_unit("edgelab-k3s-servicelb-image.service")
    server.wait_until_succeeds(
        "k3s kubectl get svc edgelab-phone -o json | jq -e '.status.loadBalancer.ingress | length > 0'",
        timeout=600)
    server.succeed("python3 -c \"from PIL import Image; Image.new('RGB', (64, 48), (200, 80, 40)).save('/tmp/probe.png')\"")
    for name, ip in sorted(planned_ips.items()):
        server.wait_until_succeeds(f"curl -sf --max-time 5 http://{ip}:@PORT@/healthz", timeout=300)
        out = json.loads(server.succeed(
            f"curl -sf --max-time 30 --data-binary @/tmp/probe.png 'http://{ip}:@PORT@/detect?mode=gray'"))
        assert "compute_ms" in out, (name, out)
        print(name, "->", out)
