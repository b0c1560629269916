"""`edgelab kernel-check`: the seeds' phone kernel (multiport unset) is flagged with
the fragment that fixes it; a NixOS-default-like kernel passes; bad input is a
clear error. Config files are in tests/fixtures/kernel (written for these tests)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgelab.kernelcheck import (REQUIREMENTS, KernelConfigError, check, check_file, parse_config,
                                 read_config)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests/fixtures/kernel"
PHONE = FIX / "config-postmarketos-qcom-msm8953.aarch64"
NIXOS = FIX / "config-nixos-6.1-x86_64"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgelab", "kernel-check", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_seed_phone_config_is_flagged_for_servicelb():
    rep = check_file(PHONE)
    assert not rep.ok
    assert [f.requirement.name for f in rep.missing] == ["NETFILTER_XT_MATCH_MULTIPORT"]
    assert rep.missing[0].state == "not set"
    assert "ServiceLB" in rep.missing[0].requirement.feature
    # The fragment is what the device's kernel package needs (its dependency is already there).
    frag = rep.fragment().splitlines()
    assert "CONFIG_NETFILTER_XT_MATCH_MULTIPORT=y" in frag
    assert "CONFIG_NETFILTER_ADVANCED=y" not in frag


def test_fragment_fixes_the_config():
    """Appending the fragment to the phone's config makes the check pass: the fix is complete."""
    rep = check_file(PHONE)
    fixed = parse_config(PHONE.read_text() + rep.fragment(), "fixed")
    after = check(fixed)
    assert after.ok and not after.warnings


def test_fragment_brings_dependencies_first():
    cfg = parse_config("CONFIG_NETFILTER=y\nCONFIG_NETFILTER_XTABLES=y\n# CONFIG_NETFILTER_ADVANCED is not set\n", "x")
    frag = check(cfg).fragment().splitlines()
    assert frag.index("CONFIG_NETFILTER_ADVANCED=y") < frag.index("CONFIG_NETFILTER_XT_MATCH_MULTIPORT=y")
    assert frag.count("CONFIG_NETFILTER_ADVANCED=y") == 1


def test_nixos_default_like_config_passes_with_modules():
    rep = check_file(NIXOS)
    assert rep.ok and not rep.warnings, rep.render()
    assert read_config(NIXOS).values["NETFILTER_XT_MATCH_MULTIPORT"] == "m"
    assert "xt_multiport" in rep.render()      # =m: it must be loadable, which the NixOS test checks


def test_cli_exit_status_text_and_json(tmp_path):
    bad = cli(str(PHONE))
    assert bad.returncode == 1
    assert "CONFIG_NETFILTER_XT_MATCH_MULTIPORT: not set" in bad.stdout
    assert "LoadBalancer Services never come up" in bad.stdout
    good = cli(str(NIXOS), "--json", "--fragment", str(tmp_path / "frag"))
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["ok"] is True and (tmp_path / "frag").read_text() == ""


def test_proc_config_gz_is_read(tmp_path):
    gz = tmp_path / "config.gz"
    gz.write_bytes(gzip.compress(PHONE.read_bytes()))
    assert [f.requirement.name for f in check_file(gz).missing] == ["NETFILTER_XT_MATCH_MULTIPORT"]


def test_alternative_option_names_count():
    text = NIXOS.read_text().replace("CONFIG_IP_NF_TARGET_MASQUERADE=m\n", "")
    rep = check(parse_config(text + "CONFIG_NETFILTER_XT_TARGET_MASQUERADE=m\n", "newer"))
    assert rep.ok
    rep = check(parse_config(text, "without"))
    assert [f.requirement.name for f in rep.missing] == ["IP_NF_TARGET_MASQUERADE"]
    assert rep.missing[0].state == "absent"


@pytest.mark.parametrize("content,message", [
    (b"hello world\n", "not a kernel config line"),
    (b"# only comments\n", "no CONFIG_ options"),
    (b"\x1f\x8bnot really gzip", "cannot read"),
    (b"CONFIG_A=y\n" + b"x" * 5000 + b"\n", "longer than"),
])
def test_bad_input_is_a_clear_error(tmp_path, content, message):
    p = tmp_path / "config"
    p.write_bytes(content)
    with pytest.raises(KernelConfigError, match=message):
        read_config(p)
    out = cli(str(p))
    assert out.returncode == 2 and message in out.stderr and str(p) in out.stderr.replace("\n", "")


def test_missing_file_names_what_to_give():
    out = cli("/nonexistent/config")
    assert out.returncode == 2 and "/proc/config.gz" in out.stderr


def test_requirements_cover_k3s_check_config_essentials():
    names = {o for r in REQUIREMENTS if r.required for o in r.options}
    for o in ("NETFILTER_XT_MATCH_MULTIPORT", "BRIDGE_NETFILTER", "VXLAN", "OVERLAY_FS", "MEMCG",
              "NETFILTER_XT_MATCH_COMMENT", "NETFILTER_XT_MATCH_STATISTIC", "IP_NF_NAT"):
        assert o in names
