import pytest

from edgelab.plan import hop_count, make_plan
from edgelab.scenario_topologies import app_topology, faas_topology, folding_topology


@pytest.mark.parametrize("kind", ["wifi", "ethernet", "usb", "hybrid", "batman-mesh"])
def test_every_kind_plans(kind):
    p = make_plan(app_topology(kind, 4))
    assert len(p.nodes_of(group="phone")) == 4
    assert p.networks[0].kind == kind


def test_mesh_hops_put_the_first_phone_that_many_hops_away():
    for hops in (1, 2, 3, 5):
        p = make_plan(app_topology("batman-mesh", 1, hops=hops))
        assert hop_count(p, "net", "server-1", "phone-1") == hops


def test_hybrid_splits_phones():
    p = make_plan(app_topology("hybrid", 4))
    assert [len(s.stations) for s in p.networks[0].segments] == [2, 2]


def test_faas_and_folding_topologies():
    p = make_plan(faas_topology(3))
    assert [n.role for n in p.nodes] == ["beaglepaas-orchestrator"] + ["beaglepaas-worker"] * 3 + ["power-meter"]
    assert len(make_plan(folding_topology(6)).nodes) == 7
    with pytest.raises(ValueError):
        app_topology("carrier-pigeon", 1)
