# testScript of orangefs (then ../dfs-test.py): storage formatted, every server up.
import json

nodes = {m.name: m for m in machines}
for s in json.loads('@SERVERS@'):
    nodes[s].wait_for_unit("edgelab-orangefs-format.service")
    nodes[s].wait_for_unit("orangefs-server.service")
    nodes[s].wait_for_open_port(3334)
# The clients' mount units ran at boot, maybe before any server was up: retry them.
for c in json.loads('@CLIENTS@'):
    nodes[c].wait_for_unit("orangefs-client.service")
    nodes[c].wait_until_succeeds("systemctl start 'mnt-edgelab\\x2dfs.mount'", timeout=300)
