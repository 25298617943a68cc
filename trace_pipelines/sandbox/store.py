"""The sandbox's data: fixture files loaded into memory, indexed, and queried as Stripe lists.

Fixtures format
---------------
A fixtures folder holds one subfolder per connected account, named by the account id
(`acct_.../`). Each subfolder holds one JSON file per resource: `charges.json`,
`refunds.json`, `disputes.json`, `invoices.json`, `invoice_payments.json`,
`customers.json`, `subscriptions.json`, `checkout_sessions.json` and `events.json`. Each
file is a JSON array of objects shaped as the Stripe API returns them; every object needs a
string `id` and an integer `created` (Unix seconds). A missing file means the account has
none of that resource. Charges are stored without their `refunds` list and invoices without
their `payments` list: the sandbox attaches both when a client asks to expand them, built
from `refunds.json` (by `charge`) and `invoice_payments.json` (by `invoice`). An optional
`account.json` holds the account object returned by `GET /v1/account`; without it a minimal
one is made up. An empty file named `revoked` in an account folder makes the sandbox answer
as Stripe does once the account has disconnected the platform (403 `account_invalid`). Any
other `.json` file, a file that is not a JSON array, or an object without `id`/`created`
stops the sandbox at start with a message naming the file.

Objects stay the dicts `json.load` returns and are never modified, so a response can
serialize them directly; expansion copies only the objects it changes. Each resource is
kept sorted oldest first by (`created`, `id`), which makes a `created` range a contiguous
slice found by bisection, and a list page a walk backwards over that slice.
"""

from __future__ import annotations

import bisect
import gc
import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REVOKED_MARKER = "revoked"
PLATFORM_ACCOUNT_ID = "acct_trace_sandbox_platform"


class FixtureError(ValueError):
    """A fixtures folder or file the sandbox cannot serve; the message says what to fix."""


@dataclass(frozen=True)
class FilterSpec:
    """One list filter: a query parameter matched against one or more fields of an object."""

    param: str
    # Dotted paths; an object matches when any of them holds one of the requested values.
    # Several paths let one filter accept both the basil and the legacy shape of a field.
    paths: tuple[str, ...]
    # An array parameter (`types[]=a&types[]=b`) matching any of its values.
    many: bool = False
    # Values may hold `*` wildcards, as Stripe allows for event types (`charge.*`).
    wildcard: bool = False
    # Values hidden from a list unless the filter is given (Stripe hides canceled
    # subscriptions by default), and the value that lifts every restriction.
    hidden_by_default: frozenset[str] = frozenset()
    match_all: str | None = None


@dataclass(frozen=True)
class IncludeSpec:
    """A list Stripe can embed in a parent object on expand, e.g. a charge's `refunds`."""

    field: str
    resource: str
    # The child's list filter that points at the parent, e.g. `charge` on refunds.
    foreign_key: str


@dataclass(frozen=True)
class ResourceSpec:
    """How one Stripe resource is stored, addressed, filtered and expanded."""

    name: str
    object: str
    url: str
    id_prefixes: tuple[str, ...]
    filters: tuple[FilterSpec, ...] = ()
    # Dotted paths to the fields Stripe lets a client expand, ids of other objects. Legacy
    # (pre-basil) fields are listed too: fixtures may hold either shape.
    expandable: frozenset[str] = frozenset()
    includes: tuple[IncludeSpec, ...] = ()
    # Lists and retrieves only reach back this far (events: 30 days).
    max_age_seconds: int | None = None

    @property
    def file(self) -> str:
        """The fixture file name holding this resource in an account folder."""
        return f"{self.name}.json"

    def filter(self, param: str) -> FilterSpec | None:
        """The filter named `param`, or None when this resource has no such filter."""
        return next((f for f in self.filters if f.param == param), None)

    def include(self, field_name: str) -> IncludeSpec | None:
        """The includable list named `field_name`, or None."""
        return next((i for i in self.includes if i.field == field_name), None)


def _filters(*params: str) -> tuple[FilterSpec, ...]:
    return tuple(FilterSpec(p, (p,)) for p in params)


RESOURCES: dict[str, ResourceSpec] = {
    spec.name: spec
    for spec in (
        ResourceSpec(
            name="charges",
            object="charge",
            url="/v1/charges",
            id_prefixes=("ch", "py"),
            filters=_filters("customer", "payment_intent"),
            expandable=frozenset(
                {
                    "application",
                    "application_fee",
                    "balance_transaction",
                    "customer",
                    "failure_balance_transaction",
                    "invoice",
                    "on_behalf_of",
                    "payment_intent",
                    "review",
                    "source_transfer",
                    "transfer",
                }
            ),  # fmt: skip
            includes=(IncludeSpec("refunds", "refunds", "charge"),),
        ),
        ResourceSpec(
            name="refunds",
            object="refund",
            url="/v1/refunds",
            id_prefixes=("re", "pyr"),
            filters=_filters("charge", "payment_intent"),
            expandable=frozenset(
                {
                    "balance_transaction",
                    "charge",
                    "failure_balance_transaction",
                    "payment_intent",
                    "source_transfer_reversal",
                    "transfer_reversal",
                }
            ),  # fmt: skip
        ),
        ResourceSpec(
            name="disputes",
            object="dispute",
            url="/v1/disputes",
            id_prefixes=("dp", "du"),
            filters=_filters("charge", "payment_intent"),
            expandable=frozenset({"charge", "payment_intent"}),
        ),
        ResourceSpec(
            name="invoices",
            object="invoice",
            url="/v1/invoices",
            id_prefixes=("in",),
            filters=(
                FilterSpec("customer", ("customer",)),
                FilterSpec(
                    "subscription", ("parent.subscription_details.subscription", "subscription")
                ),
                FilterSpec("status", ("status",)),
            ),
            expandable=frozenset(
                {
                    "application",
                    "charge",
                    "customer",
                    "default_payment_method",
                    "default_source",
                    "latest_revision",
                    "on_behalf_of",
                    "payment_intent",
                    "parent.subscription_details.subscription",
                    "subscription",
                    "test_clock",
                }
            ),  # fmt: skip
            includes=(IncludeSpec("payments", "invoice_payments", "invoice"),),
        ),
        ResourceSpec(
            name="invoice_payments",
            object="invoice_payment",
            url="/v1/invoice_payments",
            id_prefixes=("inpay",),
            filters=(
                FilterSpec("invoice", ("invoice",)),
                FilterSpec("payment[type]", ("payment.type",)),
                FilterSpec("payment[payment_intent]", ("payment.payment_intent",)),
                FilterSpec("payment[charge]", ("payment.charge",)),
                FilterSpec("status", ("status",)),
            ),
            expandable=frozenset({"invoice", "payment.charge", "payment.payment_intent"}),
        ),
        ResourceSpec(
            name="customers",
            object="customer",
            url="/v1/customers",
            id_prefixes=("cus",),
            filters=_filters("email"),
            expandable=frozenset(
                {"default_source", "invoice_settings.default_payment_method", "test_clock"}
            ),
        ),
        ResourceSpec(
            name="subscriptions",
            object="subscription",
            url="/v1/subscriptions",
            id_prefixes=("sub",),
            filters=(
                FilterSpec("customer", ("customer",)),
                FilterSpec(
                    "status",
                    ("status",),
                    hidden_by_default=frozenset({"canceled"}),
                    match_all="all",
                ),
            ),
            expandable=frozenset(
                {
                    "application",
                    "customer",
                    "default_payment_method",
                    "default_source",
                    "latest_invoice",
                    "on_behalf_of",
                    "pending_setup_intent",
                    "schedule",
                    "test_clock",
                }
            ),  # fmt: skip
        ),
        ResourceSpec(
            name="checkout_sessions",
            object="checkout.session",
            url="/v1/checkout/sessions",
            id_prefixes=("cs",),
            filters=_filters("customer", "payment_intent", "subscription", "status"),
            expandable=frozenset(
                {
                    "customer",
                    "invoice",
                    "payment_intent",
                    "payment_link",
                    "setup_intent",
                    "subscription",
                }
            ),  # fmt: skip
        ),
        ResourceSpec(
            name="events",
            object="event",
            url="/v1/events",
            id_prefixes=("evt",),
            filters=(
                FilterSpec("type", ("type",), wildcard=True),
                FilterSpec("types", ("type",), many=True, wildcard=True),
            ),
            max_age_seconds=30 * 24 * 3600,
        ),
    )
}

# Id prefix (the part before the first underscore) to the resource that stores it.
RESOURCE_BY_PREFIX: dict[str, str] = {
    prefix: spec.name for spec in RESOURCES.values() for prefix in spec.id_prefixes
}
RESOURCE_BY_OBJECT: dict[str, ResourceSpec] = {spec.object: spec for spec in RESOURCES.values()}


def spec_of(obj: Mapping[str, Any]) -> ResourceSpec | None:
    """The resource an object belongs to, by its `object` field or else by its id prefix."""
    spec = RESOURCE_BY_OBJECT.get(obj.get("object", ""))
    if spec is None and isinstance(obj.get("id"), str):
        name = RESOURCE_BY_PREFIX.get(obj["id"].split("_", 1)[0])
        spec = RESOURCES[name] if name else None
    return spec


def field_values(obj: Mapping[str, Any], paths: Sequence[str]) -> set[str]:
    """The values an object holds at any of the dotted `paths`, for matching a filter.

    An expanded object found on the way counts by its id, so a fixture may embed an object
    where Stripe usually puts an id and still be found by the filter.
    """
    values: set[str] = set()
    for path in paths:
        value: Any = obj
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, dict):
            value = value.get("id")
        if isinstance(value, str):
            values.add(value)
    return values


@dataclass
class ListQuery:
    """One list request, already validated: filters, a `created` range, a cursor, a limit."""

    limit: int = 10
    # Filter parameter to accepted values; an object must match every filter given.
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Half-open range [created_gte, created_lt); None leaves that side open.
    created_gte: int | None = None
    created_lt: int | None = None
    starting_after: str | None = None
    ending_before: str | None = None


@dataclass
class ListPage:
    """The objects of one list page, newest first, and whether more match past the page."""

    data: list[dict[str, Any]]
    has_more: bool


@dataclass(frozen=True)
class _Check:
    """A filter tested object by object: the values at `paths` must (or must not) meet
    `values`."""

    paths: tuple[str, ...]
    values: frozenset[str]
    wanted: bool

    def passes(self, obj: dict[str, Any]) -> bool:
        return bool(field_values(obj, self.paths) & self.values) == self.wanted


class Collection:
    """All objects of one resource in one account, sorted and indexed for list queries."""

    def __init__(self, spec: ResourceSpec, objects: list[dict[str, Any]]) -> None:
        """Sort `objects` oldest first by (created, id) and index them by id and created."""
        self.spec = spec
        objects.sort(key=lambda o: (o["created"], o["id"]))
        self.objects = objects
        self.created = [o["created"] for o in objects]
        self.position = {o["id"]: i for i, o in enumerate(objects)}
        # Filter parameter to {value: ascending positions}; built on first use so that
        # loading stays fast and only the filters a client actually uses cost memory.
        self._indexes: dict[str, dict[str, list[int]]] = {}

    def __len__(self) -> int:
        return len(self.objects)

    def get(self, object_id: str) -> dict[str, Any] | None:
        """The object with this id, or None."""
        pos = self.position.get(object_id)
        return None if pos is None else self.objects[pos]

    def count(self, param: str, value: str) -> int:
        """How many objects match one filter value, e.g. the refunds of one charge."""
        return len(self._index(param).get(value, ()))

    def query(self, query: ListQuery, *, oldest_allowed: int | None = None) -> ListPage:
        """One page of objects matching `query`, newest first, as Stripe pages a list.

        Cursors must be ids of this collection (the caller checks); `oldest_allowed` is an
        extra lower bound on `created` for resources that only reach back so far.
        """
        lo, hi = self._bounds(query, oldest_allowed)

        primary, checks = self._plan(query)
        positions = self._walk(primary, lo, hi, newest_first=query.ending_before is None)

        page: list[dict[str, Any]] = []
        for pos in positions:
            obj = self.objects[pos]
            if all(check.passes(obj) for check in checks):
                page.append(obj)
                if len(page) > query.limit:
                    break

        has_more = len(page) > query.limit
        page = page[: query.limit]
        if query.ending_before is not None:
            # Walked upwards from the cursor to take the page nearest to it; Stripe still
            # returns it newest first.
            page.reverse()
        return ListPage(page, has_more)

    def _bounds(self, query: ListQuery, oldest_allowed: int | None) -> tuple[int, int]:
        gte = query.created_gte
        if oldest_allowed is not None:
            gte = oldest_allowed if gte is None else max(gte, oldest_allowed)
        lo = 0 if gte is None else bisect.bisect_left(self.created, gte)
        hi = len(self.objects)
        if query.created_lt is not None:
            hi = bisect.bisect_left(self.created, query.created_lt)
        if query.starting_after is not None:
            hi = min(hi, self.position[query.starting_after])
        if query.ending_before is not None:
            lo = max(lo, self.position[query.ending_before] + 1)
        return lo, hi

    def _plan(self, query: ListQuery) -> tuple[list[int] | None, list[_Check]]:
        """Pick the most selective index to walk, and the checks left for each object."""
        indexed: list[tuple[list[int], _Check]] = []
        for param, values in query.filters.items():
            spec = self.spec.filter(param)
            assert spec is not None, f"unvalidated filter {param}"
            if spec.match_all is not None and spec.match_all in values:
                continue
            accepted = self._resolve_values(spec, values)
            index = self._index(param)
            if len(accepted) == 1:
                positions = index.get(next(iter(accepted)), [])
            else:
                positions = sorted({p for v in accepted for p in index.get(v, ())})
            indexed.append((positions, _Check(spec.paths, frozenset(accepted), True)))

        checks = [
            _Check(spec.paths, spec.hidden_by_default, False)
            for spec in self.spec.filters
            if spec.hidden_by_default and spec.param not in query.filters
        ]
        if not indexed:
            return None, checks
        indexed.sort(key=lambda c: len(c[0]))
        return indexed[0][0], checks + [check for _, check in indexed[1:]]

    def _resolve_values(self, spec: FilterSpec, values: tuple[str, ...]) -> set[str]:
        if not spec.wildcard or not any("*" in v for v in values):
            return set(values)
        keys = self._index(spec.param).keys()
        return {k for v in values for k in keys if fnmatchcase(k, v)}

    def _index(self, param: str) -> dict[str, list[int]]:
        index = self._indexes.get(param)
        if index is None:
            spec = self.spec.filter(param)
            assert spec is not None, f"unknown filter {param}"
            index = {}
            for pos, obj in enumerate(self.objects):
                for value in field_values(obj, spec.paths):
                    index.setdefault(value, []).append(pos)
            self._indexes[param] = index
        return index

    @staticmethod
    def _walk(
        positions: list[int] | None, lo: int, hi: int, *, newest_first: bool
    ) -> Iterator[int]:
        """Positions in [lo, hi), from the full range or from an index's sorted positions."""
        if positions is None:
            span: Sequence[int] = range(lo, hi)
        else:
            a = bisect.bisect_left(positions, lo)
            b = bisect.bisect_left(positions, hi)
            # A range over the index avoids copying a large slice of it for one page.
            span = _IndexSpan(positions, a, b)
        return iter(reversed(span)) if newest_first else iter(span)


class _IndexSpan(Sequence[int]):
    """A view of positions[a:b] that can be walked in either direction without a copy."""

    def __init__(self, positions: list[int], a: int, b: int) -> None:
        self._positions, self._range = positions, range(a, max(a, b))

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, i):  # type: ignore[override]
        return self._positions[self._range[i]]

    def __iter__(self) -> Iterator[int]:
        return (self._positions[i] for i in self._range)

    def __reversed__(self) -> Iterator[int]:
        return (self._positions[i] for i in reversed(self._range))


@dataclass
class Account:
    """One connected account: its account object and its collections, one per resource."""

    id: str
    profile: dict[str, Any]
    collections: dict[str, Collection]
    revoked: bool = False

    def find(self, object_id: str) -> dict[str, Any] | None:
        """The stored object with this id, looked up in the resource its prefix names."""
        resource = RESOURCE_BY_PREFIX.get(object_id.split("_", 1)[0])
        return None if resource is None else self.collections[resource].get(object_id)


@dataclass
class SandboxStore:
    """Every account of a fixtures folder, plus an empty platform account."""

    accounts: dict[str, Account]
    platform: Account

    def account(self, account_id: str) -> Account | None:
        """The connected account with this id, or None when the fixtures have no such folder."""
        return self.accounts.get(account_id)


def load_fixtures(fixtures_dir: str | Path) -> SandboxStore:
    """Load and index every account folder under `fixtures_dir`.

    Raises FixtureError, naming the file and what to fix, when anything is malformed, so a
    bad fixture stops the sandbox at start rather than surfacing as odd API answers later.
    """
    root = Path(fixtures_dir)
    if not root.is_dir():
        raise FixtureError(
            f"Fixtures folder {root} does not exist or is not a folder; pass the folder that "
            "holds one acct_... subfolder per connected account."
        )
    started = time.perf_counter()

    accounts: dict[str, Account] = {}
    # Millions of new dicts would set off the cyclic garbage collector again and again,
    # doubling the load time, while none of them can be garbage yet.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for folder in sorted(root.iterdir()):
            if folder.name.startswith("."):
                continue
            if not folder.is_dir() or not folder.name.startswith("acct_"):
                raise FixtureError(
                    f"{folder} is not an account folder; the fixtures folder may only hold "
                    "subfolders named by account id (acct_...). Move or remove it."
                )
            accounts[folder.name] = _load_account(folder)
    finally:
        if gc_was_enabled:
            gc.enable()
    if not accounts:
        raise FixtureError(
            f"Fixtures folder {root} holds no acct_... subfolders; add one folder per "
            "connected account, each with charges.json and the other resource files."
        )

    for account in accounts.values():
        logger.info(
            "Loaded sandbox account %s: %s",
            account.id,
            ", ".join(f"{len(c)} {name}" for name, c in account.collections.items() if len(c)),
        )
    logger.info(
        "Loaded %d sandbox accounts from %s in %.1fs",
        len(accounts),
        root,
        time.perf_counter() - started,
    )
    platform = Account(
        PLATFORM_ACCOUNT_ID,
        _synthetic_account(PLATFORM_ACCOUNT_ID),
        {name: Collection(spec, []) for name, spec in RESOURCES.items()},
    )
    return SandboxStore(accounts, platform)


def _load_account(folder: Path) -> Account:
    expected = {spec.file for spec in RESOURCES.values()} | {"account.json"}
    for path in folder.iterdir():
        if path.suffix == ".json" and path.name not in expected:
            raise FixtureError(
                f"{path} is not a fixture file the sandbox knows; name it one of "
                f"{', '.join(sorted(expected))}, or remove it."
            )

    collections = {
        name: Collection(spec, _load_objects(folder / spec.file, spec))
        for name, spec in RESOURCES.items()
    }

    profile_path = folder / "account.json"
    if profile_path.exists():
        profile = _read_json(profile_path)
        if not isinstance(profile, dict) or profile.get("id", folder.name) != folder.name:
            raise FixtureError(
                f"{profile_path} must hold one account object whose id is {folder.name} "
                "(the folder name); fix the id or the folder name."
            )
    else:
        profile = _synthetic_account(folder.name)

    revoked = (folder / REVOKED_MARKER).exists()
    return Account(folder.name, profile, collections, revoked)


def _load_objects(path: Path, spec: ResourceSpec) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = _read_json(path)
    if not isinstance(data, list):
        raise FixtureError(
            f"{path} must hold a JSON array of {spec.object} objects but holds a "
            f"{type(data).__name__}; wrap the objects in [ ... ]."
        )

    seen: set[str] = set()
    for i, obj in enumerate(data):
        problem = None
        if not isinstance(obj, dict):
            problem = f"is a {type(obj).__name__}, not an object"
        elif not isinstance(obj.get("id"), str) or not obj["id"]:
            problem = 'has no string "id"'
        elif type(obj.get("created")) is not int:
            problem = 'has no integer "created" (Unix seconds)'
        elif obj.get("object", spec.object) != spec.object:
            problem = f'is a "{obj["object"]}" object, not a "{spec.object}"'
        elif obj["id"] in seen:
            problem = f"repeats the id {obj['id']}"
        if problem:
            raise FixtureError(
                f"{path}: item {i} {problem}; every item must be a {spec.object} object "
                'with a unique string "id" and an integer "created". Fix or remove that item.'
            )
        seen.add(obj["id"])
    return data


def _read_json(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise FixtureError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
            "fix the file or remove it."
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise FixtureError(
            f"{path} cannot be read ({e}); check the file and its permissions."
        ) from None


def _synthetic_account(account_id: str) -> dict[str, Any]:
    """A minimal account object for folders without account.json."""
    return {
        "id": account_id,
        "object": "account",
        "business_profile": {"name": None, "url": None},
        "business_type": None,
        "charges_enabled": True,
        "country": "US",
        "created": 1_600_000_000,
        "default_currency": "usd",
        "details_submitted": True,
        "email": None,
        "metadata": {},
        "payouts_enabled": True,
        "settings": {"dashboard": {"display_name": None, "timezone": "Etc/UTC"}},
        "type": "standard",
    }
