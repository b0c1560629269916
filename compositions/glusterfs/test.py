# testScript of glusterfs (then ../dfs-test.py): every brick in the started volume.
import json

nodes = {m.name: m for m in machines}
servers = json.loads('@SERVERS@')
for s in servers:
    nodes[s].wait_for_unit("glusterd.service")
nodes["server-1"].wait_for_unit("edgelab-glusterfs-volume.service", timeout=900)
info = nodes["server-1"].succeed("gluster --mode=script volume info edgelab")
assert "Status: Started" in info and f"Number of Bricks: {len(servers)}" in info, info
