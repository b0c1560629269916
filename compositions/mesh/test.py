# testScript for `nxc driver -t`: packets from one end of the chain reach the
# other end through every relay, and the hop delay adds up.
nodes = {m.name: m for m in machines}
first, last = nodes["@FIRST@"], nodes["@LAST@"]
phones = [m for n, m in sorted(nodes.items()) if n.startswith("phone-")]
assert len(phones) == @PHONES@, [m.name for m in phones]

with subtest("routes from the plan are installed"):
    for m in phones:
        m.wait_for_unit("edgelab-netem.service")
    route = first.succeed("ip route get @LAST_IP@")
    assert "via @SECOND_IP@" in route, route

with subtest("end to end over @PHONES@ - 1 hops"):
    first.wait_until_succeeds("ping -c 3 -W 2 @LAST_IP@", timeout=120)
    hops = first.succeed("traceroute -n -q 1 -w 2 @LAST_IP@").strip().splitlines()[1:]
    assert len(hops) == @PHONES@ - 1, hops

if @BATMAN@:
    with subtest("batman-adv sees its neighbours"):
        first.wait_until_succeeds("batctl n | grep -q ' [0-9]'", timeout=60)
