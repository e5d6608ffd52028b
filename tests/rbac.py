"""RBAC rules as sets of rights, for the chart's and the audit log's tests."""

from __future__ import annotations

from typing import Any


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of every right a Role's or ClusterRole's rules give."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
