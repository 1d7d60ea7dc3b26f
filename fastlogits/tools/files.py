"""Output files written safely, and the check that outputs name no input.

Every file the command line writes goes through :class:`AtomicOutput`: a
temporary created exclusively (``tempfile.mkstemp``: ``O_CREAT | O_EXCL |
O_NOFOLLOW`` under a random name) in the final file's directory, so a link
planted there by someone else is never followed; given the permissions a
plain ``open()`` would give the final file (``0o666 & ~umask``; mkstemp
makes 0o600); written through its descriptor; renamed over the final name
(``os.replace``, atomic) only when complete; removed on any failure or
KeyboardInterrupt. Errors name the path the user gave, never the temporary.
"""

import os
import tempfile

__all__ = ["WriteError", "AtomicOutput", "write_atomic", "check_distinct", "umask"]


class WriteError(OSError):
    """An output that cannot be written; the message names the user's path."""


def umask():
    """The process's umask (read from /proc where it can be, since setting it
    to read it back is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _name(what, path):
    return f"{what} {path!r}" if what else repr(path)


class AtomicOutput:
    """One output file, written under an exclusive temporary beside ``path``.

    Use as a context manager (commits on success, aborts on any exception)
    or call :meth:`commit` / :meth:`abort` yourself.

    Parameters
    ----------
    path : str or os.PathLike
        The final file.
    what : str, optional
        How errors name the output, e.g. ``"--labels"``.

    Attributes
    ----------
    file : binary file object
        Buffered writes to the temporary (its descriptor is ``file.fileno()``).
    temp : str
        The temporary's path (random; for writers that must open by name).

    Raises
    ------
    WriteError
        If the temporary cannot be created in ``path``'s directory.
    """

    def __init__(self, path, what=None):
        self.path, self.what = os.fspath(path), what
        d, base = os.path.split(os.path.abspath(self.path))
        ext = os.path.splitext(base)[1]
        # the extension last: writers that infer the format from the name
        # (matplotlib's savefig) see the final file's
        with self._errors():
            fd, self.temp = tempfile.mkstemp(prefix=f".{base[:80]}.", suffix=f".fastlogits-tmp{ext}",
                                             dir=d)
        try:
            with self._errors():
                os.fchmod(fd, 0o666 & ~umask())
            self.file = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(self.temp)
            raise

    def _errors(self):
        return _Reraise(self)

    def pwrite(self, data, offset):
        """Write all of the bytes-like ``data`` at ``offset`` (unbuffered)."""
        mv = memoryview(data).cast("B")
        with self._errors():
            while len(mv):
                n = os.pwrite(self.file.fileno(), mv, offset)
                mv, offset = mv[n:], offset + n

    def commit(self):
        """Close the temporary and rename it over the final name."""
        try:
            with self._errors():
                self.file.close()
                os.replace(self.temp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self):
        """Close and remove the temporary (the final file is untouched)."""
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is None:
            self.commit()
        else:
            self.abort()
        return False


class _Reraise:
    """Turns an OSError into a :class:`WriteError` naming the user's path
    (an OSError's own filename would be the temporary's)."""

    def __init__(self, out):
        self.out = out

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, OSError) and not isinstance(exc, WriteError):
            reason = exc.strerror or str(exc)
            err = WriteError(f"cannot write {_name(self.out.what, self.out.path)}: {reason}")
            err.errno = exc.errno  # one argument: str(err) is the message alone
            raise err from None
        return False


def write_atomic(path, write, what=None):
    """Call ``write(f)`` with a binary file that becomes ``path`` only if
    ``write`` returns; see :class:`AtomicOutput`."""
    with AtomicOutput(path, what) as out:
        with out._errors():
            write(out.file)


def _identity(path):
    """The resolved path and, for an existing file, its (st_dev, st_ino)."""
    try:
        st = os.stat(path)
        ident = (st.st_dev, st.st_ino)
    except OSError:
        ident = None
    return os.path.realpath(path), ident


def check_distinct(outputs, inputs=()):
    """Refuse outputs that name an input or each other.

    Two paths name the same file when they resolve to the same path
    (symlinks followed) or, for existing files, share (st_dev, st_ino)
    (hard links too). Linear in the number of paths (a dataset's maps).

    Parameters
    ----------
    outputs, inputs : iterable of (str, path or None)
        ``(option, path)`` pairs; a None path is skipped.

    Raises
    ------
    ValueError
        Naming both options and paths.
    """
    by_real, by_ident = {}, {}  # the first path seen with each identity

    def add(entry, real, ident):
        by_real.setdefault(real, entry)
        if ident is not None:
            by_ident.setdefault(ident, entry)

    for what, p in inputs:
        if p is not None:
            add((what, p, True), *_identity(p))
    for what, p in outputs:
        if p is None:
            continue
        real, ident = _identity(p)
        hit = by_real.get(real) or (by_ident.get(ident) if ident is not None else None)
        if hit is not None:
            what2, p2, is_input = hit
            if is_input:
                raise ValueError(f"{_name(what, os.fspath(p))} is the input file {_name(what2, os.fspath(p2))} "
                                 "(by name or link); an output never replaces an input: "
                                 "choose another name")
            raise ValueError(f"{_name(what, os.fspath(p))} and {_name(what2, os.fspath(p2))} "
                             "name the same file")
        add((what, p, False), real, ident)
