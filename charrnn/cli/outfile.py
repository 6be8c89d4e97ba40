"""Writing a file where the user asked for it (`charrnn sample --output FILE`); the command checks
first that it is none of its inputs (userfiles.refuse_input).

Unlike the run directory's files, the target may be anything a user can name: a new path, an existing
file (maybe a symlink to one, maybe read-only, maybe private), a FIFO, /dev/stdout or the /dev/fd/N of a
shell's `>(...)`. Regular files are replaced atomically; streams are written into, never renamed over.
"""
import errno
import os
import re
import stat
from pathlib import Path

from ..checkpoints.npz import atomic_write
from ..userfiles import utf8

_STD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def _own_fd(p: Path) -> int | None:
    """N when p names this process's descriptor N (/dev/stdin|stdout|stderr, /dev/fd/N, /proc/self/fd/N)."""
    if os.name != "posix":
        return None
    a = os.path.abspath(p)
    if a in _STD:
        return _STD[a]
    m = re.fullmatch(rf"/dev/fd/(\d+)|/proc/(?:self|{os.getpid()})/fd/(\d+)", a)
    return int(m.group(1) or m.group(2)) if m else None


def write_user_file(path: str | os.PathLike, text: str | bytes) -> None:
    """Write text (UTF-8, a lone surrogate escaped; or bytes as they are, e.g. a PNG) to path.

    A regular file, or a path that does not exist yet, is replaced atomically (through a symlink: its
    target is replaced and the link kept), keeping an existing file's permission bits; a file this
    process may not write, or whose write bits are all off, is refused (PermissionError: root could
    rename over it, but the user marked it read-only). A path naming one of this process's descriptors
    (/dev/stdout, /dev/fd/N) is written through that descriptor, at its own offset, whatever it is;
    anything else that is not a regular file (a FIFO, a device) is opened and written in place:
    renaming over it would replace the stream with a plain file. OSError on any problem
    (IsADirectoryError for a directory)."""
    p = Path(path)
    data = utf8(text) if isinstance(text, str) else bytes(text)
    fd = _own_fd(p)
    if fd is not None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        return
    try:
        st = os.stat(p)  # follows symlinks
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "it is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(p, "ab") as f:
            f.write(data)
        return
    if st is not None and (not st.st_mode & 0o222 or not os.access(p, os.W_OK)):
        raise PermissionError(errno.EACCES, "the file is read-only")
    target = Path(os.path.realpath(p)) if p.is_symlink() else p
    atomic_write(target, lambda f: f.write(data), None if st is None else stat.S_IMODE(st.st_mode))
