"""Local node agent: a kubelet (+ kube-proxy) stand-in for the one-host dev cluster.

Library use::

    from mcp_devcluster.nodeagent import AgentConfig, NodeAgent

    agent = NodeAgent(AgentConfig(kubeconfig="admin.kubeconfig"))
    agent.start()   # registers the node, binds and runs pods
    ...
    agent.stop()    # kills every process it started

CLI: ``python -m mcp_devcluster.nodeagent --kubeconfig PATH [--node-name mcp-local]
[--pod-cidr 10.244.0.0/16] [--image-map FILE]``. See ``images`` for the map format and
``volumes`` for ``NODEAGENT_MOUNTS``.
"""

from .agent import AgentConfig, NodeAgent
from .container import BackoffPolicy
from .images import EXAMPLE_IMAGE_REPOSITORY, ImageMap, ImageRule

__all__ = [
    "EXAMPLE_IMAGE_REPOSITORY",
    "AgentConfig",
    "BackoffPolicy",
    "ImageMap",
    "ImageRule",
    "NodeAgent",
]
