import textwrap

import pytest

from edgelab.errors import FoldingError
from edgelab.folding import fold, fold_plan
from edgelab.model import Host
from edgelab.plan import make_plan
from edgelab.topology import parse_topology


def plan(n_phones=8, cpu=0.5, mem=512, speed=1.0, hosts=""):
    return make_plan(parse_topology(textwrap.dedent(f"""\
        name: tb
        networks: [{{name: wlan, profile: wifi-80211n-2.4ghz}}]
        nodes:
          - {{group: phone, role: phone, count: {n_phones}, resources: {{cpu: {cpu}, memory_mib: {mem}, speed: {speed}}}, networks: [wlan]}}
        {hosts}""")))


HOSTS = [Host("g5k-1", cpu=2, memory_mib=4096), Host("g5k-2", cpu=2, memory_mib=4096)]


def test_spread_balances_and_reports_factor():
    pl = fold(plan(8).nodes, HOSTS, strategy="spread")
    assert [pl.loads[h][2] for h in ("g5k-1", "g5k-2")] == [4, 4]
    assert pl.folding_factor == 4.0
    assert pl.assignment["phone-1"] != pl.assignment["phone-2"]


def test_pack_uses_fewest_hosts():
    pl = fold(plan(4).nodes, HOSTS, strategy="pack")
    assert pl.hosts_used == 1 and pl.folding_factor == 4.0


def test_speed_factor_scales_cpu_need():
    # 8 nodes x 1 core at speed 0.5 = 4 host cores: fits exactly on two 2-core hosts
    pl = fold(plan(8, cpu=1.0, speed=0.5).nodes, HOSTS)
    assert pl.loads["g5k-1"][0] == pytest.approx(2.0)
    with pytest.raises(FoldingError, match="need 4.5 host cores"):
        fold(plan(9, cpu=1.0, speed=0.5).nodes, HOSTS)


def test_memory_bound_names_the_node_that_does_not_fit():
    # total fits, but 3000 MiB nodes cannot share a 4096 MiB host: the third cannot be placed
    hosts = [Host("a", cpu=8, memory_mib=4096), Host("b", cpu=8, memory_mib=4096), Host("c", cpu=8, memory_mib=1000)]
    with pytest.raises(FoldingError, match=r"node 'phone-3' \(needs 0.5 cores, 3000 MiB\) fits on no host"):
        fold(plan(3, mem=3000).nodes, hosts)


def test_max_per_host_caps_folding():
    pl = fold(plan(6).nodes, [Host("a", 8, 65536), Host("b", 8, 65536), Host("c", 8, 65536)], max_per_host=2)
    assert pl.max_per_host == 2 and pl.hosts_used == 3
    with pytest.raises(FoldingError, match="at most 1 per host"):
        fold(plan(6).nodes, HOSTS, max_per_host=1)


def test_overcommit_allows_more_cpu():
    with pytest.raises(FoldingError):
        fold(plan(10).nodes, HOSTS)
    pl = fold(plan(10).nodes, HOSTS, cpu_overcommit=1.5)
    assert pl.hosts_used == 2


def test_no_hosts_and_bad_strategy():
    with pytest.raises(FoldingError, match="no physical hosts"):
        fold(plan(1).nodes, [])
    with pytest.raises(FoldingError, match="unknown folding strategy"):
        fold(plan(1).nodes, HOSTS, strategy="random")


def test_topology_hosts_are_used_by_default():
    p = plan(4, hosts="hosts: [{name: vm1, cpu: 1, memory_mib: 2048}, {name: vm2, cpu: 1, memory_mib: 2048}]")
    pl = fold_plan(p)
    assert set(pl.assignment.values()) == {"vm1", "vm2"}
