"""Files that root writes: only in directories no other user controls.

Root writing ``<dir>/x.tmp`` or appending to ``<dir>/x.log`` follows a
symlink that whoever owns ``<dir>`` planted there, so a fixed directory in
``/tmp`` would let any local user make root overwrite any file. Every
directory root writes into is therefore created here with ``mkdir`` (which
fails on anything already there, a symlink included) or, if it exists,
accepted only when it is a real directory owned by us and writable by no one
else; files are opened with ``O_NOFOLLOW`` (temporary ones also ``O_EXCL``)
and checked to be regular files after opening.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import EdgelabError


class UnsafePathError(EdgelabError):
    """A directory or file that someone else could control."""


def _check_dir(path: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{path} exists and is not a directory (a symlink?); refusing to write there")
    if st.st_uid != os.geteuid():
        raise UnsafePathError(f"{path} is owned by uid {st.st_uid}, not by us (uid {os.geteuid()}); someone "
                              "else could plant symlinks there: remove it or choose another directory")
    if st.st_mode & 0o022:
        raise UnsafePathError(f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                              "refusing to write there")


def secure_dir(path: str | Path, mode: int = 0o755) -> Path:
    """Create ``path`` (its parent must exist and be safe) or accept it only if it is ours alone.

    The parent must not let others replace ``path``: it is either not writable
    by others, or sticky (as /tmp), in which case only ``path``'s owner, us,
    can rename or remove it.
    """
    p = Path(path)
    parent = p.parent
    pst = os.stat(parent)  # the parent itself may be a symlink (/var/run -> /run): it is not ours to judge
    if pst.st_mode & 0o002 and not pst.st_mode & stat.S_ISVTX:
        raise UnsafePathError(f"{parent} is writable by everyone and not sticky: {p} could be replaced")
    try:
        os.mkdir(p, mode)
    except FileExistsError:
        pass
    _check_dir(p, os.lstat(p))
    return p


def create_exclusive(path: str | Path, mode: int = 0o644, dir_mode: int = 0o755) -> None:
    """Claim ``path``: create it empty, in a directory :func:`secure_dir` accepts, failing
    with FileExistsError where it exists (another run's, or a crashed run's, record).

    The directory is shared and removed by whichever record leaves it last
    (:func:`remove_record`), possibly between our mkdir and our open: then again.
    """
    p = Path(path)
    for attempt in range(5):
        try:
            secure_dir(p.parent, dir_mode)
            os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode))
            return
        except FileNotFoundError:
            if attempt == 4:
                raise


def write_atomic(path: str | Path, data: str | bytes, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: a fresh temporary file (O_EXCL|O_NOFOLLOW), fsync, rename.

    ``durable=False`` skips the fsync, for records of what only lives until the machine
    stops (a local testbed's namespaces, cgroups, qdiscs): they must outlive a crash of the
    *process*, which the page cache and the atomic rename already give; a power loss takes
    the objects they describe with it. On a disk-backed /run each fsync is a journal commit
    (~0.7 ms here), and bring-up writes a hundred such records.
    """
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove_interrupted_saves(path: str | Path) -> None:
    """Delete the temporary files :func:`write_atomic` leaves beside ``path`` when a SIGKILL
    interrupts a save (``.<name>.<pid>.<random>.tmp``). A directory that another process
    removed meanwhile is not an error: pathlib's glob checks the directory, then lists it, and
    raised FileNotFoundError when another testbed's teardown removed it in between."""
    p = Path(path)
    prefix, suffix = f".{p.name}.", ".tmp"
    try:
        names = os.listdir(p.parent)
    except FileNotFoundError:
        return
    for name in names:
        if name.startswith(prefix) and name.endswith(suffix):
            try:
                os.unlink(p.parent / name)
            except FileNotFoundError:
                pass


def remove_record(path: str | Path) -> None:
    """Delete a record ``write_atomic`` kept, its interrupted saves, and its directory once no
    other record is there.

    The directory is shared by every testbed on the host (``/run/edgelab``), so another
    process may remove it at any moment, between any two of these steps: a vanished
    directory is not an error here.
    """
    p = Path(path)
    p.unlink(missing_ok=True)
    remove_interrupted_saves(p)
    try:
        os.rmdir(p.parent)
    except OSError:
        pass   # another record is still there, or another process removed it first


def open_append(path: str | Path, mode: int = 0o644) -> int:
    """A file descriptor appending to ``path`` (created if missing), never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafePathError(f"{path} is not a regular file of ours; refusing to append to it")
    return fd


def read_own(path: str | Path, max_bytes: int = 64 << 20) -> bytes:
    """Read ``path`` only if it is a regular file owned by us (or root), never through a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (os.geteuid(), 0):
            raise UnsafePathError(f"{path} is not a regular file owned by us or root; refusing to read it")
        if st.st_size > max_bytes:
            raise UnsafePathError(f"{path} is {st.st_size} bytes, more than the {max_bytes} expected")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(max_bytes + 1)
    finally:
        os.close(fd)
