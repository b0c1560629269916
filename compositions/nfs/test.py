# testScript of nfs (then ../dfs-test.py): every server exports its data disk.
import json

nodes = {m.name: m for m in machines}
for s in json.loads('@SERVERS@'):
    nodes[s].wait_for_unit("nfs-server.service")
    nodes[s].succeed("findmnt /srv/edgelab-data && exportfs -v | grep -q /srv/edgelab-data")
