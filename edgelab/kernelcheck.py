"""Does a device's kernel have what k3s (and edgelab) need? (``edgelab kernel-check``)

The seeds' phones ran k3s on their vendor/postmarketOS kernels and ServiceLB
never worked: klipper-lb matches ports with ``iptables -m multiport`` and the
phone kernel had ``# CONFIG_NETFILTER_XT_MATCH_MULTIPORT is not set``, so the
svclb pods never came up. The fix lives in the device's kernel package, not in
a NixOS module, so this reads the kernel configuration the way ``k3s
check-config`` does and says, per feature that breaks, what is missing and
the fragment to paste into the device's kernel config (a pmaports
``config-*`` file, a defconfig fragment, ...).

Inputs: a kernel ``.config``, ``/proc/config.gz`` (gzip, detected by its
magic bytes, whatever the name) or a pmaports ``config-<pkgname>.<arch>``
(the same Kconfig format). Reading is bounded (size and line length), and
anything that is not a kernel config is a clear error with the line.

The option list follows ``k3s check-config`` ("Generally Necessary", plus
the overlay network and storage drivers k3s uses by default); edgelab adds
what its own features need (pod CPU limits, link emulation), reported as
warnings, not failures.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from .errors import EdgelabError

#: Largest config accepted (a full distribution .config is ~300 KiB).
MAX_BYTES = 8 * 1024 * 1024
MAX_LINE = 4096

_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")


class KernelConfigError(EdgelabError):
    """The file is not a readable kernel configuration."""


@dataclass(frozen=True)
class Requirement:
    """One kernel option (or any one of alternatives) a feature needs."""

    options: tuple[str, ...]          # any one of these satisfies it (newer/older kernel names)
    feature: str                      # what breaks without it
    required: bool = True             # False: edgelab-only, reported as a warning
    module: Optional[str] = None      # the module name when built as =m (modprobe NAME)
    depends: tuple[str, ...] = ()     # options Kconfig needs before this one can be set

    @property
    def name(self) -> str:
        return self.options[0]


_K8S_RUNTIME = "containers cannot start (runc namespaces/seccomp)"
_CGROUPS = "kubelet refuses to start, or pods cannot be resource-limited (cgroups)"
_POD_NET = "pods get no network (CNI bridge, veth, flannel VXLAN)"
_SERVICES = "ClusterIP/NodePort Services do not route (kube-proxy iptables rules)"
_SERVICELB = "LoadBalancer Services never come up: ServiceLB (klipper-lb) pods fail on `iptables -m multiport`"
_STORAGE = "containerd cannot unpack images (overlayfs snapshotter)"
_CPU_LIMITS = "edgelab: pod/slice CPU limits (the phone's planned CPU share) are not enforced"
_LINKEMU = "edgelab: link emulation falls back from netem to HTB/TBF + NFQUEUE (see edgelab.linkemu)"

_NF_ADV = ("NETFILTER_ADVANCED",)
_IPT = ("NETFILTER_XTABLES", "IP_NF_IPTABLES")

#: What is checked, in report order. Names and grouping follow `k3s check-config`.
REQUIREMENTS: tuple[Requirement, ...] = (
    *(Requirement((o,), _K8S_RUNTIME) for o in
      ("NAMESPACES", "NET_NS", "PID_NS", "IPC_NS", "UTS_NS", "SECCOMP", "KEYS", "POSIX_MQUEUE")),
    *(Requirement((o,), _CGROUPS) for o in
      ("CGROUPS", "CGROUP_PIDS", "CGROUP_CPUACCT", "CGROUP_DEVICE", "CGROUP_FREEZER", "CGROUP_SCHED",
       "CPUSETS", "MEMCG")),
    Requirement(("VETH",), _POD_NET, module="veth"),
    Requirement(("BRIDGE",), _POD_NET, module="bridge"),
    Requirement(("BRIDGE_NETFILTER",), _POD_NET, module="br_netfilter", depends=("BRIDGE", "NETFILTER", *_NF_ADV)),
    Requirement(("VXLAN",), _POD_NET, module="vxlan"),
    Requirement(("IP_NF_FILTER",), _SERVICES, module="iptable_filter", depends=_IPT),
    Requirement(("IP_NF_TARGET_MASQUERADE", "NETFILTER_XT_TARGET_MASQUERADE"), _SERVICES,
                module="xt_MASQUERADE", depends=_IPT),
    Requirement(("IP_NF_TARGET_REJECT",), _SERVICES, module="ipt_REJECT", depends=_IPT),
    Requirement(("NETFILTER_XT_MATCH_ADDRTYPE",), _SERVICES, module="xt_addrtype",
                depends=("NETFILTER_XTABLES", *_NF_ADV)),
    Requirement(("NETFILTER_XT_MATCH_CONNTRACK",), _SERVICES, module="xt_conntrack",
                depends=("NETFILTER_XTABLES", "NF_CONNTRACK")),
    Requirement(("NETFILTER_XT_MATCH_IPVS",), _SERVICES, module="xt_ipvs",
                depends=("NETFILTER_XTABLES", "IP_VS", *_NF_ADV)),
    Requirement(("NETFILTER_XT_MATCH_COMMENT",), _SERVICES, module="xt_comment",
                depends=("NETFILTER_XTABLES", *_NF_ADV)),
    Requirement(("NETFILTER_XT_MATCH_STATISTIC",), _SERVICES, module="xt_statistic",
                depends=("NETFILTER_XTABLES", *_NF_ADV)),
    Requirement(("IP_NF_NAT",), _SERVICES, module="iptable_nat", depends=(*_IPT, "NF_CONNTRACK")),
    Requirement(("NF_NAT",), _SERVICES, module="nf_nat", depends=("NF_CONNTRACK",)),
    Requirement(("NETFILTER_XT_MATCH_MULTIPORT",), _SERVICELB, module="xt_multiport",
                depends=("NETFILTER_XTABLES", *_NF_ADV)),
    Requirement(("OVERLAY_FS",), _STORAGE, module="overlay"),
    Requirement(("CFS_BANDWIDTH",), _CPU_LIMITS, required=False, depends=("CGROUP_SCHED", "FAIR_GROUP_SCHED")),
    Requirement(("NET_SCH_NETEM",), _LINKEMU, required=False, module="sch_netem"),
    Requirement(("NET_SCH_HTB",), _LINKEMU, required=False, module="sch_htb"),
    Requirement(("IFB",), _LINKEMU, required=False, module="ifb"),
)


@dataclass
class KernelConfig:
    """Option name (without CONFIG_) -> value ("y", "m", a string or number); unset ones absent."""

    values: dict[str, str]
    source: str
    explicitly_unset: set[str] = field(default_factory=set)

    def enabled(self, option: str) -> bool:
        return self.values.get(option) in ("y", "m")

    def state(self, option: str) -> str:
        """"y", "m", "not set" (written so) or "absent" (not in the file)."""
        if option in self.values:
            return self.values[option]
        return "not set" if option in self.explicitly_unset else "absent"


def parse_config(text: str, source: str = "<config>") -> KernelConfig:
    """Parse Kconfig ``.config`` text; a line that is neither an option nor a comment is an error."""
    values: dict[str, str] = {}
    unset: set[str] = set()
    seen_option = False
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if len(line) > MAX_LINE:
            raise KernelConfigError(f"{source}:{lineno}: line longer than {MAX_LINE} characters; not a kernel config")
        if not line:
            continue
        m = _SET.match(line)
        if m:
            value = m.group(2).strip()
            values[m.group(1)] = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
            unset.discard(m.group(1))
            seen_option = True
            continue
        m = _UNSET.match(line)
        if m:
            unset.add(m.group(1))
            values.pop(m.group(1), None)
            seen_option = True
            continue
        if line.startswith("#"):
            continue
        raise KernelConfigError(
            f"{source}:{lineno}: not a kernel config line: {line[:80]!r} "
            "(expected CONFIG_NAME=value or '# CONFIG_NAME is not set')")
    if not seen_option:
        raise KernelConfigError(f"{source}: no CONFIG_ options found; give a kernel .config, /proc/config.gz "
                                "or a pmaports config-* file")
    return KernelConfig(values, source, unset)


def read_config(path: str | Path) -> KernelConfig:
    """Read a kernel config file, gzip-compressed or not (bounded)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.open(f) as g:
                    data = g.read(MAX_BYTES + 1)
            else:
                data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise KernelConfigError(f"{p}: no such file (give the device's kernel .config, /proc/config.gz "
                                "or its pmaports config-* file)") from None
    except IsADirectoryError:
        raise KernelConfigError(f"{p}: is a directory, not a kernel config") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise KernelConfigError(f"{p}: cannot read: {exc}") from None
    if len(data) > MAX_BYTES:
        raise KernelConfigError(f"{p}: larger than {MAX_BYTES // (1024 * 1024)} MiB; not a kernel config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
        if "\x00" in text:
            raise KernelConfigError(f"{p}: binary data, not a kernel config") from None
    return parse_config(text, str(p))


@dataclass(frozen=True)
class Finding:
    requirement: Requirement
    ok: bool
    state: str            # the state of the first option (what the file says)


@dataclass
class Report:
    config: KernelConfig
    findings: list[Finding]

    @property
    def missing(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok and f.requirement.required]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok and not f.requirement.required]

    @property
    def ok(self) -> bool:
        return not self.missing

    def by_feature(self, findings: Iterable[Finding]) -> dict[str, list[Finding]]:
        out: dict[str, list[Finding]] = {}
        for f in findings:
            out.setdefault(f.requirement.feature, []).append(f)
        return out

    def fragment(self) -> str:
        """Kconfig lines to add to the device's kernel config: dependencies first, built in (=y)."""
        lines: list[str] = []
        added: set[str] = set()
        for f in self.missing + self.warnings:
            for dep in f.requirement.depends:
                if not self.config.enabled(dep) and dep not in added:
                    lines.append(f"CONFIG_{dep}=y")
                    added.add(dep)
            if f.requirement.name not in added:
                lines.append(f"CONFIG_{f.requirement.name}=y")
                added.add(f.requirement.name)
        return "\n".join(lines) + ("\n" if lines else "")

    def to_dict(self) -> dict:
        return {
            "source": self.config.source,
            "ok": self.ok,
            "missing": {feat: [f.requirement.name for f in fs] for feat, fs in self.by_feature(self.missing).items()},
            "warnings": {feat: [f.requirement.name for f in fs] for feat, fs in self.by_feature(self.warnings).items()},
            "fragment": self.fragment(),
        }

    def render(self) -> str:
        """The human report: per feature that breaks, what is missing; then the fragment."""
        out = [f"kernel config: {self.config.source}"]
        needed = sum(1 for f in self.findings if f.requirement.required)
        if self.ok:
            out.append(f"ok: all {needed} options k3s needs are set (=y or =m).")
        else:
            out.append(f"FAIL: {len(self.missing)} option(s) k3s needs are missing.")
        for title, group in (("missing", self.missing), ("edgelab features degraded", self.warnings)):
            if not group:
                continue
            out.append("")
            out.append(f"{title}:")
            for feature, fs in self.by_feature(group).items():
                out.append(f"  {feature}")
                for f in fs:
                    alt = f" (or {', '.join('CONFIG_' + o for o in f.requirement.options[1:])})" \
                        if len(f.requirement.options) > 1 else ""
                    out.append(f"    CONFIG_{f.requirement.name}{alt}: {f.state}")
        frag = self.fragment()
        if frag:
            out.append("")
            out.append("add to the device's kernel config (e.g. the pmaports config-* file of its linux "
                       "package; =m works too where modules load), then rebuild the kernel:")
            out.extend("  " + line for line in frag.splitlines())
        modules = [f.requirement.module for f in self.findings
                   if f.ok and f.requirement.module and self.config.values.get(f.requirement.name) == "m"]
        if modules:
            out.append("")
            out.append("built as modules (they must be installed and loadable on the device): "
                       + " ".join(sorted(set(modules))))
        return "\n".join(out) + "\n"


def check(config: KernelConfig, requirements: Iterable[Requirement] = REQUIREMENTS) -> Report:
    """Check ``config`` against ``requirements`` (pure)."""
    findings = []
    for r in requirements:
        ok = any(config.enabled(o) for o in r.options)
        findings.append(Finding(r, ok, config.state(r.options[0])))
    return Report(config, findings)


def check_file(path: str | Path) -> Report:
    return check(read_config(path))


__all__ = ["REQUIREMENTS", "Requirement", "KernelConfig", "KernelConfigError", "Report", "Finding",
           "parse_config", "read_config", "check", "check_file"]
