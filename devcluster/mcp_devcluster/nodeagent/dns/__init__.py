"""A cluster-DNS stand-in for the Python processes the node agent starts.

This directory is put first on their ``PYTHONPATH`` (see :data:`SHIM_DIR`), so Python runs
its ``sitecustomize`` at start-up; nothing here is imported by the agent itself.
"""

from __future__ import annotations

from pathlib import Path

#: The directory whose ``sitecustomize.py`` resolves Service names (``PYTHONPATH`` entry).
SHIM_DIR = Path(__file__).resolve().parent
