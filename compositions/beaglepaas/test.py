# testScript for `nxc driver -t`: a function call round-trips through the
# orchestrator to a worker, and the power meter answers like a Tasmota plug.
import json

nodes = {m.name: m for m in machines}
orch = nodes["orchestrator-1"]
power = nodes["power-1"]
workers = [m for n, m in sorted(nodes.items()) if n.startswith("worker-")]
assert len(workers) == @WORKERS@, [m.name for m in workers]

with subtest("nothing holds the experiment's ports at boot"):
    for m in [orch, power] + workers:
        m.wait_for_unit("edgelab-netem.service")
    orch.fail("ss -Htln | grep -q ':7000 '")
    power.fail("ss -Htln | grep -q ':80 '")

with subtest("services are up"):
    orch.succeed("systemctl start edgelab-beaglepaas-orchestrator.service")
    power.succeed("systemctl start edgelab-power-meter.service")
    for w in workers:
        w.succeed("systemctl start edgelab-beaglepaas-worker.service")
    orch.wait_for_unit("edgelab-beaglepaas-orchestrator.service")
    orch.wait_until_succeeds("ss -Htln | grep -q '@ORCH@:7000 '", timeout=120)
    power.wait_for_unit("edgelab-power-meter.service")
    power.wait_until_succeeds("ss -Htln | grep -q '@POWER@:80 '", timeout=120)
    for w in workers:
        w.wait_for_unit("edgelab-beaglepaas-worker.service")

with subtest("the power meter answers /cm?cmnd=Status%208"):
    status = json.loads(orch.wait_until_succeeds("curl -sf 'http://@POWER@/cm?cmnd=Status%208'", timeout=120))
    energy = status["StatusSNS"]["ENERGY"]
    assert abs(energy["Power"] - 2.3) < 0.5, energy

with subtest("a function call round-trips through the orchestrator"):
    out = orch.wait_until_succeeds(
        "python3 -m edgelab.services.beaglepaas submit --connect @ORCH@:7000 "
        "--function float_operations --args '{\"n\": 1000}' --count @WORKERS@ --wait 120",
        timeout=300,
    )
    records = json.loads(out)
    assert len(records) == @WORKERS@, records
    assert all(r["status"] == "done" for r in records), records
    assert all(r["result"]["n"] == 1000 for r in records), records
    print("ran on", sorted({r["worker"] for r in records}))
