"""Embedders turn the compared text into a unit vector."""

from kallm.embedders.base import Embedder
from kallm.embedders.local import LocalEmbedder
from kallm.embedders.remote import RemoteEmbedder

__all__ = ["Embedder", "LocalEmbedder", "RemoteEmbedder"]
