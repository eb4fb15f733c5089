"""Filters of the dashboard's lists: type prefix, and data search bounded to the newest
rows; and what a schedule call reports it cancelled. Both dialects."""

from __future__ import annotations

from jobtable.store import Store

from .test_conformance import new


def test_type_prefix_is_text_not_a_pattern(store: Store) -> None:
    store.schedule([new("send_report", 1), new("send_invoice", 2), new("sync", 3),
                    new("sendXreport", 4)])
    assert [j.user_id for j in store.list_jobs(type_prefix="send_")] == [2, 1]
    assert store.count_jobs(type_prefix="send") == 3
    assert store.count_jobs(type_prefix="s%") == 0
    assert store.count_jobs(type_prefix="") == 4  # empty: no filter


def test_data_search_is_case_blind_literal_and_bounded_to_the_newest_rows(
        store: Store) -> None:
    store.schedule([new("mail", u, data={"to": f"User{u}@Example.com", "note": "50%_off!"})
                    for u in range(5)])
    assert [j.user_id for j in store.search_data("user3@example", window=100)] == [3]
    assert len(store.search_data("EXAMPLE.COM", window=100)) == 5
    assert len(store.search_data("50%_off!", window=100)) == 5
    assert store.search_data("50x_off", window=100) == []  # % and _ are literal
    assert store.search_data("5%off", window=100) == []
    # Only the newest `window` ids are read.
    assert [j.user_id for j in store.search_data("example", window=2)] == [4, 3]
    assert [j.user_id for j in store.search_data("example", window=100, limit=2,
                                                 offset=1)] == [3, 2]
    assert store.search_data("example", window=100, user_id=1, status="pending")[0].user_id == 1
    assert store.search_data("example", window=100, status="failed") == []
    assert len(store.search_data("example", window=100, type_prefix="ma")) == 5


def test_schedule_reports_the_rows_it_cancelled(store: Store) -> None:
    first = store.schedule([new("a", 1)])[0]
    other = store.schedule([new("a", 2)])[0]
    cancelled: list[int] = []
    second = store.schedule([new("a", 1)], cancelled=cancelled)[0]
    assert cancelled == [first.id]
    cancelled = []
    store.schedule([new("a", 1, cron="0 0 * * *"), new("b", 1)], cancelled=cancelled)
    assert cancelled == [second.id]
    assert store.get_job(other.id).finished is None  # type: ignore[union-attr]
