"""One SSH transport under every non-local backend (ssh devices, nxc VMs, Grid'5000 nodes).

Plan node -> :class:`~edgelab.remote.inventory.Device` -> execo. Commands are
built by execo's ssh command builder (``execo.ssh_utils.get_ssh_command``) and
run as ``execo.SshProcess`` (to completion), ``execo.Put``/``execo.Get``
(files), or — for long-running services whose stdin/stdout/stderr the
experiments select on — as a :class:`RemoteProcess`, a real
``subprocess.Popen`` of the execo-built ssh command whose ``terminate``/``kill``
signal the *remote* process group, not only the local ssh client.

Why these choices:

* one ssh ControlMaster per device (``ControlPath`` in a private temporary
  directory, closed by :meth:`Transport.close`): after the first connection a
  command costs one channel, not one TCP + key exchange, which is what makes a
  20-device bring-up take seconds;
* ``BatchMode=yes`` and ``ConnectTimeout``: a device that is down, or a key it
  refuses, fails within the device's ``connect_timeout_s`` with ssh's own
  message in a :class:`RemoteError` naming the node, instead of hanging on a
  password prompt;
* every remote process records its pid under ``<workdir>/pids/`` so that
  teardown (:meth:`Transport.kill_all`) stops what the experiment started even
  if the local ssh client died first;
* ``python3`` as a command's first word means the device's configured
  interpreter (:attr:`Device.python`), and every command runs with
  ``PYTHONPATH`` pointing at the edgelab copy :meth:`Transport.install_edgelab`
  put there, so experiments run the same ``[python, "-m", ...]`` argv on every
  backend.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from ..errors import BackendError
from .inventory import Device, Inventory

Argv = Union[str, Sequence[str]]

#: ssh's exit status when the connection itself failed (man ssh: "255 if an error occurred").
SSH_FAILED = 255
#: Interpreter names that mean "the device's configured Python".
PYTHON_WORDS = ("python3", "python")
_PKG_DIR = Path(__file__).resolve().parents[1]



def _execo():
    """execo, imported on first use, its own logging quietened: we report each failure once, naming the node.
    (execo installs its own Logger class on import, so its logger must not be created before.)"""
    import execo

    execo.logger.setLevel(logging.CRITICAL)
    return execo


class RemoteError(BackendError):
    """A remote operation failed: names the plan node, the device and what ssh or the command said."""

    def __init__(self, device: Device, what: str, detail: str = "") -> None:
        self.device = device
        self.node = device.node
        self.what = what
        self.detail = detail.strip()
        last = self.detail.splitlines()[-1] if self.detail else ""
        self.message = f"node {device.where()}: {what}" + (f": {last}" if last else "")
        BackendError.__init__(self, self.message)

    def __str__(self) -> str:
        return self.message


class RemoteCommandError(RemoteError, subprocess.CalledProcessError):
    """A command run with ``check=True`` exited non-zero: an edgelab error naming the node, and a
    CalledProcessError for callers that catch that (as with the local backend)."""

    def __init__(self, device: Device, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        subprocess.CalledProcessError.__init__(self, returncode, list(argv), stdout, stderr)
        RemoteError.__init__(self, device, f"{' '.join(map(str, argv))[:200]} exited {returncode}",
                             (stderr or stdout or "")[-2000:])


def _quote(argv: Argv) -> str:
    return argv if isinstance(argv, str) else " ".join(shlex.quote(str(a)) for a in argv)


class RemoteProcess(subprocess.Popen):
    """``subprocess.Popen`` of an ssh client running one remote command.

    Pipes behave as with a local process (ssh forwards them). Signals go to
    the remote process group (its pid is read back from the device) and then
    to the local client, so ``terminate()`` stops the remote service too.
    """

    def __init__(self, transport: "Transport", device: Device, argv: Sequence[str], pidfile: str,
                 ssh_argv: list[str], **kw: Any) -> None:
        self.transport, self.device, self.remote_argv, self.pidfile = transport, device, list(argv), pidfile
        kw.setdefault("start_new_session", True)
        super().__init__(ssh_argv, **kw)

    def send_signal(self, sig: int) -> None:
        if self.poll() is not None:
            return
        self.transport.signal_remote(self.device, self.pidfile, sig)
        if sig == signal.SIGKILL:   # the client would otherwise wait for a channel close
            super().send_signal(sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Transport:
    """SSH to the devices of an :class:`Inventory`; see the module docstring.

    Thread-safe; use :meth:`close` (or a ``with`` block) to stop remote
    processes and the ssh control masters.
    """

    def __init__(self, inventory: Inventory, *, workers: int = 16, ssh: str = "ssh", scp: str = "scp") -> None:
        # execo's conductor installs a signal wakeup fd when execo is first imported, which only
        # the main thread may do (execo/conductor.py: signal.set_wakeup_fd): import it here, not
        # in the worker threads that run_many uses.
        _execo()
        self.inventory = inventory
        self.workers = workers
        self._ssh, self._scp = ssh, scp
        # Short path: unix socket paths are limited to ~104 bytes; %C is a 40-hex hash of the target.
        self._ctl = tempfile.mkdtemp(prefix="elssh-", dir="/tmp")
        self._lock = threading.Lock()
        self._procs: list[RemoteProcess] = []
        self._seq = 0
        self._pythonpath: dict[str, str] = {}   # device name -> PYTHONPATH of the installed edgelab
        self._started_on: set[str] = set()       # devices that ran a popen (teardown kills their pids)
        self.installed: dict[str, str] = {}     # device name -> installed edgelab digest
        self._closed = False

    # ------------------------------------------------------------ building
    def device(self, node: str) -> Device:
        return self.inventory.device(node)

    def connection_params(self, d: Device) -> dict:
        """execo connection parameters for ``d`` (no ``-tt``: pipes stay binary-clean)."""
        opts = ["-o", "BatchMode=yes", "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
                "-o", f"ConnectTimeout={max(1, int(round(d.connect_timeout_s)))}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                # curve25519 first: OpenSSH 9's default hybrid sntrup761 KEX costs ~0.1 s of CPU per
                # connection, which is what a 20-device bring-up on a small machine pays for.
                "-o", "KexAlgorithms=^curve25519-sha256,curve25519-sha256@libssh.org",
                "-o", "GSSAPIAuthentication=no",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self._ctl}/%C", "-o", "ControlPersist=300",
                "-o", f"StrictHostKeyChecking={self.inventory.strict_host_keys}", "-o", "LogLevel=ERROR"]
        if self.inventory.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={self.inventory.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if d.identity_file:
            opts += ["-o", "IdentitiesOnly=yes"]
        scp_opts = opts + ["-r", "-p"]
        return {"user": d.user, "keyfile": d.identity_file, "port": d.port, "ssh": self._ssh, "scp": self._scp,
                "ssh_options": tuple(opts), "scp_options": tuple(scp_opts)}

    def host(self, d: Device):
        return _execo().Host(d.host, user=d.user, keyfile=d.identity_file, port=d.port)

    def ssh_argv(self, d: Device, remote_command: str) -> list[str]:
        """The full local argv (execo's ssh command builder) that runs ``remote_command`` on ``d``."""
        _execo()
        from execo.ssh_utils import get_ssh_command

        return list(get_ssh_command(d.user, d.identity_file, d.port, self.connection_params(d))) + [d.host,
                                                                                                     remote_command]

    def remote_command(self, d: Device, argv: Argv, *, sudo: bool = False, env: Optional[Mapping[str, str]] = None,
                       pidfile: Optional[str] = None, confine: bool = False) -> str:
        """The shell command line run on ``d``: environment, interpreter, sudo, pid record, cgroup.

        ``confine``: the command joins the device's node cgroup (:attr:`Device.cgroup`, when not
        ``/``) first, so its CPU time is the node's and the node's quota applies; edgelab's own
        machinery (link emulation, CPU reads, preflight) runs unconfined, as on the local backend.
        """
        if not isinstance(argv, str):
            argv = [d.python if i == 0 and a in PYTHON_WORDS else a for i, a in enumerate(argv)]
        envs = dict(env or {})
        if d.name in self._pythonpath:
            envs.setdefault("PYTHONPATH", self._pythonpath[d.name])
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in envs.items())
        if isinstance(argv, str):   # a shell script: run as is, after the set-up steps
            run = (f"export {prefix}; " if prefix else "") + argv
        else:                       # an argv: the shell becomes it (same pid, same process group)
            run = "exec " + (f"env {prefix} " if prefix else "") + _quote(argv)
        steps = []
        if pidfile:
            steps.append(f"mkdir -p {shlex.quote(os.path.dirname(pidfile))} && echo $$ > {shlex.quote(pidfile)}")
        if confine and d.cgroup != "/":
            cg = d.cgroup.rstrip("/")
            steps.append(f"for f in /sys/fs/cgroup{cg}/cgroup.procs /sys/fs/cgroup/*{cg}/cgroup.procs; do "
                         f"[ -w \"$f\" ] && echo $$ > \"$f\"; done")
        body = "; ".join(steps + [run]) if steps or isinstance(argv, str) else _quote(argv) if not prefix else run
        if sudo and d.sudo and d.user != "root":
            body = f"sudo -n sh -c {shlex.quote(body)}"
        elif steps or isinstance(argv, str) or prefix:
            body = f"sh -c {shlex.quote(body)}"
        return body

    # ------------------------------------------------------------ commands
    def run(self, node: str, argv: Argv, *, timeout: Optional[float] = None, check: bool = True,
            sudo: bool = False, env: Optional[Mapping[str, str]] = None,
            input: Optional[str] = None, confine: bool = False, **_: Any) -> subprocess.CompletedProcess:
        """Run ``argv`` on ``node``'s device to completion (execo ``SshProcess``), text output captured.

        Raises :class:`RemoteError` when ssh cannot reach the device and
        :class:`RemoteCommandError` when ``check`` and the command fails.
        """
        return self.run_device(self.device(node), argv, timeout=timeout, check=check, sudo=sudo, env=env,
                               input=input, confine=confine)

    def run_device(self, d: Device, argv: Argv, *, timeout: Optional[float] = None, check: bool = True,
                   sudo: bool = False, env: Optional[Mapping[str, str]] = None,
                   input: Optional[str] = None, confine: bool = False) -> subprocess.CompletedProcess:
        cmd = self.remote_command(d, argv, sudo=sudo, env=env, confine=confine)
        shown = argv if isinstance(argv, str) else list(map(str, argv))
        if input is not None:   # execo processes have no stdin: the same execo-built ssh argv, fed by subprocess
            try:
                r = subprocess.run(self.ssh_argv(d, cmd), input=input, capture_output=True, text=True,
                                   timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RemoteError(d, f"{_quote(argv)[:200]} did not finish within {timeout:g} s") from None
            rc, out, err = r.returncode, r.stdout, r.stderr
        else:
            p = _execo().SshProcess(cmd, self.host(d), connection_params=self.connection_params(d), timeout=timeout,
                                 ignore_exit_code=True, nolog_exit_code=True, ignore_timeout=True,
                                 nolog_timeout=True, ignore_error=True, nolog_error=True)
            p.run()
            if p.timeouted:
                raise RemoteError(d, f"{_quote(argv)[:200]} did not finish within {timeout:g} s", p.stderr or "")
            if p.error:
                raise RemoteError(d, "cannot start ssh", str(p.error_reason))
            rc, out, err = _exit_status(p.exit_code), p.stdout, p.stderr
        if rc == SSH_FAILED and _looks_like_ssh_failure(err):
            raise RemoteError(d, "ssh failed", err)
        if check and rc != 0:
            raise RemoteCommandError(d, shown if isinstance(shown, list) else [shown], rc, out, err)
        return subprocess.CompletedProcess(shown, rc, out, err)

    def run_many(self, commands: Mapping[str, Argv], *, timeout: Optional[float] = None, check: bool = True,
                 sudo: bool = False) -> dict[str, Union[subprocess.CompletedProcess, RemoteError]]:
        """Run one command per node, all at once; returns each result or the error it raised.

        Nothing is raised here: callers decide (bring-up rolls back the nodes
        that succeeded, preflight tabulates every failure).
        """
        def one(node: str) -> Union[subprocess.CompletedProcess, RemoteError]:
            try:
                return self.run(node, commands[node], timeout=timeout, check=check, sudo=sudo)
            except RemoteError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(commands)))) as ex:
            return dict(zip(commands, ex.map(one, list(commands))))

    def popen(self, node: str, argv: Sequence[str], *, sudo: bool = False, env: Optional[Mapping[str, str]] = None,
              confine: bool = False, **kw: Any) -> RemoteProcess:
        """Start a long-running command; pipes as ``subprocess.Popen``; stopped by :meth:`kill_all`."""
        d = self.device(node)
        with self._lock:
            if self._closed:
                raise BackendError("the transport is closed")
            self._seq += 1
            pidfile = f"{d.workdir}/pids/{os.getpid()}-{self._seq}"
        cmd = self.remote_command(d, argv, sudo=sudo, env=env, pidfile=pidfile, confine=confine)
        kw.pop("preexec_fn", None)
        p = RemoteProcess(self, d, argv, pidfile, self.ssh_argv(d, cmd), **kw)
        with self._lock:
            self._procs.append(p)
            self._started_on.add(d.name)
        return p

    def signal_remote(self, d: Device, pidfile: str, sig: int) -> None:
        """Signal the process group recorded in ``pidfile`` on ``d`` (best effort: it may be gone)."""
        num = int(sig)
        q = shlex.quote(pidfile)
        script = (f"p=$(cat {q} 2>/dev/null) && [ -n \"$p\" ] && "
                  f"{{ kill -{num} -- -$p 2>/dev/null || kill -{num} $p 2>/dev/null; }}; true")
        try:
            self.run_device(d, script, timeout=10, check=False, sudo=True)
        except RemoteError:
            pass

    def kill_all(self, grace: float = 3.0) -> None:
        """Stop every process started with :meth:`popen` (TERM, then KILL), here and on the devices."""
        with self._lock:
            procs = [p for p in self._procs if p.poll() is None]
        for p in procs:
            p.terminate()
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    subprocess.Popen.kill(p)
                    p.wait()
        # Anything recorded by this controller process whose ssh client is already gone.
        mine = f"{os.getpid()}-"
        cmds = {}
        for name in self._started_on:
            d = self.inventory.devices[name]
            pids = shlex.quote(f"{d.workdir}/pids")
            cmds[d.node] = (f"for f in {pids}/{mine}*; do [ -f \"$f\" ] || continue; p=$(cat \"$f\"); "
                            f"kill -9 -- -$p 2>/dev/null || kill -9 $p 2>/dev/null; rm -f \"$f\"; done; true")
        if cmds:
            self.run_many(cmds, timeout=15, check=False, sudo=True)
        with self._lock:
            self._procs.clear()
            self._started_on.clear()

    # --------------------------------------------------------------- files
    def put(self, node: str, local_files: Sequence[str], remote_dir: str, *, timeout: float = 120.0) -> None:
        """Copy local files/directories into ``remote_dir`` on the node's device (execo ``Put``)."""
        execo = _execo()
        d = self.device(node)
        self.run_device(d, ["mkdir", "-p", remote_dir], timeout=timeout)
        a = execo.Put([self.host(d)], list(local_files), remote_dir, connection_params=self.connection_params(d))
        _run_action(a, d, f"copying {', '.join(map(str, local_files))} to {remote_dir}", timeout)

    def get(self, node: str, remote_files: Sequence[str], local_dir: Union[str, os.PathLike], *,
            timeout: float = 120.0) -> None:
        """Copy files/directories from the node's device into ``local_dir`` (execo ``Get``)."""
        execo = _execo()
        d = self.device(node)
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        a = execo.Get([self.host(d)], list(remote_files), str(local_dir), connection_params=self.connection_params(d))
        _run_action(a, d, f"copying {', '.join(remote_files)} back", timeout)

    # ----------------------------------------------------------- edgelab
    def install_edgelab(self, nodes: Sequence[str], *, timeout: float = 120.0) -> dict[str, str]:
        """Put this edgelab's package on each node's device (once per content digest) and use it.

        The package is pure Python; the device's interpreter must provide the
        node-side dependencies (the preflight checks). Returns device -> digest.
        """
        blob, digest = edgelab_tarball()
        devices = {self.device(n).name: self.device(n) for n in nodes}

        def one(d: Device) -> Optional[RemoteError]:
            target = f"{d.workdir}/edgelab-{digest}"
            try:
                probe = self.run_device(d, f"test -f {shlex.quote(target)}/.complete && echo present || true",
                                        timeout=timeout)
                if "present" not in probe.stdout:
                    script = (f"set -e; mkdir -p {shlex.quote(target)}; cd {shlex.quote(target)}; "
                              f"tar -xzf -; touch .complete")
                    cmd = self.remote_command(d, script)
                    r = subprocess.run(self.ssh_argv(d, cmd), input=blob, capture_output=True, timeout=timeout)
                    if r.returncode != 0:
                        raise RemoteError(d, "installing edgelab failed", r.stderr.decode(errors="replace"))
            except subprocess.TimeoutExpired:
                return RemoteError(d, f"installing edgelab took over {timeout:g} s")
            except RemoteError as exc:
                return exc
            with self._lock:
                self._pythonpath[d.name] = target
                self.installed[d.name] = digest
            return None

        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(devices)))) as ex:
            errors = [e for e in ex.map(one, devices.values()) if e is not None]
        if errors:
            raise BackendError("; ".join(str(e) for e in errors))
        return dict(self.installed)

    # ------------------------------------------------------------- CPU
    def cpu_seconds(self, node: str, *, timeout: float = 10.0) -> float:
        """Cumulative CPU seconds of the node's cgroup (:attr:`Device.cgroup`) on its device."""
        d = self.device(node)
        r = self.run_device(d, cpu_read_script(d.cgroup), timeout=timeout, check=False)
        return parse_cpu_read(d, r.stdout, r.stderr)

    def cpu_accounting_dir(self, node: str, *, timeout: float = 10.0) -> str:
        """The directory *on the device* that holds its cgroup's CPU counter (for a modelled plug there)."""
        d = self.device(node)
        r = self.run_device(d, cpu_read_script(d.cgroup, print_dir=True), timeout=timeout, check=False)
        lines = r.stdout.split()
        if r.returncode != 0 or not lines:
            parse_cpu_read(d, r.stdout, r.stderr)   # raises the clear error
        return lines[0]

    # ------------------------------------------------------------ facts
    def facts(self, nodes: Sequence[str], *, timeout: float = 15.0) -> dict[str, dict]:
        """Per node: kernel, CPU model, cores, memory, OS of its device (in parallel)."""
        res = self.run_many({n: FACTS_SCRIPT for n in nodes}, timeout=timeout, check=False)
        out = {}
        for n, r in res.items():
            d = self.device(n)
            base = {"device": d.name, "host": d.host, "port": d.port, "user": d.user}
            if isinstance(r, RemoteError):
                out[n] = {**base, "error": str(r)}
            else:
                out[n] = {**base, **parse_facts(r.stdout)}
        return out

    # ---------------------------------------------------------- closing
    def close(self) -> None:
        """Stop remote processes and the control masters; idempotent."""
        with self._lock:
            if self._closed:
                return
        try:
            self.kill_all()
        finally:
            self.detach()

    def detach(self) -> None:
        """Close the control masters and forget the processes, leaving them running on the devices."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        from execo.ssh_utils import get_ssh_command

        for d in self.inventory.devices.values():
            argv = list(get_ssh_command(d.user, d.identity_file, d.port, self.connection_params(d)))
            try:
                subprocess.run(argv + ["-O", "exit", d.host], capture_output=True, timeout=10)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self._ctl, ignore_errors=True)

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def teardown(transport: Transport, clear: Callable[[], list[str]]) -> list[str]:
    """What every remote testbed's ``down`` does, in order: stop what it started on the nodes,
    ``clear()`` what it set up there (returns problems, raises nothing), close the connections.
    Returns the problems met, so the testbed can name them all in one error."""
    problems: list[str] = []
    try:
        transport.kill_all()
    except BackendError as exc:
        problems.append(str(exc))
    problems += clear()
    transport.close()
    return problems


def _exit_status(raw: Optional[int]) -> int:
    """execo 2.8 reports ``os.waitpid``'s raw status (exit 3 -> 768): the exit code, or -signal."""
    if raw is None:
        return -1
    try:
        return os.waitstatus_to_exitcode(raw)
    except ValueError:
        return raw


def _looks_like_ssh_failure(stderr: str) -> bool:
    s = (stderr or "").lower()
    return any(w in s for w in ("ssh:", "permission denied", "connection", "host key", "could not resolve",
                                "timed out", "no route", "kex_", "banner"))


def _run_action(action: Any, d: Device, what: str, timeout: float) -> None:
    for p in action.processes:   # quiet: the failure is reported once, naming the node
        p.ignore_exit_code = p.nolog_exit_code = p.ignore_error = p.nolog_error = True
        p.ignore_timeout = p.nolog_timeout = True
    action.run(timeout=timeout)
    if not all(p.exit_code == 0 and not p.error and not p.timeouted for p in action.processes):
        p = action.processes[0] if action.processes else None
        detail = (p.stderr if p is not None else "") or (str(p.error_reason) if p is not None and p.error else "")
        if p is not None and p.timeouted:
            raise RemoteError(d, f"{what} timed out", detail)
        raise RemoteError(d, f"{what} failed", detail)


# ------------------------------------------------------------------- helpers
_TARBALL: dict[str, tuple[bytes, str]] = {}


def edgelab_tarball() -> tuple[bytes, str]:
    """This edgelab package as a gzipped tar (sources only) and its short content digest."""
    key = str(_PKG_DIR)
    if key in _TARBALL:
        return _TARBALL[key]
    files = sorted(p for p in _PKG_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix not in (".pyc", ".so"))
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(_PKG_DIR.parent)).encode())
        h.update(f.read_bytes())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for f in files:
            info = tar.gettarinfo(str(f), arcname=str(f.relative_to(_PKG_DIR.parent)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(f, "rb") as fh:
                tar.addfile(info, fh)
    out = (buf.getvalue(), h.hexdigest()[:16])
    _TARBALL[key] = out
    return out


def cpu_read_script(cgroup: str, print_dir: bool = False) -> str:
    """POSIX sh: print ``v2 <usage_usec>`` or ``v1 <ns>`` for ``cgroup`` (or its directory), else fail.

    Looks where cgroup v2 (``/sys/fs/cgroup``, or ``/sys/fs/cgroup/unified``
    on hybrid systems) and v1 (``cpuacct``, ``cpu,cpuacct``) put the counter.
    """
    cg = shlex.quote(cgroup.rstrip("/"))
    emit = 'echo "$d"' if print_dir else None
    v2 = emit or "sed -n 's/^usage_usec /v2 /p' \"$d/cpu.stat\""
    v1 = emit or "echo v1 $(cat \"$d/cpuacct.usage\")"
    return (f"c={cg}; for r in /sys/fs/cgroup /sys/fs/cgroup/unified; do d=$r$c; "
            f"if [ -f \"$d/cpu.stat\" ] && grep -q '^usage_usec ' \"$d/cpu.stat\"; then {v2}; exit 0; fi; done; "
            f"for r in /sys/fs/cgroup/cpuacct /sys/fs/cgroup/cpu,cpuacct /sys/fs/cgroup/cpuacct,cpu; do d=$r$c; "
            f"if [ -f \"$d/cpuacct.usage\" ]; then {v1}; exit 0; fi; done; "
            f"echo \"no cgroup CPU accounting for cgroup $c (no cpu.stat usage_usec, no cpuacct.usage)\" >&2; exit 3")


def parse_cpu_read(d: Device, stdout: str, stderr: str) -> float:
    words = stdout.split()
    if len(words) >= 2 and words[0] in ("v1", "v2"):
        try:
            v = int(words[1])
        except ValueError:
            pass
        else:
            return v / 1e6 if words[0] == "v2" else v / 1e9
    raise RemoteError(d, "no cgroup CPU accounting (enable CONFIG_CGROUP_CPUACCT or the cgroup v2 cpu "
                         "controller, or set `cgroup:` in the inventory)", stderr or stdout)


#: Device facts, one ``key=value`` per line; POSIX sh + /proc only (busybox on postmarketOS has these).
FACTS_SCRIPT = (
    "echo kernel=$(uname -r); echo arch=$(uname -m); echo hostname=$(uname -n); "
    "echo cores=$(grep -c ^processor /proc/cpuinfo); "
    "echo cpu_model=$(grep -m1 -E '^(model name|Hardware|Model|cpu model)' /proc/cpuinfo | cut -d: -f2-); "
    "echo mem_kib=$(awk '/^MemTotal:/{print $2}' /proc/meminfo); "
    "[ -r /etc/os-release ] && . /etc/os-release && echo os=$PRETTY_NAME; "
    "echo python=$(python3 -c 'import sys;print(sys.version.split()[0])' 2>/dev/null); true")


def parse_facts(text: str) -> dict:
    out: dict[str, Any] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    for k in ("cores", "mem_kib"):
        if str(out.get(k, "")).isdigit():
            out[k] = int(out[k])
    if isinstance(out.get("mem_kib"), int):
        out["memory_mib"] = out.pop("mem_kib") // 1024
    return out
