"""Is a device's (or host's) link-emulation delayer still running? One shell probe and one reading
of its answers, for every remote testbed: a point measured after the delayer died measured links
that carried nothing, so its health checks must say so (see :mod:`edgelab.health`)."""

from __future__ import annotations

import shlex
from typing import Any, Callable, Mapping

from .transport import RemoteError


def check_script(state_dir: str) -> str:
    """Prints ``alive PID``, ``dead PID`` or ``none`` for the delayer whose config is
    ``<state_dir>/delayer.json`` (the pid there, and that process still names the file)."""
    f = shlex.quote(f"{state_dir}/delayer.json")
    return (f"f={f}; [ -f $f ] || {{ echo none; exit 0; }}; "
            "p=$(sed -n 's/.*\"pid\": *\\([0-9][0-9]*\\).*/\\1/p' $f | head -n1); "
            "if [ -z \"$p\" ]; then echo none; elif grep -q \"$f\" /proc/$p/cmdline 2>/dev/null; "
            "then echo alive $p; else echo dead $p; fi")


def checks(results: Mapping[str, Any], *, what: Callable[[str], str], where: Callable[[str], str],
           links: Callable[[str], str], none_is_fine: bool) -> list:
    """:class:`~edgelab.health.Check` s from :func:`check_script`'s answers per key (device or host):
    ``what(key)`` names the delayer, ``where(key)`` is appended to its pid, ``links(key)`` names the
    nodes whose links it carried. ``none_is_fine``: no delayer there is no failure (a device
    whose links needed none)."""
    from ..health import Check

    out = []
    for key, r in results.items():
        name = f"alive: link-emulation delayer of {what(key)}"
        if isinstance(r, RemoteError):
            out.append(Check(name, False, f"could not be checked: {r}"))
            continue
        words = r.stdout.split()
        if words[:1] == ["alive"]:
            out.append(Check(name, True, f"running (pid {words[1]}{where(key)})"))
        elif words[:1] == ["dead"]:
            out.append(Check(name, False, f"ended (pid {words[1]}{where(key)}): the links of {links(key)} "
                                          "carried nothing after that"))
        elif not none_is_fine:
            out.append(Check(name, False, f"{' '.join(words) or 'no answer'}: the links of {links(key)} "
                                          "carried nothing after that"))
    return out
