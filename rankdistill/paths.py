"""Checks on the paths a command reads and writes, made once at the entry, before any work.

- :func:`input_path`: a path to read exists, is no symbolic-link loop and can be read.
- :func:`output_dir` / :func:`output_file`: a path to write is not a file where a directory is wanted (or
  the reverse), not the working directory or one above it, and its nearest existing folder accepts new
  files (a read-only folder or file system, ``/proc``, a full quota are found here, not after training).
- :func:`writing`: turns an operating-system error while writing (no space left, read-only, permission),
  also when torch re-raises it as a RuntimeError, into one :class:`RankdistillError` naming the path.
- :func:`atomic_write_text`: a text file written to a temporary sibling and renamed into place; the
  temporary is removed on every failure.

Every refusal is a :class:`RankdistillError` naming the path, the problem and what to do.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rankdistill.errors import RankdistillError

# errors of the environment, not of rankdistill: full disk, quota, read-only, permission, loops, missing
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
ENVIRONMENT_ERRNOS = (*_DISK_FULL, errno.EROFS, errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENAMETOOLONG,
                      errno.EIO, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST)


# what the command line reports as one error line wherever it happens (a full disk, a read-only folder)
UNEXPECTED_ERRNOS = (*_DISK_FULL, errno.EROFS, errno.EACCES, errno.EPERM, errno.ELOOP)


def os_error_behind(e: BaseException) -> OSError | None:
    """``e`` when it is an OSError, else the OSError it was raised while handling (or from), if any.

    torch.save on a full disk raises RuntimeError("... unexpected pos ...") while handling the OSError of the
    write that failed; the OSError is the cause a user can act on."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def environment_error(e: BaseException) -> RankdistillError | None:
    """The user-facing error of an OSError the environment caused (disk full, read-only, permission, link
    loop) that no check caught earlier, also behind torch's RuntimeError; None for any other error, which
    stays a bug with its traceback."""
    e = os_error_behind(e)
    if e is None or e.errno not in UNEXPECTED_ERRNOS:
        return None
    where = f" {e.filename}" if e.filename else ""
    fix = "free some space or write elsewhere" if e.errno in _DISK_FULL else "check the path and its permissions"
    return RankdistillError(f"cannot use{where}: {describe_os_error(e)}; {fix}")


def describe_os_error(e: OSError) -> str:
    """'no space left on device' for ENOSPC, the system's words otherwise (lower case)."""
    if e.errno in _DISK_FULL:
        return "no space left on device"
    return (e.strerror or str(e)).lower()


def _resolve(path: Path, what: str) -> Path:
    """``path`` with its symbolic links resolved; a loop is refused."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:  # Python 3.11 raises RuntimeError("Symlink loop ..."), 3.13 OSError
        if isinstance(e, OSError) and e.errno != errno.ELOOP:
            raise RankdistillError(f"{what} {path}: {describe_os_error(e)}") from None
        raise RankdistillError(f"{what} {path} is a symbolic link loop (it points back to itself); "
                               "point it at a real file or folder") from None


def input_path(path: str | Path, what: str = "data path") -> Path:
    """The absolute, resolved ``path`` to read; refused when missing, a link loop, or unreadable."""
    path = Path(path).expanduser()
    resolved = _resolve(path, what)
    if not resolved.exists():
        raise RankdistillError(f"{what} {path} does not exist")
    if not os.access(resolved, os.R_OK) or (resolved.is_dir() and not os.access(resolved, os.X_OK)):
        raise RankdistillError(f"{what} {path} cannot be read (permission denied); "
                               "make it readable for this user (chmod) or copy it somewhere readable")
    return resolved


def _is_working_directory_or_above(path: Path) -> bool:
    cwd = Path.cwd().resolve()
    return path == cwd or path in cwd.parents


def _nearest_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path("/")


def _check_can_create_in(folder: Path, option: str, out: Path) -> None:
    """Create and remove an empty folder in ``folder``: the real test, for root as for anyone."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".rankdistill-probe-", dir=folder))
    except OSError as e:
        raise RankdistillError(f"{option} {out}: cannot create files in {folder} ({describe_os_error(e)}); "
                               "choose a directory you can write to") from None


def _check_parents_are_folders(out: Path, option: str) -> None:
    existing = _nearest_existing(out.parent)
    if not existing.is_dir():
        raise RankdistillError(f"{option} {out}: {existing} is a file, not a folder; choose another path")


def output_dir(path: str | Path, option: str = "--out", replaces: bool = True) -> Path:
    """The absolute directory ``path`` a command will write into (``replaces``: and replace as a whole,
    as a model directory is), checked before any work; refusals name the problem and what to do."""
    given = Path(path).expanduser()
    out = _resolve(given, option)
    if replaces and _is_working_directory_or_above(out):
        raise RankdistillError(f"{option} {given} is the working directory{'' if out == Path.cwd().resolve() else ' or a folder above it'}, "
                               "which a model directory would replace; name a new directory such as ./model")
    if out.exists() and not out.is_dir():
        raise RankdistillError(f"{option} {given} is a file; name a directory")
    _check_parents_are_folders(out, option)
    if out.exists():
        _check_can_create_in(out, option, given)
    if replaces or not out.exists():
        _check_can_create_in(_nearest_existing(out.parent), option, given)
    return out


def output_file(path: str | Path, option: str = "--out") -> Path:
    """The absolute file ``path`` a command will write (replacing it), checked before any work."""
    given = Path(path).expanduser()
    out = _resolve(given, option)
    if out.is_dir():
        raise RankdistillError(f"{option} {given} is a folder; name a file")
    _check_parents_are_folders(out, option)
    _check_can_create_in(_nearest_existing(out.parent), option, given)
    return out


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """An OSError of the environment inside the block becomes a RankdistillError naming ``path``."""
    try:
        yield
    except (OSError, RuntimeError) as raised:
        e = os_error_behind(raised)
        if e is None or e.errno not in ENVIRONMENT_ERRNOS:
            raise
        where = e.filename or path
        fix = "free some space or write elsewhere" if e.errno in _DISK_FULL else "write elsewhere"
        raise RankdistillError(f"cannot write {where}: {describe_os_error(e)}; {fix}") from None


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling renamed into place (removed on any failure)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with writing(path):
        try:
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path
