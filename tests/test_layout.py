"""Key layout: shards, cluster hash tags, ordering keys, and the conf checks around them."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot as redis_py_key_slot

from gateway.conf import read_conf
from gateway.errors import LayoutError
from gateway.keys import CLUSTER_SLOTS, Keys, Layout, hash_tag, key_slot, ordering_key

from .conftest import write_conf


def test_key_slots_are_the_ones_redis_cluster_computes() -> None:
    """Checked against redis-py's own implementation (what the cluster client routes
    by), and the specification's CRC16 test vector ("123456789" -> 0x31C3 = 12739).
    tests/test_cluster.py checks real placement against a real cluster."""
    assert key_slot("123456789") == 12739
    for key in ["tocsin:{0.1}:events", "{user1000}.following", "a{}b", "{}{x}", "x{", "é"]:
        assert key_slot(key) == redis_py_key_slot(key.encode()), key


def test_one_shard_keeps_the_untagged_names_existing_data_uses() -> None:
    [shard] = Layout().shards
    assert shard == Keys()
    assert (shard.events, shard.deliveries("hook"), shard.record("d1")) == (
        "tocsin:events",
        "tocsin:deliveries:hook",
        "tocsin:delivery:d1",
    )


def test_a_shards_keys_share_one_slot_and_shards_spread_over_slot_ranges() -> None:
    """Every key a script or MULTI touches together is in its shard's slot; shard i's
    slot is in the i-th of N equal ranges, so an evenly split cluster spreads them."""
    for count in (1, 3, 6, 16):
        layout = Layout("tocsin", count, cluster=True)
        for i, shard in enumerate(layout.shards):
            slots = {
                key_slot(k)
                for k in (
                    shard.events,
                    shard.routed_through,
                    shard.dedupe("evt_1"),
                    shard.deliveries("hook"),
                    shard.retries,
                    shard.dead,
                    shard.record("d1"),
                    shard.history,
                    shard.scenario("relance", "inv-1"),
                    shard.scenarios,
                    shard.tombstone("relance", "inv-1"),
                    shard.timers,
                    shard.steps,
                    shard.endpoint("hook"),
                )
            }
            assert len(slots) == 1, (count, i, slots)
            [slot] = slots
            assert i * CLUSTER_SLOTS // count <= slot < (i + 1) * CLUSTER_SLOTS // count


def test_customers_spread_over_shards_and_each_stays_in_one() -> None:
    layout = Layout("tocsin", 3, cluster=True)
    placed = collections.Counter(
        layout.shard(ordering_key(f"cus_{n}", "evt")).index for n in range(3000)
    )
    assert set(placed) == {0, 1, 2}
    assert min(placed.values()) > 800, placed  # ~1000 each
    assert layout.shard(ordering_key("cus_7", "evt_a")) == layout.shard(
        ordering_key("cus_7", "evt_b")
    )


def test_an_event_without_customer_is_ordered_by_its_id_or_the_tag_in_it() -> None:
    assert ordering_key(None, "evt_1") == "evt_1"
    assert ordering_key(None, "refund_{inv-42}_1") == "inv-42" == hash_tag("x{inv-42}y")
    assert ordering_key("cus_1", "evt_{x}") == "cus_1"


@pytest.mark.parametrize(
    ("redis_table", "problem"),
    [
        ("cluster = true", "redis.cluster: a cluster needs redis.url"),
        ('url = "unix:///tmp/r.sock"\ncluster = true', "redis.url: a cluster is reached over TCP"),
        ('prefix = "app{1}"', "redis.prefix: no braces"),
        ("shards = 0", "redis.shards"),
    ],
)
def test_check_names_cluster_settings_that_cannot_work(
    tmp_path: Path, redis_table: str, problem: str
) -> None:
    conf = tmp_path / "tocsin.toml"
    conf.write_text(f"[redis]\n{redis_table}\n")
    _, problems = read_conf(conf)
    assert any(problem in p for p in problems), problems


async def test_a_gateway_refuses_a_shard_count_other_than_its_datas(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis, start_gateway: object
) -> None:
    """Events queued under 3 shards' keys would never be read by a 1-shard gateway:
    it refuses to start, naming both counts, and leaves the data alone."""
    redis_client.set("tocsin:layout", "3")
    conf = write_conf(tmp_path, redis_url=redis_url)
    assert callable(start_gateway)
    with pytest.raises(LayoutError, match=r"redis.shards = 1, but .* written with 3 shard"):
        await start_gateway(conf)
    assert redis_client.get("tocsin:layout") == b"3"
