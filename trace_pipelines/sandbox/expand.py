"""Stripe's `expand[]` for the sandbox: ids replaced by objects, lists embedded in parents.

Expansion is generic, driven by each resource's `expandable` field paths in
`store.RESOURCES`: a path may name one of those fields (nested ones such as
`parent.subscription_details.subscription` included) and continue into the object it
expands to. An id of a resource the sandbox stores is found by its prefix in the same
account; ids of resources it does not store (`pi_`, `txn_`, `pm_`, ...) stay ids, as does an
id with no object behind it. A field the object lacks stays absent: fixtures carry only some
of Stripe's fields, and a basil invoice has no legacy `subscription`. Two lists can be
embedded on request, as Stripe does: a charge's `refunds` and an invoice's `payments`.

Stored objects are shared between requests and never modified: each expansion copies only
the dicts along its path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trace_pipelines.sandbox.store import Account, IncludeSpec, ListQuery, spec_of

MAX_DEPTH = 4
EMBEDDED_LIST_LIMIT = 10


class ExpandError(ValueError):
    """An expand path Stripe would refuse; the message is the one returned to the client."""


def parse_path(path: str, *, in_list: bool) -> list[str]:
    """Split an expand path into segments, checking depth and the `data.` prefix of lists."""
    segments = path.split(".")
    if not path or any(not s for s in segments):
        raise ExpandError(f"Invalid expand path: '{path}'.")
    if len(segments) > MAX_DEPTH:
        raise ExpandError(
            f"You cannot expand more than {MAX_DEPTH} levels of a property. Property: {path}"
        )
    if in_list:
        if segments[0] != "data" or len(segments) == 1:
            raise ExpandError(
                f"This property cannot be expanded ({path}). You may want to try expanding "
                f"'data.{path}' instead."
            )
        return segments[1:]
    return segments


class Expander:
    """Applies expand paths to objects of one account."""

    def __init__(self, account: Account) -> None:
        """Expand within `account` only, so one account never reaches another's objects."""
        self.account = account

    def expand(self, obj: dict[str, Any], segments: list[str], full_path: str) -> dict[str, Any]:
        """`obj` with the property at `segments` expanded, as a copy; `obj` is left as is."""
        spec = spec_of(obj)
        if spec is None:
            raise ExpandError(f"This property cannot be expanded ({full_path}).")

        include = spec.include(segments[0])
        if include is not None:
            embedded = self.embedded_list(include, spec.url, obj["id"])
            copy = dict(obj)
            copy[include.field] = self._continue(embedded, segments[1:], full_path)
            return copy

        # The longest leading part of the path that names an expandable field.
        for n in range(len(segments), 0, -1):
            if ".".join(segments[:n]) in spec.expandable:
                break
        else:
            raise ExpandError(f"This property cannot be expanded ({full_path}).")
        rest = segments[n:]
        return _replace(
            obj, segments[:n], lambda value: self._continue(self._resolve(value), rest, full_path)
        )

    def embedded_list(self, include: IncludeSpec, parent_url: str, parent_id: str) -> dict:
        """The first page of an includable list, shaped as Stripe embeds it."""
        children = self.account.collections[include.resource]
        page = children.query(
            ListQuery(limit=EMBEDDED_LIST_LIMIT, filters={include.foreign_key: (parent_id,)})
        )
        return {
            "object": "list",
            "data": page.data,
            "has_more": page.has_more,
            "total_count": children.count(include.foreign_key, parent_id),
            "url": f"{parent_url}/{parent_id}/{include.field}",
        }

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.account.find(value) or value
        return value

    def _continue(self, value: Any, rest: list[str], full_path: str) -> Any:
        """Apply what is left of a path to the object (or list) a field expanded into."""
        if not rest or not isinstance(value, dict):
            # Nothing left, or an id the sandbox cannot expand: it stays as it is.
            return value
        if value.get("object") == "list":
            if rest[0] != "data" or len(rest) == 1:
                raise ExpandError(f"This property cannot be expanded ({full_path}).")
            items = [self.expand(item, rest[1:], full_path) for item in value["data"]]
            return {**value, "data": items}
        return self.expand(value, rest, full_path)


def _replace(obj: dict[str, Any], path: list[str], change: Callable[[Any], Any]) -> dict[str, Any]:
    """A copy of `obj` with the value at `path` changed, or `obj` itself when it has none."""
    head = path[0]
    if head not in obj:
        return obj
    value = obj[head]
    if len(path) > 1:
        if not isinstance(value, dict):
            return obj
        new_value = _replace(value, path[1:], change)
    else:
        new_value = change(value)
    if new_value is value:
        return obj
    copy = dict(obj)
    copy[head] = new_value
    return copy
