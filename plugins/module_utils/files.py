# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Configuration files: tar archives of paths, and their safe restore.

Archives are POSIX (pax) tar streams with member names relative to a root
directory, keeping modes, owners and mtimes; ``tar -x`` opens them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass, field

from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError, IntegrityError, SourceError

CHUNK = 1024 * 1024
DEFAULT_SECRETS = (".env", ".env.*", "*.key", "*.pem", "*.p12", "*.pfx", "id_rsa*", "id_ed25519*", "keys", "secrets")


def matches(name: str, patterns: list[str] | tuple[str, ...]) -> bool:
    """True when a glob matches the relative ``name``, one of its components, or a leading part of it.

    So ``node_modules`` excludes every such directory at any depth, and
    ``services/*/config`` matches that directory and everything below it.
    """
    parts = name.split("/")
    for pattern in patterns:
        pattern = pattern.strip("/")
        if not pattern:
            continue
        if any(fnmatch.fnmatchcase(part, pattern) for part in parts):
            return True
        if any(fnmatch.fnmatchcase("/".join(parts[:n]), pattern) for n in range(1, len(parts) + 1)):
            return True
    return False


@dataclass
class Selection:
    """What a backup of some paths contains: names relative to ``root``."""

    root: str
    names: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0

    def facts(self) -> dict:
        return {"root": self.root, "files": self.files, "bytes": self.bytes, "names": self.names}


def _relative(root: str, path: str) -> str:
    full = os.path.normpath(os.path.join(root, path))
    rel = os.path.relpath(full, root)
    if rel == ".." or rel.startswith("../"):
        raise ConfigurationError(f"path {path} is outside root {root}")
    return "" if rel == "." else rel


def select(root: str, paths: list[str], exclude: list[str]) -> Selection:
    """Walk ``paths`` below ``root`` and list what to archive, minus ``exclude`` globs."""
    root = os.path.abspath(root)
    chosen = Selection(root)
    seen = set()

    def add(rel: str, st: os.stat_result) -> None:
        if rel in seen or matches(rel, exclude):
            return
        seen.add(rel)
        chosen.names.append(rel)
        if stat.S_ISREG(st.st_mode):
            chosen.files += 1
            chosen.bytes += st.st_size

    for path in paths:
        rel = _relative(root, path)
        full = os.path.join(root, rel)
        try:
            st = os.lstat(full)
        except OSError as exc:
            raise SourceError(f"path {full} cannot be read: {exc.strerror}") from None
        if rel and not stat.S_ISDIR(st.st_mode):
            add(rel, st)
            continue
        if rel and matches(rel, exclude):
            continue
        if rel:
            add(rel, st)
        for directory, dirs, names in os.walk(full, onerror=_raise):
            dirs[:] = sorted(d for d in dirs if not matches(_relative(root, os.path.join(directory, d)), exclude))
            for entry in dirs + sorted(names):
                child = os.path.join(directory, entry)
                add(_relative(root, child), os.lstat(child))
    if not chosen.names:
        raise ConfigurationError("paths and exclude select no file to back up")
    return chosen


def _raise(exc: OSError) -> None:
    raise SourceError(f"{exc.filename} cannot be read: {exc.strerror}")


def secrets_in(selection: Selection, patterns: list[str]) -> list[str]:
    """The selected names that are secrets by ``patterns``."""
    return [n for n in selection.names if matches(n, patterns)]


def write_tar(out, selection: Selection) -> None:
    """Stream a pax tar of the selection into the writable ``out``."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
        for name in selection.names:
            full = os.path.join(selection.root, name)
            try:
                info = tar.gettarinfo(full, arcname=name)
                if info is None:  # sockets and the like have no tar form
                    continue
                if info.isreg():
                    with open(full, "rb") as src:
                        tar.addfile(info, src)
                else:
                    tar.addfile(info)
            except OSError as exc:
                raise SourceError(f"{full} could not be archived: {exc.strerror or exc}") from None


def _sha256_file(path: str) -> str | None:
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                sha.update(chunk)
    except OSError:
        return None
    return sha.hexdigest()


def _sha256_member(fileobj) -> str:
    sha = hashlib.sha256()
    for chunk in iter(lambda: fileobj.read(CHUNK), b""):
        sha.update(chunk)
    return sha.hexdigest()


def _check_member(member: tarfile.TarInfo, dest: str) -> None:
    """Refuse a member that would land, or point, outside ``dest``."""
    name = member.name
    normal = os.path.normpath(name)
    if os.path.isabs(name) or normal == ".." or normal.startswith("../"):
        raise IntegrityError(f"archive member {name!r} would land outside {dest}: refused")
    real_dest = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(dest, normal))
    if os.path.commonpath([real_dest, target]) != real_dest:
        raise IntegrityError(f"archive member {name!r} would land outside {dest} (through a link): refused")
    if member.issym() or member.islnk():
        link = member.linkname
        base = os.path.dirname(normal) if member.issym() else ""
        resolved = os.path.normpath(os.path.join(base, link))
        if os.path.isabs(link) or resolved == ".." or resolved.startswith("../"):
            raise IntegrityError(f"archive member {name!r} links to {link!r}, outside {dest}: refused")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise IntegrityError(f"archive member {name!r} is a device or fifo: refused")


def _state(member: tarfile.TarInfo, tar: tarfile.TarFile, dest: str) -> str:
    """``create``, ``update`` or ``same`` for one member against what is in ``dest``."""
    path = os.path.join(dest, member.name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "create"
    if member.isdir():
        same = stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == member.mode
    elif member.issym():
        same = stat.S_ISLNK(st.st_mode) and os.readlink(path) == member.linkname
    elif member.isreg():
        same = (
            stat.S_ISREG(st.st_mode)
            and st.st_size == member.size
            and stat.S_IMODE(st.st_mode) == member.mode
            and _sha256_file(path) == _sha256_member(tar.extractfile(member))
        )
    else:
        same = False
    return "same" if same else "update"


def plan_restore(reader, dest: str, only: list[str]) -> dict[str, list[str]]:
    """Read the archive once: refuse unsafe members, and sort the rest into create/update/same."""
    plan: dict[str, list[str]] = {"create": [], "update": [], "same": []}
    try:
        with tarfile.open(fileobj=reader, mode="r|", bufsize=CHUNK) as tar:
            for member in tar:
                _check_member(member, dest)
                if only and not matches(member.name, only):
                    continue
                plan[_state(member, tar, dest)].append(member.name)
    except tarfile.TarError as exc:
        raise IntegrityError(f"the configuration archive is not a valid tar: {exc}") from None
    return plan


def extract(reader, dest: str, names: set[str]) -> None:
    """Extract the members named in ``names``, keeping modes, mtimes and (as root) owners."""
    os.makedirs(dest, exist_ok=True)
    directories = []
    with tarfile.open(fileobj=reader, mode="r|", bufsize=CHUNK) as tar:
        for member in tar:
            if member.name not in names:
                continue
            _check_member(member, dest)
            path = os.path.join(dest, member.name)
            if not member.isdir() and (os.path.lexists(path) and not os.path.isdir(path) or os.path.islink(path)):
                os.unlink(path)  # replace, do not write through an old symlink
            # _check_member refused what escapes dest; "tar"/"data" filters would also drop g+w bits.
            tar.extract(member, dest, set_attrs=not member.isdir(), numeric_owner=True, filter="fully_trusted")
            if member.isdir():
                directories.append(member)
    # Directory modes and mtimes last, as tar does, so their files could be written.
    for member in reversed(directories):
        path = os.path.join(dest, member.name)
        os.chmod(path, member.mode)
        os.utime(path, (member.mtime, member.mtime))
        if os.geteuid() == 0:
            os.lchown(path, member.uid, member.gid)
