"""Talking to the Kubernetes API: watching SemanticCachePolicy objects into the policy book
(and, optionally, pods into an IP-to-namespace directory). See `kallm.k8s.watch`."""

from kallm.k8s.watch import KubeAPI, PodDirectory, PolicyWatcher

__all__ = ["KubeAPI", "PodDirectory", "PolicyWatcher"]
