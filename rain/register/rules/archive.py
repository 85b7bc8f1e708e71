"""Rules the unpacker reports: archive members that would land outside the image or are unsafe."""

from __future__ import annotations

from rain.register.models import Severity
from rain.register.rules import Rule

RULES = [
    Rule("archive-escape", "archive entry escapes the root", Severity.CRITICAL,
         "archive entries point outside the image root",
         "rebuild the archive from inside the root (tar -C ROOT .); never store '..' or absolute names"),
    Rule("device-node", "device node in the image", Severity.CRITICAL,
         "the image carries device nodes",
         "remove device nodes from the image; /dev is populated at boot by devtmpfs/udev"),
    Rule("link-outside", "link escapes the root", Severity.CRITICAL,
         "links point outside the image root",
         "make the links relative to a path inside the image, or remove them"),
    Rule("special-file", "FIFO in the image", Severity.LOW,
         "the image carries FIFOs (named pipes); they were not unpacked",
         "remove them from the image; programs create their FIFOs at run time (under /run)"),
    Rule("xattr-dropped", "extended attribute not kept", Severity.LOW,
         "some extended attributes were not kept; the files are there without them",
         "file capabilities and user.* need an unpack as root onto ext4/xfs; security.selinux and trusted.* "
         "are never taken from an image (relabel at first boot)"),
]
