"""Shard groups: how the input is cut into the slices the map phases fan out over."""

from __future__ import annotations

import pytest

from mawsflow.dataset.layout import BuildLayout, ShardGroup, list_input_shards


@pytest.mark.parametrize(("num_shards", "groups"), [(10, 3), (9, 3), (2, 5), (1, 1), (1000, 7)])
def test_groups_cover_the_input_once_in_balanced_contiguous_slices(num_shards, groups):
    ranges = [group.shard_range(num_shards) for group in ShardGroup(0, groups).all_groups()]
    assert [ordinal for r in ranges for ordinal in r] == list(range(num_shards))
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    ("spec", "group"), [("0/3", ShardGroup(0, 3)), (" 2/3 ", ShardGroup(2, 3))]
)
def test_parse(spec, group):
    assert ShardGroup.parse(spec) == group
    assert group.name == f"group-{group.index:05d}-of-00003"


@pytest.mark.parametrize("spec", ["3/3", "1", "-1/3", "a/b", "1/0"])
def test_parse_rejects(spec):
    with pytest.raises(ValueError, match="shard group"):
        ShardGroup.parse(spec)


def test_input_listing_takes_tar_files_under_the_prefix_only(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("in/b.tar", "in/a.tar", "in/sub/c.tar", "in/notes.txt", "in2.tar"):
        (tmp_path / name).write_bytes(b"")
    shards = list_input_shards(str(tmp_path / "in"))
    assert [s.removeprefix(str(tmp_path)) for s in shards] == [
        "/in/a.tar",
        "/in/b.tar",
        "/in/sub/c.tar",
    ]
    with pytest.raises(ValueError, match="no .tar shards"):
        list_input_shards(str(tmp_path / "empty"))


def test_output_names():
    layout = BuildLayout("s3://bucket/ds")
    assert layout.shard(12) == "s3://bucket/ds/shards/train-000012.tar"
    assert layout.shard_name(3) == "shards/train-000003.tar"
    assert layout.tail(ShardGroup(1, 2)) == "s3://bucket/ds/_work/tails/group-00001-of-00002.tar"
