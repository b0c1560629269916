"""The I/O workload of the file-system folding experiment, as command lines and parsers.

One workload, two tools: ``fio`` where edgelab runs nodes itself (the local
backend: Debian's fio) and IOR + mdtest where the nodes are NixOS machines
(the compositions put ``pkgs.ior`` on clients; mdtest ships with IOR). Per
client: a sequential write of its own file, a sequential read of it back (the
page cache of the client's mount is dropped first: fio ``invalidate=1``, IOR
``-C`` reads another rank's data) and file creations in a directory of its own
(metadata operations). Bandwidths are per client in MiB/s, metadata in ops/s:
on a faithful host neither changes as clients are added with a fixed per-client load.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IOLoad:
    size_mib: int = 64          # per client file
    block_kib: int = 1024       # transfer size
    seconds: float = 4.0        # fio: time-based phases (the file is rewritten/reread in a loop)
    md_files: int = 500         # metadata: files created per client
    seed: int = 1

    def __post_init__(self) -> None:
        if self.size_mib < 1 or self.block_kib < 4 or self.md_files < 1 or self.seconds <= 0:
            raise ValueError(f"bad I/O load {self}: size_mib >= 1, block_kib >= 4, md_files >= 1, seconds > 0")


# ------------------------------------------------------------------------- fio (local)
def fio_argv(phase: str, directory: str, node: str, load: IOLoad) -> list[str]:
    """fio for one phase (``write``, ``read``, ``create``) of one client, JSON on stdout."""
    common = ["fio", "--output-format=json", f"--name={phase}-{node}", "--group_reporting"]
    if phase in ("write", "read"):
        return common + [f"--filename={directory}/fio-{node}.dat", f"--rw={phase}", f"--bs={load.block_kib}k",
                         f"--size={load.size_mib}m", "--ioengine=psync", "--time_based",
                         f"--runtime={load.seconds:g}", "--invalidate=1"] + (["--end_fsync=1"] if phase == "write" else [])
    if phase == "create":
        # fio's filecreate engine times open(O_CREAT)+close per file: metadata ops, no data.
        return common + [f"--directory={directory}/md-{node}", "--ioengine=filecreate", f"--nrfiles={load.md_files}",
                         "--filesize=4k", "--bs=4k", "--openfiles=1", "--create_on_open=1"]
    raise ValueError(f"unknown fio phase {phase!r}")


def parse_fio(text: str, phase: str) -> dict[str, float]:
    """fio JSON -> bandwidth MiB/s (write/read) or operations/s (create)."""
    try:
        j = json.loads(text[text.index("{"):])
        job = j["jobs"][0]
    except (ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"fio {phase}: no JSON result in its output ({exc}): {text[-300:]!r}") from None
    if job.get("error"):
        raise ValueError(f"fio {phase}: job error {job['error']}")
    # fio's filecreate engine accounts its creations as reads (its default rw).
    side = job["read" if phase in ("read", "create") else "write"]
    if phase == "create":
        # One sequential stream: creations/s = 1 / mean time per creation (fio's own
        # iops rounds its runtime to whole milliseconds).
        mean_ns = (side.get("clat_ns") or side.get("lat_ns") or {}).get("mean") or 0.0
        return {"ops_per_s": 1e9 / mean_ns if mean_ns > 0 else 0.0, "ops": float(side.get("total_ios", 0))}
    return {"mib_per_s": side["bw_bytes"] / 2**20, "bytes": float(side["io_bytes"]),
            "seconds": side.get("runtime", 0) / 1000}


# ------------------------------------------------------------------ IOR / mdtest (NixOS)
def ior_argv(directory: str, node: str, load: IOLoad) -> list[str]:
    """IOR, one process per client node, file per process: write then read back (``-C``:
    with several ranks each reads another's data; ``-e``: fsync after write)."""
    return ["ior", "-a", "POSIX", "-w", "-r", "-e", "-C", "-F", "-t", f"{load.block_kib}k",
            "-b", f"{load.size_mib}m", "-s", "1", "-i", "1", "-o", f"{directory}/ior-{node}",
            "-O", "summaryFormat=JSON"]


def mdtest_argv(directory: str, node: str, load: IOLoad) -> list[str]:
    """mdtest: create, stat, remove ``md_files`` files in a directory of this client's own."""
    return ["mdtest", "-F", "-C", "-T", "-r", "-n", str(load.md_files), "-d", f"{directory}/mdtest-{node}"]


def shell(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def parse_ior_json(text: str) -> dict[str, float]:
    """IOR ``-O summaryFormat=JSON``: the ``summary`` entries' mean bandwidth per operation (MiB/s)."""
    try:
        j = json.loads(text[text.index("{"):])
        out = {f"{s['operation']}_mib_per_s": float(s["bwMeanMIB"]) for s in j["summary"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"IOR: no JSON summary in its output ({exc}): {text[-300:]!r}") from None
    return out


_MDTEST_ROW = re.compile(r"^\s*File (creation|stat|removal)\s*:\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)", re.M)


def parse_mdtest(text: str) -> dict[str, float]:
    """mdtest's SUMMARY table rows ``File creation : max min mean stddev`` -> mean ops/s."""
    rows = {m.group(1): float(m.group(4)) for m in _MDTEST_ROW.finditer(text)}
    if "creation" not in rows:
        raise ValueError(f"mdtest: no 'File creation' row in its output: {text[-300:]!r}")
    return {f"{k}_ops_per_s": v for k, v in rows.items()}


def describe(load: IOLoad) -> dict[str, Any]:
    return {"size_mib": load.size_mib, "block_kib": load.block_kib, "seconds": load.seconds, "md_files": load.md_files}
