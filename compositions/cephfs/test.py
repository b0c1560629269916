# testScript of cephfs (then ../dfs-test.py): monitor quorum, every OSD up and in
# with its own id, the file system active.
nodes = {m.name: m for m in machines}
mon = nodes["mon-1"]
mon.wait_for_unit("edgelab-ceph-bootstrap.service", timeout=600)
for i in range(1, @OSDS@ + 1):
    nodes[f"osd-{i}"].wait_for_unit("edgelab-ceph-osd.service", timeout=900)
    nodes[f"osd-{i}"].wait_for_unit(f"ceph-osd-{i - 1}.service")
mon.wait_until_succeeds("ceph osd stat | grep -q '@OSDS@ osds: @OSDS@ up.*@OSDS@ in'", timeout=300)
mon.wait_until_succeeds("ceph fs status edgelab | grep -q active", timeout=300)
