"""Cairn's exceptions; the tree is drawn in :mod:`cairn.proto.errors`, where they live because
their codes are part of the wire contract."""

from cairn.proto.errors import *  # noqa: F403
from cairn.proto.errors import __all__ as __all__
