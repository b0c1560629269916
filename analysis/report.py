"""``edgelab report``: figures plus a Markdown and an HTML summary for one run or many.

The summary is built once as a list of blocks (heading, paragraph, warning,
table, figure) and rendered twice, so the Markdown and HTML always say the
same thing and no Markdown converter is needed. A run that cannot be analysed
(missing metric, malformed file) gets a warning block naming the problem; the
other runs are still reported.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import pandas as pd

from edgelab.errors import EdgelabError

from .energy import energy_per_invocation
from .folding import folding_verdict
from .load import ResultsError, Run, find_run_dirs, load_run
from .anomaly import anomaly_table
from .plots import anomaly_figure, caption, energy_figure, folding_figure, saturation_figure, save_figure, topologies_figure
from .saturation import saturation_for_run
from .topologies import bound_text, topology_capacity

REPORT_DIR = "report"
DEFAULT_THRESHOLD_MS = 500.0
DEFAULT_TOLERANCE = 0.05


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Warn:
    text: str


@dataclass
class Table:
    df: pd.DataFrame


@dataclass
class Fig:
    png: str  # paths relative to the report directory
    svg: str
    caption: str


Block = Union[Heading, Para, Bullets, Warn, Table, Fig]


# -- formatting ---------------------------------------------------------------

def _num(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "–"
    if isinstance(x, (bool,)):
        return "yes" if x else "no"
    if isinstance(x, float):
        if x == 0:
            return "0"
        return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3e}"
    return str(x)


def _with_ci(table: pd.DataFrame, prefix: str, scale: float = 1.0) -> pd.Series:
    """"mean [low, high]" strings (just the mean when there is no interval)."""
    def fmt(r):
        m, lo, hi = r[f"{prefix}mean"] * scale, r[f"{prefix}ci_low"] * scale, r[f"{prefix}ci_high"] * scale
        return _num(m) if math.isnan(lo) else f"{_num(m)} [{_num(lo)}, {_num(hi)}]"
    return table.apply(fmt, axis=1)


# -- per-experiment sections ---------------------------------------------------

def _figure(fig, out_dir: Path, stem: str, text: str) -> Fig:
    png, svg = save_figure(fig, out_dir, stem)
    return Fig(png.name, svg.name, text)


def _wifi(run: Run, out: Path, stem: str) -> tuple[str, list[Block]]:
    res = saturation_for_run(run)
    c = res.curve
    table = pd.DataFrame({"phones N": c["n_phones"], "goodput Mbit/s [95% CI]": _with_ci(c, "goodput_mbit_"),
                          "gain to next N": c["goodput_gain"].map(lambda g: "–" if math.isnan(g) else f"{g:+.1%}")})
    if "latency_ms_p95_mean" in c:
        table["p95 latency ms [95% CI]"] = _with_ci(c, "latency_ms_p95_")
    if "airtime_capacity_mbit_mean" in c:
        table["airtime capacity Mbit/s"] = c["airtime_capacity_mbit_mean"].map(_num)
    if "phone_cpu_ms_per_request_mean" in c:
        table["phone CPU ms/request [95% CI]"] = _with_ci(c, "phone_cpu_ms_per_request_")
    table["reps"] = c["goodput_mbit_n"]
    text = res.describe()
    params = run.manifest.get("params", {}) if isinstance(run.manifest, dict) else {}
    if params.get("mode"):
        text += f" Workload: mode={params['mode']}, inference on the {params.get('inference', 'server')}."
    fig = _figure(saturation_figure(res, run.manifest), out, f"{stem}-saturation",
                  f"Aggregate goodput and latency vs phones; saturation N = {res.n} ({res.criterion}). "
                  + caption(run.manifest))
    notes = Para(f"Criteria: the goodput plateau fires at the smallest N whose mean gain to the next N is below "
                 f"{res.epsilon:.0%}; the latency criterion when mean p95 exceeds "
                 + (f"{res.threshold_ms:g} ms." if res.threshold_ms is not None else "a threshold (none recorded)."))
    blocks = [Para(text), notes, Table(table), fig]
    return text, blocks + _anomaly_blocks(run, out, stem)


def _anomaly_blocks(run: Run, out: Path, stem: str) -> list[Block]:
    """The per-phone shares of a mixed-rate sweep (``--slow-phones``), if the run has them."""
    try:
        res = anomaly_table(run.df)
    except ResultsError:
        return []
    if not res.mixed:
        return []
    t = res.summary
    table = pd.DataFrame({"phones N": t["n_phones"], "slow": t["slow_phones"],
                          "fast phone Mbit/s (model)": [f"{_num(a)} ({_num(b)})" for a, b in
                                                        zip(t["fast_measured_mbit"], t["fast_model_mbit"])],
                          "slow phone Mbit/s (model)": [f"{_num(a)} ({_num(b)})" for a, b in
                                                        zip(t["slow_measured_mbit"], t["slow_model_mbit"])],
                          "a phone if all fast (model)": t["all_fast_model_mbit"].map(_num)})
    fig = _figure(anomaly_figure(res, run.manifest), out, f"{stem}-anomaly",
                  "Saturated TCP goodput per phone, fast and slow, measured and modelled (Bianchi with "
                  "per-station frame durations; Heusse et al. 2003). " + caption(run.manifest))
    return [Para(res.describe()), Table(table), fig]


def _folding_hosts(run: Run, tol: float) -> tuple[str, list[Block]]:
    """experiments/folding.py --hosts: each factor's topology spread over M hosts vs 1 host."""
    from .folding_hosts import hosts_verdicts

    verdicts = hosts_verdicts(run.df, run.params.get("metrics"), tolerance=tol,
                              alpha=float(run.params.get("alpha", 0.05)))
    text = " ".join(v.describe() for v in verdicts.values())
    rows = [{"factor": f, "hosts": r.hosts, "metric": r.metric, "mean": _num(r.mean),
             "deviation vs 1 host": f"{r.degradation:+.2%}", "decision": r.decision, "reps": r.n}
            for f, v in verdicts.items() for r in v.table.itertuples()]
    return text, [Para("Folding over several hosts: the same virtual topology with every node on one host (the "
                       "baseline) and spread over more hosts, VXLAN joining their bridges. " + text),
                  Table(pd.DataFrame(rows))]


def _folding(run: Run, out: Path, stem: str) -> tuple[str, list[Block]]:
    tol = float(run.params.get("tolerance", DEFAULT_TOLERANCE))
    if "hosts" in run.df.columns and run.params.get("hosts"):
        return _folding_hosts(run, tol)
    design = str(run.params.get("design", "independent"))
    res = folding_verdict(run.df, run.params.get("metrics"), tolerance=tol,
                          cpus=(run.manifest.get("host") or {}).get("cpus"), design=design)
    t = res.table
    level = f"{res.confidence:.0%}"
    table = pd.DataFrame({"metric": t["metric"], "factor": t["factor"], f"mean [{level} CI]": _with_ci(t, ""),
                          "deviation": t["degradation"].map(lambda d: f"{d:+.2%}"),
                          f"deviation {level} CI": [("baseline" if f == b else "–" if not ok else f"[{lo:+.2%}, {hi:+.2%}]")
                                               for f, b, ok, lo, hi in zip(t["factor"], t["baseline_factor"],
                                                                           t["ci_defined"], t["degradation_ci_low"],
                                                                           t["degradation_ci_high"])],
                          "decision": t["decision"],
                          "reps": t["n"]})
    text = res.describe()
    fig = _figure(folding_figure(res, run.manifest), out, f"{stem}-folding",
                  f"Deviation from the unfolded baseline per metric; tolerance ±{tol:.0%}. " + caption(run.manifest))
    method = Para(("Deviation = exp(μ_factor − μ_baseline) − 1 of the block model log y = μ_factor + β_round + ε "
                   "(the sweep's rounds as blocks, which removes the host's drift between rounds), with the t "
                   "interval of that least-squares contrast (a metric with a zero or negative value: the same "
                   "model on its own scale, divided by |mean at baseline|). "
                   if design == "blocked" else
                   "Deviation = exp(adjusted μ_factor − μ_baseline) − 1 of the covariance model log y = μ_group + "
                   "β·log(host speed) + ε on the baseline's and the factor's points (host speed: the warmer's CPU time "
                   "per reference unit in each point, host_cpu_unit_us; β the pooled within-group slope), with "
                   "its t interval (one residual variance per group, Welch–Satterthwaite df less one); where a "
                   "point lacks the speed, the factor kept the host half busy or more, or it changed the speed "
                   "(its mean beyond two standard errors of the baseline's), Welch's interval on the logarithms "
                   "unadjusted. "
                   if design == "speed" else
                   "Deviation = ratio of geometric means (factor / baseline) − 1, with Welch's t interval on the "
                   "logarithms (a metric with a zero or negative value: (mean at factor − mean at baseline) / "
                   "|mean at baseline|, Welch's interval of the difference). ") +
                  f"Each metric is decided by two one-sided tests at α = {res.alpha:g} (its {level} interval): "
                  "equivalent when the interval lies within the tolerance, worse/better when it lies beyond it, "
                  "not worse when it clears only the worse bound, inconclusive when it straddles the worse bound. "
                  "A factor is faithful when every metric is equivalent, unfaithful when one is worse; the "
                  "breaking point is the smallest unfaithful factor.")
    blocks: list[Block] = [Para(text), method, Table(table), fig]
    if res.signals:
        sig = pd.DataFrame([{"factor": f, **{k: v for k, v in s.items()}} for f, s in sorted(res.signals.items())])
        blocks.insert(3, Para("Host overload signals per factor (mean over repetitions): CPU busy and softirq "
                              "as fractions of all CPUs' time, run queue in runnable tasks, CPU pressure as the "
                              "fraction of time some task waited for a CPU."))
        blocks.insert(4, Table(sig.round(3)))
    return text, blocks


def _fs_folding(run: Run, out: Path, stem: str) -> tuple[str, list[Block]]:
    """experiments/fs_folding.py: the folding verdict plus bandwidth vs factor with the paper's rule."""
    from .fs_folding import bandwidth_table, fs_folding_figure, rule_table

    text, blocks = _folding(run, out, stem)
    res = folding_verdict(run.df, run.params.get("metrics"), tolerance=float(run.params.get("tolerance", DEFAULT_TOLERANCE)),
                          alpha=float(run.params.get("alpha", 0.05)), cpus=(run.manifest.get("host") or {}).get("cpus"))
    bp = res.breaking_point
    text = text + ("" if bp is not None else f" Breaking point: none up to factor {max(res.verdicts, default=res.baseline)}.")
    bw = bandwidth_table(run.df)
    table = pd.DataFrame({"factor": bw["factor"]})
    for metric, name in (("throughput_write_mib_s", "write MiB/s per client"), ("throughput_read_mib_s", "read MiB/s per client"),
                         ("throughput_create_ops_s", "creations/s per client")):
        if f"{metric}_mean" in bw:
            table[name] = _with_ci(bw, f"{metric}_")
    rules = rule_table(run.df)
    fig = _figure(fs_folding_figure(run.df, res, run.manifest), out, f"{stem}-fs-folding",
                  "Per-client bandwidth and file creations vs folding factor, with the folding paper's rule of "
                  "thumb f_break ≈ 1 + 0.3·nb_cpu − 0.5·nb_io (Guilloteau et al., hal-04038000) evaluated at "
                  "each point. " + caption(run.manifest))
    rule = Para("Rule of thumb per point (fitted on OrangeFS/IOR on Grid'5000 gros nodes, not on this host: "
                "shown for comparison, not as a verdict).")
    return text, [Para(text)] + blocks[1:] + [Heading(4, "Bandwidth per client"), Table(table), fig, rule,
                                              Table(rules.round(2))]


def _energy(run: Run, out: Path, stem: str) -> tuple[str, list[Block]]:
    res = energy_per_invocation(run.df)
    t = res.table
    table = pd.DataFrame({"workers": t["n_workers"], "J per invocation [95% CI]": _with_ci(t, "energy_j_")})
    for prefix, name in (("invocations_per_s_", "invocations/s"), ("power_w_", "power W"),
                         ("latency_ms_p95_", "p95 latency ms")):
        if f"{prefix}mean" in t:
            table[name] = t[f"{prefix}mean"].map(_num)
    table["reps"] = t["energy_j_n"]
    text = res.describe()
    fig = _figure(energy_figure(res, run.manifest), out, f"{stem}-energy",
                  "Energy per invocation and throughput vs workers. " + caption(run.manifest))
    blocks: list[Block] = [Para(text), Table(table), fig]
    series = sorted(Path(run.path).glob("raw/*/prometheus_series.csv")) if hasattr(run, "path") else []
    if series:
        blocks.append(_figure(power_over_time_figure(series), out, f"{stem}-power-time",
                              "Plug power over time, as the run's Prometheus server scraped it "
                              "(edgelab_power_watts, one line per plug, per point)."))
    return text, blocks


def power_over_time_figure(paths: list[Path]):
    """One panel per point: edgelab_power_watts of every plug against seconds into the window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgelab.prometheus import read_series

    fig, axes = plt.subplots(len(paths), 1, figsize=(7, 2.4 * len(paths)), squeeze=False)
    for ax, path in zip(axes[:, 0], paths):
        series = read_series(path, "edgelab_power_watts")
        t0 = min((pts[0][0] for pts in series.values() if pts), default=0.0)
        for labels, pts in sorted(series.items()):
            ax.plot([t - t0 for t, _ in pts], [v for _, v in pts], label=labels.split("topic=")[-1] or labels)
        ax.set_title(path.parent.name, fontsize=9)
        ax.set_ylabel("W")
        if series:
            ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("s into the point's window")
    fig.tight_layout()
    return fig


def _topologies(run: Run, out: Path, stem: str) -> tuple[str, list[Block]]:
    threshold = float(run.params.get("latency_threshold_ms", DEFAULT_THRESHOLD_MS))
    res = topology_capacity(run.df, threshold_ms=threshold, excluded=[p for p, _ in run.excluded])
    text = res.describe()
    cap = res.capacity.copy()
    cap["verdict"] = [bound_text(m, f, t) for m, f, t in zip(cap["max_phones"], cap["first_failing"],
                                                           cap["measured_phones"])]
    for col in ("max_phones", "first_failing"):
        cap[col] = cap[col].map(lambda v: "none" if pd.isna(v) else str(int(v)))
    fig = _figure(topologies_figure(res, run.manifest), out, f"{stem}-topologies",
                  "p95 latency and error rate vs phones per network kind. " + caption(run.manifest))
    blocks: list[Block] = [Para(text), Heading(4, "Maximum phones per network and rate"), Table(cap)]
    if not res.rates.empty:
        blocks += [Heading(4, "Application rates that fit"), Table(res.rates)]
    return text, blocks + [fig]


def _generic(run: Run, out: Path, stem: str) -> tuple[str, list[Block]]:
    """Unknown experiment: mean of every aggregate metric per sweep point, so nothing is silently hidden."""
    df = run.df[run.df["node"] == ""]
    params = [p for p in run.param_names if p != "rep"]
    if df.empty:
        return "No aggregate measurements.", [Para("No aggregate measurements.")]
    wide = df.groupby(params + ["metric"])["value"].mean().unstack("metric").reset_index() if params else \
        df.groupby("metric")["value"].mean().to_frame().T
    text = f"{len(df)} aggregate measurements over {df['point'].nunique()} sweep points (no specific analysis)."
    return text, [Para(text), Table(wide)]


ANALYSES: dict[str, Callable[[Run, Path, str], tuple[str, list[Block]]]] = {
    "wifi_scaling": _wifi, "folding": _folding, "faas_energy": _energy, "network_topologies": _topologies,
    "fs_folding": _fs_folding,
}


def _provenance(run: Run) -> Table:
    m = run.manifest
    git = m.get("git") or {}
    host = m.get("host") or {}
    rows = [("experiment", m.get("experiment")), ("run id", m.get("run_id")), ("status", m.get("status")),
            ("started", m.get("started")), ("ended", m.get("ended") or "–"), ("backend", m.get("backend")),
            ("facts", ", ".join(f"{k}={v}" for k, v in (m.get("facts") or {}).items()) or "–"),
            ("git", f"{git.get('rev', '?')}{' (dirty)' if git.get('dirty') else ''}"),
            ("flake.lock sha256", m.get("flake_lock_sha256") or "–"),
            ("host", ", ".join(f"{k}={v}" for k, v in host.items()) or "–"),
            ("edgelab", m.get("edgelab_version") or "–"),
            ("params", json.dumps(m.get("params") or {}, sort_keys=True)),
            ("measurements", f"{len(run.df)} rows")]
    return Table(pd.DataFrame(rows, columns=["field", "value"]))


# -- rendering -----------------------------------------------------------------

def _cell(x) -> str:
    return _num(x) if not isinstance(x, str) else x


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Warn):
            out.append(f"> **Warning:** {b.text}")
        elif isinstance(b, Table):
            cols = [str(c) for c in b.df.columns]
            lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for row in b.df.itertuples(index=False):
                lines.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
            out.append("\n".join(lines))
        elif isinstance(b, Fig):
            out.append(f"![{b.png}]({b.png})\n\n*{b.caption}* ([SVG]({b.svg}))")
        out.append("")
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:90%}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}.warn{background:#fff3cd;border-left:4px solid #e0a800;padding:.5em 1em}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:85%;color:#555}"""


def to_html(blocks: list[Block], title: str) -> str:
    e = html.escape
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in b.items) + "</ul>")
        elif isinstance(b, Warn):
            out.append(f"<p class=\"warn\"><strong>Warning:</strong> {e(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{e(str(c))}</th>" for c in b.df.columns)
            body = "".join("<tr>" + "".join(f"<td>{e(_cell(v))}</td>" for v in row) + "</tr>"
                           for row in b.df.itertuples(index=False))
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Fig):
            out.append(f"<figure><a href=\"{e(b.svg)}\"><img src=\"{e(b.png)}\" alt=\"{e(b.caption)}\"></a>"
                       f"<figcaption>{e(b.caption)}</figcaption></figure>")
    out.append("</body></html>\n")
    return "\n".join(out)


# -- entry point ---------------------------------------------------------------

def _run_section(run: Run, out: Path) -> tuple[str, list[Block]]:
    stem = f"{run.experiment}-{run.run_id}"
    blocks: list[Block] = [Heading(2, f"{run.experiment} — run {run.run_id}")]
    blocks += [Warn(w) for w in run.warnings]
    analyse = ANALYSES.get(run.experiment, _generic)
    if run.df.empty and run.excluded:
        text = f"nothing to analyse: all {len(run.excluded)} measured points were excluded"
        return text, blocks + [Warn(text), Heading(3, "Provenance"), _provenance(run)]
    try:
        headline, body = analyse(run, out, stem)
    except EdgelabError as exc:
        headline, body = f"could not be analysed: {exc}", [Warn(f"could not be analysed: {exc}")]
    blocks += body
    blocks += [Heading(3, "Provenance"), _provenance(run)]
    return headline, blocks


@dataclass
class ReportOutcome:
    """What :func:`build_report` wrote and how much of the input it could use."""

    path: Path                     # summary.md
    readable: int = 0              # runs analysed
    unreadable: list[str] = field(default_factory=list)   # "<run dir>: why", one per run that could not be read
    excluded: int = 0              # sweep points left out of the verdicts, over all runs


def write_report(results_dir: str | Path) -> Path:
    """Analyse every run at or below ``results_dir`` and write ``results_dir/report/``.

    Returns the path of ``summary.md`` (``summary.html`` and the PNG/SVG figures
    are next to it). Raises :class:`ResultsError` when there is no run at all.
    """
    return build_report(results_dir).path


def build_report(results_dir: str | Path) -> ReportOutcome:
    """:func:`write_report`, also saying how many runs could be read and how many points were excluded."""
    results_dir = Path(results_dir)
    out = results_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    key: list[str] = []
    sections: list[Block] = []
    result = ReportOutcome(out / "summary.md")
    for path in find_run_dirs(results_dir):
        try:
            run: Optional[Run] = load_run(path)
        except ResultsError as exc:
            rel = path.relative_to(results_dir) if path != results_dir else Path(".")
            key.append(f"{rel}: not readable — {exc}")
            sections += [Heading(2, str(rel)), Warn(str(exc))]
            result.unreadable.append(f"{rel}: {exc}")
            continue
        headline, blocks = _run_section(run, out)
        flag = "" if run.status == "complete" else f" ({run.status.upper()})"
        # What was left out is part of the headline, never only a warning further down.
        notes = "".join(f" [{n}]" for n in run.notes)
        key.append(f"{run.experiment} {run.run_id}{flag}: {headline}{notes}")
        sections += blocks
        result.readable += 1
        result.excluded += len(run.excluded)
    title = f"edgelab report — {results_dir.resolve().name}"
    blocks: list[Block] = [Heading(1, title), Heading(2, "Key results"), Bullets(key)] + sections
    md = to_markdown(blocks)
    (out / "summary.md").write_text(md)
    (out / "summary.html").write_text(to_html(blocks, title))
    return result
