"""Who owns a Docker run's files: the container's unprivileged user while it runs, the submitter after.

A root submitter's script runs as UNPRIVILEGED_UID:UNPRIVILEGED_GID (nobody:nogroup), so the
folders it writes (its working copy, ./outputs, ./logs, telemetry) are handed to that user before
the container starts and given back to the submitter once it has stopped. A non-root submitter's
script runs as the submitter's own uid (already unprivileged, and a non-root amlocal could not
chown another uid's files back), so nothing changes hands.

Everything under those folders was made by the script, so the walk never follows a link: a
symlink to /etc is itself re-owned (lchown), never what it points at.
"""

import os

# nobody:nogroup on Debian, Ubuntu and most images: owns nothing in the image.
UNPRIVILEGED_UID = UNPRIVILEGED_GID = 65534


def submitter():
    return os.getuid(), os.getgid()


def container_user(run_as_root=False):
    """(uid, gid) the script runs as in its container."""
    if run_as_root:
        return 0, 0
    if os.getuid() == 0:
        return UNPRIVILEGED_UID, UNPRIVILEGED_GID
    return submitter()


def docker_user(uid_gid):
    """The "uid:gid" string Docker's `user` setting takes."""
    return "%d:%d" % uid_gid


def chown_tree(top, uid, gid):
    """Make `top` and everything under it owned by uid:gid, following no symlink.

    os.fwalk opens each folder relative to its parent's descriptor and checks that what it
    opened is the folder it listed, so a folder swapped for a link mid-walk is skipped; every
    entry is changed with follow_symlinks=False (a link is re-owned itself). Entries that vanish
    while the walk runs are skipped.
    """
    for _path, dirnames, filenames, dir_fd in os.fwalk(top, follow_symlinks=False):
        os.chown(dir_fd, uid, gid)
        for name in dirnames + filenames:
            try:
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass


def hand_over(folders, uid_gid):
    """Before the container starts: the folders it writes become its user's (if not the submitter)."""
    if uid_gid != submitter():
        for folder in folders:
            chown_tree(folder, *uid_gid)


def give_back(folders):
    """After the container stopped: everything in the folders belongs to the submitter again."""
    for folder in folders:
        if os.path.isdir(folder):
            chown_tree(folder, *submitter())
