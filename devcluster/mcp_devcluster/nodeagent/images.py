"""Image map: which local command stands in for which container image.

There is no container runtime, so an image is only a *name* for a local program. A rule
matches an image by repository (glob) and tag (glob) and gives the entrypoint; the
container's ``command`` replaces that entrypoint and its ``args`` are appended, like
Docker's ENTRYPOINT/CMD. ``bindArgs`` are appended last, always, because every pod
shares the host network namespace and binding to the pod's own (local) IP is the only
thing that keeps two pods' ports from colliding.

Map file (YAML or JSON), rules tried in order, file rules before the built-in ones::

    images:
      - image: "ghcr.io/acme/tool:*"      # repository glob ":" tag glob (tag optional)
        command: ["{python}", "-m", "acme.tool"]
        bindArgs: ["--listen", "{pod_ip}"]
        env: {ACME_MODE: dev}              # defaults, the container's env wins

Placeholders: ``{pod_ip}``, ``{python}`` (the agent's interpreter), ``{pod_name}``,
``{namespace}``, ``{container}``, ``{pod_dir}``.

``pathDirectives`` (Redis: ``aclfile``) is for programs that take a config file.
There is no mount namespace, so the container's paths do not exist on the host: argv
elements under a ``volumeMount`` are mapped to the volume's host directory, and each listed
directive of the config file (the first argv element that is a file) whose value lies under
a mount is overridden on the command line with the mapped path (``--aclfile HOST_PATH``).
Everything else — ``maxmemory``, the policy, the ACL file's users — is read by the program
from the rendered files exactly as they are mounted. (A directive checked while the file is
parsed, such as Redis's ``dir``, cannot be overridden this way: use ``workingDir``, which the
agent maps to the volume's host directory.)
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXAMPLE_IMAGE_REPOSITORY = "ghcr.io/mcp-operator/example-server"
REDIS_PATH_DIRECTIVES = ("aclfile",)
_REDIS_BIND = ("--bind", "{pod_ip}", "--protected-mode", "no")


@dataclass(frozen=True)
class ImageRule:
    """One image pattern and the local program that stands in for it."""

    pattern: str
    command: tuple[str, ...]
    bind_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    path_directives: tuple[str, ...] = ()

    def matches(self, image: str) -> bool:
        """Glob on repository and tag separately; a pattern without a tag takes any tag."""
        want_repo, want_tag = split_image(self.pattern, default_tag="*")
        repo, tag = split_image(image)
        return fnmatch.fnmatchcase(repo, want_repo) and fnmatch.fnmatchcase(tag, want_tag)


DEFAULT_RULES: tuple[ImageRule, ...] = (
    ImageRule(
        f"{EXAMPLE_IMAGE_REPOSITORY}:*",
        ("{python}", "-m", "mcp_example_server"),
        ("--host", "{pod_ip}"),
    ),
    # --protected-mode no, as the official image's entrypoint adds: clients reach the pod IP
    # (not loopback), which protected mode would refuse when no password is set.
    ImageRule("redis:*", ("redis-server",), _REDIS_BIND, {}, REDIS_PATH_DIRECTIVES),
    ImageRule("*/redis:*", ("redis-server",), _REDIS_BIND, {}, REDIS_PATH_DIRECTIVES),
)


def split_image(image: str, default_tag: str = "latest") -> tuple[str, str]:
    """Split ``repo[:tag][@digest]``; normalise ``docker.io/library/x`` to ``x``."""
    repo, _, digest = image.partition("@")
    tag = default_tag
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = repo.rsplit(":", 1)
    if digest and tag == default_tag:
        tag = digest
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        if repo.startswith(prefix):
            repo = repo[len(prefix) :]
            break
    return repo, tag


@dataclass(frozen=True)
class ImageMap:
    """An ordered list of rules; the first match wins."""

    rules: tuple[ImageRule, ...] = DEFAULT_RULES

    def lookup(self, image: str) -> ImageRule | None:
        """Return the first rule matching ``image``, or None (the image "cannot be pulled")."""
        return next((r for r in self.rules if r.matches(image)), None)

    @classmethod
    def load(cls, path: Path | None) -> ImageMap:
        """Rules from ``path`` (if any) first, then the built-in defaults."""
        if path is None:
            return cls()
        return cls(parse_rules(yaml.safe_load(path.read_text())) + DEFAULT_RULES)


def parse_rules(doc: Any) -> tuple[ImageRule, ...]:
    """Parse the map file document (see module docstring)."""
    entries = doc.get("images", []) if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise ValueError("image map: expected a list under 'images'")
    return tuple(_parse_rule(e) for e in entries)


def _parse_rule(entry: Any) -> ImageRule:
    if not isinstance(entry, dict) or "image" not in entry or not entry.get("command"):
        raise ValueError(f"image map: each rule needs 'image' and 'command': {json.dumps(entry)}")
    return ImageRule(
        pattern=str(entry["image"]),
        command=tuple(str(a) for a in entry["command"]),
        bind_args=tuple(str(a) for a in entry.get("bindArgs", [])),
        env={str(k): str(v) for k, v in (entry.get("env") or {}).items()},
        path_directives=tuple(str(d) for d in entry.get("pathDirectives", [])),
    )


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace ``{key}`` placeholders; unknown braces are left alone (no str.format surprises)."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def build_argv(
    rule: ImageRule,
    command: Sequence[str] | None,
    args: Sequence[str] | None,
    values: Mapping[str, str],
) -> list[str]:
    """Entrypoint (or the container's command) + args + bind args, placeholders filled."""
    values = {"python": sys.executable, **values}
    head = list(command) if command else [fill(a, values) for a in rule.command]
    return head + list(args or []) + [fill(a, values) for a in rule.bind_args]


def host_path(path: str, mounts: Mapping[str, str]) -> str | None:
    """The host path of a container path under one of ``mounts`` (longest mount wins)."""
    best = max(
        (m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")),
        key=len,
        default=None,
    )
    return None if best is None else mounts[best] + path[len(best) :]


def map_config_paths(argv: Sequence[str], rule: ImageRule, mounts: Mapping[str, str]) -> list[str]:
    """See the module docstring (``pathDirectives``); argv unchanged for other rules."""
    if not rule.path_directives:
        return list(argv)
    out = [argv[0], *(host_path(a, mounts) or a for a in argv[1:])]
    config = next((a for a in out[1:] if not a.startswith("-") and Path(a).is_file()), None)
    if config is None:
        return out
    for line in Path(config).read_text().splitlines():
        words = line.split()
        if len(words) == 2 and words[0].lower() in rule.path_directives:
            mapped = host_path(words[1].strip('"'), mounts)
            if mapped is not None:
                out += [f"--{words[0].lower()}", mapped]
    return out
