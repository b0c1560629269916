"""``edgelab`` command line: validate, plan, bring up/down, run, report.

Errors the user can fix (bad topology, impossible placement, backend missing)
are printed as one clear line and exit with status 2 — no traceback.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Optional

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import EdgelabError

console = Console(stderr=False)
err_console = Console(stderr=True)

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


class _Group(click.Group):
    """Turns EdgelabError into a one-line message and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgelabError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgelab", message="%(version)s")
def cli() -> None:
    """edgelab: reproducible testbeds for low-cost edge computing research."""


def _load(topo: str):
    from .plan import make_plan
    from .topology import load_topology

    t = load_topology(topo)
    return t, make_plan(t)


def _placement(p, strategy: str = "spread", max_per_host: Optional[int] = None, cpu_overcommit: float = 1.0):
    """The plan folded onto its hosts; the same judgement for ``validate``, ``plan`` and ``up``.

    Hosts listed in the topology are part of it: not fitting them is an error
    everywhere. Without them the target is this machine, which the local backend
    may over-commit: not fitting is a warning everywhere, as are limits this
    machine cannot enforce. Returns the placement (None if it does not fit).
    """
    from .errors import FoldingError
    from .folding import fold_plan, unenforced_limits

    placement = None
    try:
        placement = fold_plan(p, strategy=strategy, max_per_host=max_per_host, cpu_overcommit=cpu_overcommit)
    except FoldingError as exc:
        if p.topology.hosts:
            raise
        err_console.print(f"[yellow]warning:[/] on this machine: {exc}", highlight=False, soft_wrap=True)
    if not p.topology.hosts:
        for w in unenforced_limits(p):
            err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    return placement


@cli.command()
@click.argument("topo", type=click.Path(dir_okay=False))
def validate(topo: str) -> None:
    """Check a topology file; print what it describes."""
    t, plan = _load(topo)
    _placement(plan)
    console.print(f"[green]ok[/] {topo}: testbed [bold]{t.name}[/], {len(plan.nodes)} nodes, "
                  f"{len(plan.networks)} networks ({', '.join(f'{n.name}:{n.kind}' for n in plan.networks)})")


@cli.command()
@click.argument("topo", type=click.Path(dir_okay=False))
@click.option("--strategy", type=click.Choice(["spread", "pack"]), default="spread", show_default=True,
              help="Folding strategy onto physical hosts.")
@click.option("--max-per-host", type=int, default=None, help="Cap on virtual nodes per physical host.")
@click.option("--cpu-overcommit", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Let the nodes of a host use this many times its cores.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead of tables.")
def plan(topo: str, strategy: str, max_per_host: Optional[int], cpu_overcommit: float, as_json: bool) -> None:
    """Print the nodes, addresses, links and their placement on hosts."""
    t, p = _load(topo)
    placement = _placement(p, strategy, max_per_host, cpu_overcommit)
    if as_json:
        d = p.to_dict()
        d["placement"] = placement.assignment if placement else None
        console.print_json(json.dumps(d))
        return
    table = Table(title=f"testbed {t.name}: nodes")
    for col in ("node", "role", "cpu", "mem MiB", "host", "interfaces"):
        table.add_column(col)
    for n in p.nodes:
        itfs = ", ".join(f"{i.ifname} {i.address} ({i.network}/{i.kind}{' uplink' if i.uplink else ''}"
                         f"{' -> ' + i.peer if i.peer else ''})" for i in n.interfaces)
        table.add_row(n.name, n.role, f"{n.resources.host_cpu:g}", str(n.resources.memory_mib),
                      placement.assignment[n.name] if placement else "-", itfs)
    console.print(table)
    nets = Table(title="networks")
    for col in ("network", "kind", "subnet", "segment", "stations", "link", "airtime budget"):
        nets.add_column(col)
    for net in p.networks:
        for s in net.segments:
            l = s.link
            cap = s.capacity_mbit
            nets.add_row(net.name, net.kind, net.subnet, f"{s.index}:{s.kind}", str(len(s.stations)),
                         f"{l.rate_mbit:g} Mbit/s, {l.delay_ms:g}±{l.jitter_ms:g} ms, {l.loss_pct:g}% loss",
                         _budget_text(s) if cap else "-")
    console.print(nets)
    _print_stations(p)
    if placement is None:
        return
    hosts = Table(title=f"placement ({strategy}): folding factor {placement.folding_factor:.2f}")
    for col in ("host", "nodes", "cpu used", "memory used MiB"):
        hosts.add_column(col)
    for h in placement.hosts:
        cpu, mem, cnt = placement.loads[h.name]
        hosts.add_row(h.name, str(cnt), f"{cpu:g} / {h.cpu:g}", f"{mem} / {h.memory_mib}")
    console.print(hosts)


def _budget_text(seg) -> str:
    """'50.2 Mbit/s (A-MPDU 8 + BlockAck)' for a shared wifi segment."""
    air = seg.airtime
    agg = f"A-MPDU {air.ampdu_frames} + BlockAck" if air.ampdu_frames > 1 else \
        ("BlockAck" if air.block_ack else "no aggregation")
    return f"{seg.capacity_mbit:.1f} Mbit/s ({agg}, slot {air.slot_us:g} µs, AIFS {air.ifs_us:g} µs)"


def _print_stations(p) -> None:
    """Per-station PHY rate, aggregate length and DCF share of every shared Wi-Fi segment."""
    from .airtime import frames_per_exchange

    segs = [(net, s) for net in p.networks for s in net.segments if s.capacity_mbit]
    if not segs:
        return
    table = Table(title="Wi-Fi stations: DCF shares when all are saturated (Bianchi; a slow station "
                        "lowers every share)")
    for col in ("network", "station", "MCS", "PHY Mbit/s", "A-MPDU", "share Mbit/s", "may borrow to Mbit/s"):
        table.add_column(col)
    for net, s in segs:
        for i, node in enumerate(s.stations):
            rate = s.station_rates[i]
            mcs = s.station_mcs[i] if i < len(s.station_mcs) else None
            table.add_row(f"{net.name}/{s.index}", node, "profile" if mcs is None else str(mcs), f"{rate:g}",
                          str(frames_per_exchange(s.airtime, rate)), f"{s.station_shares_mbit[i]:.2f}",
                          f"{s.station_ceils_mbit[i]:.2f}")
    console.print(table)


@cli.command()
@click.argument("topo", type=click.Path(dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None, help="Write to a file (default stdout).")
def export(topo: str, out: Optional[str]) -> None:
    """Export the plan as JSON (what the Nix modules and compositions read)."""
    _, p = _load(topo)
    text = json.dumps(p.to_dict(), indent=2) + "\n"
    if out:
        Path(out).write_text(text)
        console.print(f"wrote {out}")
    else:
        click.echo(text, nl=False)


@cli.command("profiles")
def profiles_cmd() -> None:
    """List the shipped link profiles."""
    from .profiles import get_profile, profile_names

    table = Table(title="link profiles (sources: edgelab/profiles/links.yaml)")
    for col in ("profile", "kind", "rate Mbit/s", "delay ms", "jitter ms", "loss %", "shared"):
        table.add_column(col)
    for name in profile_names():
        p = get_profile(name)
        l = p.link
        table.add_row(name, p.kind, f"{l.rate_mbit:g}", f"{l.delay_ms:g}", f"{l.jitter_ms:g}", f"{l.loss_pct:g}",
                      "yes" if l.shared else "no")
    console.print(table)


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EdgelabError(f"{what} needs root (network namespaces and cgroups): run it with sudo")


@cli.command()
@click.argument("topo", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(["local", "ssh", "nxc", "g5k"]), default="local", show_default=True)
@click.option("-o", "--backend-opt", multiple=True, metavar="KEY=VALUE",
              help="Backend option, repeatable (nxc: composition=, flavour=; g5k: site=, cluster=, walltime=).")
@click.option("--inventory", type=click.Path(dir_okay=False), default=None,
              help="Devices that run the plan's nodes (selects --backend ssh; docs/backends.md).")
@click.option("--dry-run", is_flag=True, help="Print what would be reserved, deployed and imposed; do nothing.")
def up(topo: str, backend: str, backend_opt: tuple[str, ...], inventory: Optional[str], dry_run: bool) -> None:
    """Bring a testbed up and leave it running (``edgelab down`` removes it)."""
    from .backends import get_backend
    from .experiment import backend_options

    _, p = _load(topo)
    _placement(p)
    opts = backend_options(backend_opt)
    if inventory:
        backend = "ssh" if backend == "local" else backend
        opts.setdefault("inventory", inventory)
    be = get_backend(backend, **opts)
    if dry_run:
        click.echo(be.dry_run(p), nl=False)
        return
    if backend == "local":
        _require_root("edgelab up --backend local")
    tb = be.up(p)
    detach = getattr(tb, "detach", None)
    if detach:
        detach()
    console.print(f"[green]up[/] testbed [bold]{p.topology.name}[/] ({len(p.nodes)} nodes, backend {backend})")
    for n in p.nodes:
        # where a backend maps nodes to machines (ssh), their real addresses; else the plan's
        addrs = [tb.address(n.name, i.network) for i in n.interfaces] if backend != "local" else \
            [i.address for i in n.interfaces]
        console.print(f"  {n.name:<16} {n.role:<24} {', '.join(dict.fromkeys(addrs))}")


@cli.command()
@click.argument("name_or_topo")
@click.option("--backend", type=click.Choice(["local", "ssh", "nxc", "g5k"]), default="local", show_default=True)
@click.option("--inventory", type=click.Path(dir_okay=False), default=None,
              help="The ssh backend's inventory (selects --backend ssh).")
def down(name_or_topo: str, backend: str, inventory: Optional[str]) -> None:
    """Tear a testbed down by name or topology file, also after a crashed run."""
    from .backends import get_backend

    from .backends.local.naming import check_testbed_name

    name = name_or_topo
    if name.endswith((".yaml", ".yml")) or Path(name).is_file():
        name = _load(name)[0].name
    check_testbed_name(name)  # it becomes a state-file path: no `down ../../x`
    if backend == "local":
        _require_root("edgelab down --backend local")
    if inventory:
        backend = "ssh" if backend == "local" else backend
    be = get_backend(backend, **({"inventory": inventory} if inventory else {}))
    be.down(name)
    for line in getattr(be, "report", None) or []:   # a folded testbed: what each host removed
        console.print(f"  {line}")
    console.print(f"[green]down[/] testbed [bold]{name}[/]")


@cli.command("wifi-rate")
@click.argument("topo", type=click.Path(dir_okay=False))
@click.argument("node")
@click.option("--mcs", type=int, default=None, help="The station's new MCS (index in the profile's table).")
@click.option("--profile-rate", is_flag=True, help="Back to the profile's default rate.")
@click.option("--network", default=None, help="The Wi-Fi network (default: the node's only Wi-Fi network).")
def wifi_rate(topo: str, node: str, mcs: Optional[int], profile_rate: bool, network: Optional[str]) -> None:
    """Change a Wi-Fi station's rate on a running local testbed (a phone walking away), in place:
    its link and the cell's airtime budget are re-rated, nothing is torn down."""
    from .backends.local import LocalBackend

    if (mcs is None) == (not profile_rate):
        raise EdgelabError("give --mcs N or --profile-rate (one of them)")
    _, p = _load(topo)
    try:
        nets = [i.network for i in p.node(node).interfaces if i.kind == "wifi" and not i.uplink]
    except KeyError:
        raise EdgelabError(f"no node {node!r} in {topo}") from None
    if network is None:
        if len(nets) != 1:
            raise EdgelabError(f"{node} is a station of {len(nets)} Wi-Fi networks ({', '.join(nets) or 'none'}): "
                               "name one with --network")
        network = nets[0]
    _require_root("edgelab wifi-rate")
    change = LocalBackend().set_station_mcs(p, node, network, mcs)
    console.print(f"[green]{node}[/] on {network}: {change['rate_mbit']:g} Mbit/s; cell budget "
                  f"{change['capacity_mbit']:.1f} Mbit/s; shares "
                  + ", ".join(f"{n} {v:.2f}" for n, v in change["shares_mbit"].items()))


@cli.command()
@click.argument("topo", type=click.Path(dir_okay=False))
@click.option("--seconds", type=float, default=3.0, show_default=True, help="Duration of each probe.")
def calibrate(topo: str, seconds: float) -> None:
    """Measure every link class with real traffic: configured vs measured."""
    _require_root("edgelab calibrate")
    from .backends.local import LocalBackend
    from .backends.local.calibrate import calibrate as run_calibration

    _, p = _load(topo)
    with LocalBackend().up(p) as tb:
        rows = run_calibration(tb, seconds=seconds)
    table = Table(title=f"calibration of {p.topology.name} (engine {tb.facts().get('link_engine')})")
    cols = list(rows[0].keys()) if rows else []
    for c in cols:
        table.add_column(str(c))
    for r in rows:
        table.add_row(*(f"{v:.3g}" if isinstance(v, float) else str(v) for v in r.values()))
    console.print(table)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("experiment")
@click.pass_context
def run(ctx: click.Context, experiment: str) -> None:
    """Run an experiment (``experiments/EXPERIMENT.py``); extra options go to it.

    Example: ``edgelab run wifi_scaling --quick``. See ``edgelab run NAME --help``.
    """
    path = Path(experiment)
    if not path.exists():
        path = EXPERIMENTS_DIR / f"{experiment.removesuffix('.py')}.py"
    if not path.exists():
        known = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py") if not p.stem.startswith("_"))
        raise EdgelabError(f"no experiment {experiment!r}; known: {', '.join(known)}")
    sys.argv = [str(path), *ctx.args]
    runpy.run_path(str(path), run_name="__main__")


@cli.command()
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False))
def report(results_dir: str) -> None:
    """Write plots and a Markdown/HTML summary for a run (or a directory of runs)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from analysis.report import build_report

    res = build_report(Path(results_dir))
    for why in res.unreadable:
        console.print(f"[yellow]not readable[/]: {escape(why)}", highlight=False, soft_wrap=True)
    if res.excluded:
        console.print(f"[yellow]{res.excluded} sweep point(s) excluded[/] (unhealthy, failed or incomplete); "
                      f"the headline of each run names them", highlight=False)
    if not res.readable:
        # A report of nothing is not a report: say so in the exit status too.
        raise click.ClickException(f"no run under {results_dir} could be read ({len(res.unreadable)} tried); "
                                   f"{res.path} lists why")
    console.print(f"[green]report[/] {res.path}")


@cli.command("kernel-check")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--fragment", "fragment_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the config fragment to paste into the device's kernel config to this file.")
def kernel_check(config: str, as_json: bool, fragment_out: Optional[str]) -> None:
    """Check a kernel config (.config, /proc/config.gz, pmaports config-*) for what k3s needs.

    Exit status 0 when everything k3s needs is set, 1 when something is
    missing (grouped by the feature that breaks, with the fragment to add).
    """
    from .kernelcheck import check_file

    rep = check_file(config)
    if fragment_out:
        Path(fragment_out).write_text(rep.fragment())
    if as_json:
        click.echo(json.dumps(rep.to_dict(), indent=2))
    else:
        click.echo(rep.render(), nl=False)
    sys.exit(0 if rep.ok else 1)


@cli.command("share-up", hidden=True)
def share_up_cmd() -> None:
    """One host's share of a testbed folded over several hosts, from the JSON share document on
    stdin (sent by edgelab.remote.folded); prints what the controller needs as JSON. ``edgelab
    down <testbed>-h<i>`` removes it."""
    from .backends.local.share import MAX_DOC_BYTES, share_up

    _require_root("edgelab share-up")
    click.echo(json.dumps(share_up(sys.stdin.read(MAX_DOC_BYTES + 1))))


@cli.command("share-down", hidden=True)
@click.argument("testbed")
@click.option("--index", type=click.IntRange(1, 9999), default=None,
              help="The host's index in the folded run (default: every share of TESTBED found here by name).")
@click.option("--run", "run_id", default="", help="The folded run's id (from the controller's record).")
def share_down_cmd(testbed: str, index: int, run_id: str) -> None:
    """Remove this host's share of a folded testbed, only if its state file says it is that share
    (sent by ``edgelab down <testbed> --inventory FILE``; edgelab.backends.local.share)."""
    from .backends.local.share import share_down

    from .backends.local.share import shares_here

    _require_root("edgelab share-down")
    problems = []
    for i in [index] if index else shares_here(testbed):
        try:
            click.echo(share_down(testbed, i, run_id))
        except EdgelabError as exc:
            problems.append(str(exc))
    if problems:
        raise EdgelabError("; ".join(problems))


def main() -> None:
    cli(prog_name="edgelab")


if __name__ == "__main__":
    main()
