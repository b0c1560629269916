# Common part of the file-system testScripts (compositions/dfs-common.nix):
# every client mounts, writes its own file, reads every client's file back,
# then runs a small IOR and mdtest. `fs_ready()` comes from the composition's
# own part, which runs first.
import json

clients = [nodes[n] for n in json.loads('@CLIENTS@')]
assert clients, "no client in the composition"

with subtest("every client mounts @MOUNT@"):
    for m in clients:
        m.wait_until_succeeds("touch @MOUNT@/.edgelab-ready-" + m.name, timeout=600)

with subtest("write from every client, read back from every client"):
    for m in clients:
        m.succeed(f"echo written-by-{m.name} > @MOUNT@/check-{m.name} && sync")
    for reader in clients:
        for m in clients:
            got = reader.succeed(f"cat @MOUNT@/check-{m.name}").strip()
            assert got == f"written-by-{m.name}", (reader.name, m.name, got)

with subtest("IOR and mdtest on every client"):
    for m in clients:
        out = m.succeed(f"ior -a POSIX -w -r -e -C -F -t 1m -b 16m -s 1 -o @MOUNT@/ior-{m.name}")
        assert "Max Write" in out and "Max Read" in out, out
        out = m.succeed(f"mdtest -F -C -T -r -n 50 -d @MOUNT@/mdtest-{m.name}")
        assert "File creation" in out, out
