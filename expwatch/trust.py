"""Who may have written the files expwatch acts on, and who may read what it writes.

Modelled on OpenSSH's ``StrictModes``: a manifest is a command the watcher
will run as its own user, so a manifest, rules file or settings file is used
only if it is owned by that user (or root) and nobody else can write it. A
file writable by its group is accepted only when the group is trusted: the
group has been opted in (``security.group_access``, for shared lab accounts,
which makes ``.expwatch/`` group-writable), or it is the user's private group
(the rule Debian's OpenSSH applies for umask 002 systems).

Everything under ``.expwatch/`` is created owner-only whatever the umask
(directories 0700, files 0600), or group-shared (0770/0660) when opted in.
The mode of ``.expwatch/`` itself is the record of that choice, so writers
that have no settings at hand (the launch shim, a manifest save) follow it.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from expwatch.files import Unreadable
from expwatch.layout import ExperimentsLayout

PRIVATE_DIR, SHARED_DIR = 0o700, 0o770
PRIVATE_FILE, SHARED_FILE = 0o600, 0o660


class UntrustedFile(Unreadable):
    """A file someone other than us (or root) owns or can write: refused, never acted on."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(path, reason)
        self.args = (f"{path}: refused ({reason})",)


def group_shared(home: Path | str) -> bool:
    """Whether ``home`` (an ``.expwatch/`` folder) was opted into group access."""
    try:
        info = os.stat(home)
    except FileNotFoundError:
        return False
    return info.st_uid in (os.geteuid(), 0) and bool(info.st_mode & stat.S_IWGRP)


def file_mode(directory: Path) -> int:
    """The mode of a new file expwatch writes in ``directory`` (``.expwatch/`` or ``runs/``)."""
    return SHARED_FILE if group_shared(directory) else PRIVATE_FILE


def make_home(layout: ExperimentsLayout, group_access: bool | None = None) -> None:
    """Create ``.expwatch/`` and ``runs/`` with their modes, whatever the umask.

    ``group_access`` None (a writer without settings) keeps an existing
    folder's choice; True/False (the watcher, launch, adopt) applies the setting
    to folders we own.
    """
    shared = group_shared(layout.home) if group_access is None else group_access
    for directory in (layout.home, layout.runs_dir):
        directory.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        info = os.stat(directory)
        wanted = SHARED_DIR if shared else PRIVATE_DIR
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != wanted:
            os.chmod(directory, wanted)


def _private_group(gid: int) -> bool:
    try:
        group, me = grp.getgrgid(gid), pwd.getpwuid(os.geteuid())
    except KeyError:
        return False
    return me.pw_gid == gid and group.gr_name == me.pw_name and set(group.gr_mem) <= {me.pw_name}


def _who(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_trusted(path: Path | str, info: os.stat_result, home: Path | str) -> None:
    """Raise UntrustedFile unless ``path`` (whose fstat is ``info``) is ours to act on.

    ``home`` is the experiments directory's ``.expwatch/``, whose mode says
    whether the group is trusted.
    """
    if info.st_uid not in (os.geteuid(), 0):
        raise UntrustedFile(path, f"owned by {_who(info.st_uid)}, not by {_who(os.geteuid())} or root; refusing to act on it")
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IWOTH:
        raise UntrustedFile(path, f"writable by every user (mode {mode:04o}); refusing to act on it (chmod o-w {path})")
    if mode & stat.S_IWGRP and not (group_shared(home) or _private_group(info.st_gid)):
        raise UntrustedFile(path, f"writable by its group (mode {mode:04o}) and security.group_access is off; "
                                  f"refusing to act on it (chmod g-w {path})")
