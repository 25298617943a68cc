"""The shared rate limit and the site registry."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from trace_pipelines.resources.rate_limit import SharedRateLimit, wait_for_slots
from trace_pipelines.sites import SiteError, SiteRegistry


def _reserve_slots(state_dir: str, count: int, queue) -> None:
    limit = SharedRateLimit(Path(state_dir), "acct_x/v1/charges", requests_per_second=50)
    queue.put([limit.reserve() for _ in range(count)])


def test_rate_limit_spaces_slots_across_processes(tmp_path: Path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=_reserve_slots, args=(str(tmp_path), 20, queue)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    slots = sorted(slot for _ in workers for slot in queue.get(timeout=60))
    for worker in workers:
        worker.join()

    assert len(slots) == 60
    gaps = [later - earlier for earlier, later in zip(slots, slots[1:], strict=False)]
    assert min(gaps) >= 1 / 50 - 1e-6


def test_rate_limits_with_different_names_do_not_share_slots(tmp_path: Path):
    charges = SharedRateLimit(tmp_path, "acct_x/v1/charges", requests_per_second=1)
    invoices = SharedRateLimit(tmp_path, "acct_x/v1/invoices", requests_per_second=1)
    first = charges.reserve()
    assert invoices.reserve() - first < 0.5
    assert charges.reserve() - first >= 1.0 - 1e-6


def test_admit_holds_a_request_back_while_the_last_second_is_full(tmp_path: Path):
    # A booked slot says when a request may start; a thread that woke late must still not
    # start beside the requests booked after it. `admit` counts real starts in a sliding second.
    limit = SharedRateLimit(tmp_path, "acct_x/v1/charges", requests_per_second=5)
    before = time.time()
    for _ in range(5):
        limit.admit()
    assert time.time() - before < 0.5, "five starts fit in one second at 5/s"
    limit.admit()
    assert time.time() >= before + 1.0


def test_wait_for_slots_admits_on_every_limit(tmp_path: Path):
    account = SharedRateLimit(tmp_path, "acct_x", requests_per_second=100)
    endpoint = SharedRateLimit(tmp_path, "acct_x/v1/charges", requests_per_second=2)
    before = time.time()
    # Two requests started on the endpoint without booking slots (say, a thread that woke
    # late): the endpoint's next slot is free, but its last second is full.
    endpoint.admit()
    endpoint.admit()
    wait_for_slots(account, endpoint)
    assert time.time() >= before + 1.0


def test_a_rate_limit_file_of_the_older_layout_is_read(tmp_path: Path):
    limit = SharedRateLimit(tmp_path, "acct_x/v1/charges", requests_per_second=1)
    later = time.time() + 30
    limit.path.write_text(repr(later))  # the next free slot alone, as older versions wrote it
    assert limit.reserve() == later


@pytest.fixture
def registry(tmp_path: Path) -> SiteRegistry:
    return SiteRegistry(tmp_path / "sites.sqlite")


def test_connect_records_the_site_and_lists_it(registry: SiteRegistry):
    site = registry.connect("site_a", " Shop.Example.com ", "acct_1Abc")
    assert (site.site_id, site.domain, site.stripe_account_id, site.status) == (
        "site_a",
        "shop.example.com",
        "acct_1Abc",
        "connected",
    )
    assert [s.site_id for s in registry.list()] == ["site_a"]


def test_an_account_feeds_one_site_at_a_time(registry: SiteRegistry):
    registry.connect("site_a", "a.example", "acct_1Abc")
    with pytest.raises(SiteError, match="already connected to site 'site_a'"):
        registry.connect("site_b", "b.example", "acct_1Abc")
    assert [s.site_id for s in registry.list()] == ["site_a"]


def test_backfill_window_only_ever_grows_back_in_time(registry: SiteRegistry):
    from datetime import date

    registry.connect("site_a", "a.example", "acct_1Abc")
    registry.extend_backfill_window("site_a", date(2026, 3, 1))
    registry.extend_backfill_window("site_a", date(2026, 5, 1))
    assert registry.get("site_a").backfill_start == date(2026, 3, 1)


@pytest.mark.parametrize(
    ("site_id", "domain", "account", "message"),
    [
        ("Site A", "a.example", "acct_1Abc", "not a valid site id"),
        ("site|a", "a.example", "acct_1Abc", "not a valid site id"),
        ("site_a", "not a domain", "acct_1Abc", "is not a domain name"),
        ("site_a", "a.example", "sk_test_123", "is not a Stripe account id"),
    ],
)
def test_connect_rejects_bad_input_with_a_clear_message(
    registry: SiteRegistry, site_id, domain, account, message
):
    with pytest.raises(SiteError, match=message):
        registry.connect(site_id, domain, account)
    assert registry.list() == []


def test_an_unknown_site_names_the_command_that_registers_it(registry: SiteRegistry):
    with pytest.raises(SiteError, match="trace-pipelines sites connect"):
        registry.get("site_zzz")


def test_disconnect_keeps_the_site_and_frees_its_account(registry: SiteRegistry):
    registry.connect("site_a", "a.example", "acct_1Abc")
    site = registry.disconnect("site_a")
    assert (site.status, site.disconnected_at is not None) == ("disconnected", True)
    assert registry.site_for_account("acct_1Abc").site_id == "site_a"
    registry.connect("site_b", "b.example", "acct_1Abc")  # no longer refused
    assert registry.site_for_account("acct_1Abc").site_id == "site_b"


def test_reconnecting_clears_the_disconnect_and_delete_forgets_the_site(registry: SiteRegistry):
    registry.connect("site_a", "a.example", "acct_1Abc")
    registry.disconnect("site_a")
    assert registry.connect("site_a", "a.example", "acct_1Abc").disconnected_at is None
    registry.delete("site_a")
    registry.delete("site_a")
    assert registry.list() == []


def test_lookup_claims_hand_each_id_to_one_run_and_release_them_on_failure(tmp_path: Path):
    from trace_pipelines.assets.stripe_tables import CHECKOUT_SESSIONS
    from trace_pipelines.resources.raw_store import RawStore

    store = RawStore(tmp_path / "raw")
    # the second claim is taken while the first is still held
    with (
        store.lookup_claims(CHECKOUT_SESSIONS, "site_a", {"sub_1", "sub_2"}) as first,
        store.lookup_claims(CHECKOUT_SESSIONS, "site_a", {"sub_2", "sub_3"}) as second,
    ):
        assert (first, second) == ({"sub_1", "sub_2"}, {"sub_3"})
    with (
        pytest.raises(RuntimeError),
        store.lookup_claims(CHECKOUT_SESSIONS, "site_a", {"sub_4"}) as failing,
    ):
        assert failing == {"sub_4"}
        raise RuntimeError("the lookup failed")
    with store.lookup_claims(CHECKOUT_SESSIONS, "site_a", {"sub_1", "sub_4"}) as retry:
        assert retry == {"sub_4"}
