"""Opening a package's files: confined to the package directory, checked against the manifest.

A package is a trust boundary: its manifest names files, and a hostile or careless manifest could
name ``../x``, ``/etc/passwd`` or a symlink out. Every file any stage reads from a package goes
through ``check_file`` or ``read_file`` here, which (1) refuse a path that leaves the directory
after following symlinks, before touching it, so a refusal says nothing about what lies outside,
(2) accept only regular files (a FIFO would block, a device never ends), (3) compare the size on
disk with the manifest (under ``verify``) and with the file's own limit (always) before reading or
hashing a byte, and (4) under ``verify`` compare the sha256, refusing a file the manifest records no
hash for. ``check_distinct`` refuses two entries that are one file (a symlink or hard link), so a
package cannot make one large file be hashed thousands of times.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from polyglot_onnx.errors import PackageError

HASH_CHUNK = 1 << 22


@dataclass(frozen=True)
class PackageFile:
    """One file the manifest names: ``label`` says where (e.g. ``variants.int8.files[0]``), for messages."""

    label: str
    path: str
    sha256: str = ""  # "" when the manifest records none: refused under verify
    size: int | None = None
    max_size: int | None = None  # refused above this whatever ``verify`` says: a file read whole into memory


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def path_problem(relative: str) -> str | None:
    """Why a manifest path string is not a plain relative path inside the package, or None."""
    if not relative:
        return "is empty"
    if "\x00" in relative:
        return "contains a NUL character"
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if PurePosixPath(relative).is_absolute() or PureWindowsPath(relative).drive or relative.startswith("\\"):
        return "is an absolute path"
    if ".." in relative.replace("\\", "/").split("/"):
        return "contains '..'"
    return None


def confined_path(root: Path, relative: str, label: str) -> Path:
    """``root / relative`` with symlinks followed, refused unless it stays inside ``root``."""
    problem = path_problem(relative)
    if problem:
        raise PackageError(
            f"manifest entry {label} ({_short(relative)}) {problem}: package files must be relative paths inside "
            "the package directory; re-export or re-download the package"
        )
    try:
        base = root.resolve()
        target = (base / relative).resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise PackageError(
            f"manifest entry {label} ({_short(relative)}) cannot be resolved ({type(err).__name__}): a symlink loop?"
        ) from err
    if not target.is_relative_to(base):
        raise PackageError(
            f"manifest entry {label} ({_short(relative)}) leads outside the package directory through a symlink: "
            "package files must be inside it; re-export or re-download the package"
        )
    return target


def _unreadable(entry: PackageFile, err: OSError) -> PackageError:
    reason = err.strerror or type(err).__name__
    return PackageError(f"package file {entry.path} cannot be read ({reason}): check its permissions and owner")


def _regular_file(root: Path, entry: PackageFile) -> tuple[Path, os.stat_result]:
    """The confined path of ``entry`` and its stat, refused unless it is a regular file."""
    path = confined_path(root, entry.path, entry.label)
    try:
        info = path.stat()
    except FileNotFoundError as err:
        raise PackageError(f"package file {entry.path} is missing from {root}: re-export the package") from err
    except OSError as err:
        raise _unreadable(entry, err) from err
    if not stat.S_ISREG(info.st_mode):
        raise PackageError(f"package file {entry.path} is not a regular file: re-export the package")
    return path, info


def check_distinct(root: Path, entries: Iterable[PackageFile]) -> None:
    """Refuse two entries that are one file on disk (same device and inode: a symlink, a hard link, or
    a spelling the manifest check could not see), before anything is hashed."""
    seen: dict[tuple[int, int], PackageFile] = {}
    for entry in entries:
        _, info = _regular_file(root, entry)
        first = seen.setdefault((info.st_dev, info.st_ino), entry)
        if first is not entry:
            raise PackageError(
                f"manifest entries {first.label} ({_short(first.path)}) and {entry.label} ({_short(entry.path)}) "
                "are the same file: a package lists each file once; re-export or re-download the package"
            )


def check_file(root: Path, entry: PackageFile, verify: bool) -> Path:
    """The confined, regular file ``entry`` names, its size checked before any byte is read; under
    ``verify`` its size and sha256 match the manifest."""
    path, info = _regular_file(root, entry)
    _check_limit(entry, info.st_size)
    if verify:
        _require_hash(entry)
        _check_size(entry, info.st_size)
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                while block := fh.read(HASH_CHUNK):
                    digest.update(block)
        except OSError as err:
            raise _unreadable(entry, err) from err
        _check_digest(entry, digest.hexdigest())
    return path


def read_file(root: Path, entry: PackageFile, verify: bool) -> bytes:
    """The bytes of ``entry``, read once and hashed from those same bytes (no check-then-reopen gap).

    Sizes are checked on the stat before reading, and the read stops one byte past the size allowed,
    so a file that grows in between still costs no more memory than its manifest size or limit."""
    path, info = _regular_file(root, entry)
    _check_limit(entry, info.st_size)
    if verify:
        _require_hash(entry)
        _check_size(entry, info.st_size)
    allowed = [n for n in (entry.max_size, entry.size if verify else None) if n is not None]
    try:
        with open(path, "rb") as fh:
            data = fh.read(min(allowed) + 1) if allowed else fh.read()
    except OSError as err:
        raise _unreadable(entry, err) from err
    _check_limit(entry, len(data))
    if verify:
        _check_size(entry, len(data))
        _check_digest(entry, hashlib.sha256(data).hexdigest())
    return data


def _require_hash(entry: PackageFile) -> None:
    if not entry.sha256:
        raise PackageError(
            f"manifest.json records no sha256 for {entry.path} ({entry.label}), so it cannot be verified: "
            "re-export the package with this polyglot-onnx, or load with verify=False if you trust its files"
        )


def _check_limit(entry: PackageFile, size: int) -> None:
    if entry.max_size is not None and size > entry.max_size:
        raise PackageError(
            f"package file {entry.path} ({entry.label}) is larger than its limit of {entry.max_size // (1 << 20)} MiB, "
            "so it is not read: re-export or re-download the package"
        )


def _check_size(entry: PackageFile, size: int) -> None:
    if entry.size is not None and size != entry.size:
        raise PackageError(
            f"package file {entry.path} is {size} bytes, the manifest says {entry.size}: "
            "the file is truncated or replaced; re-export or re-download the package"
        )


def _check_digest(entry: PackageFile, digest: str) -> None:
    if digest != entry.sha256:
        raise PackageError(
            f"package file {entry.path} does not match its sha256 in manifest.json: "
            "the file is corrupt or was replaced; re-export or re-download the package"
        )

