"""YAML output: block style, keys in the order written, long PromQL kept readable."""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so generated PromQL reads like hand-written PromQL;
    a block used twice is written out twice (no YAML anchors)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any, header: str = "") -> str:
    """``data`` as YAML, after ``header`` turned into comment lines."""
    lines = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return lines + yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)
