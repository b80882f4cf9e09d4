"""Service names for a pod's Python process under the dev node agent (no cluster DNS here).

The agent's Service proxy writes the names it answers for (``NAME.NS``, ``NAME.NS.svc``,
``NAME.NS.svc.cluster.local``, each to the Service's local address, its ClusterIP stand-in)
into the JSON file named by ``NODEAGENT_HOSTS``. This wraps ``socket.getaddrinfo`` (what
``urllib``, ``http.client``, ``httpx`` and ``asyncio`` resolve with) and
``socket.gethostbyname`` so that such a name resolves to that address, as cluster DNS would
resolve it to the ClusterIP; the file is re-read on every look-up (a Service may get its
address after the process started). Any other name goes to the real resolver unchanged.
Short names (a bare ``NAME`` through the pod's search list) are not resolved.

Python imports ``sitecustomize`` from the first ``sys.path`` entry that has one; the agent
puts this directory first on ``PYTHONPATH``, and a ``sitecustomize`` further along (the
interpreter's own) is still run.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import socket
import sys
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
_getaddrinfo = socket.getaddrinfo
_gethostbyname = socket.gethostbyname


def service_address(host: object) -> str | None:
    """The Service address the agent recorded for ``host``, if it is such a name."""
    path = os.environ.get("NODEAGENT_HOSTS")
    if not path or not isinstance(host, str):
        return None
    try:
        with open(path, encoding="utf-8") as file:
            hosts = json.load(file)
    except (OSError, ValueError):
        return None
    address = hosts.get(host.rstrip(".")) if isinstance(hosts, dict) else None
    return address if isinstance(address, str) else None


def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    return _getaddrinfo(service_address(host) or host, *args, **kwargs)


def gethostbyname(host: str) -> str:
    return service_address(host) or _gethostbyname(host)


def _run_next_sitecustomize() -> None:
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


socket.getaddrinfo = getaddrinfo
socket.gethostbyname = gethostbyname
_run_next_sitecustomize()
