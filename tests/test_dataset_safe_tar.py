"""Robust shard reading: every kind of damaged shard or member is skipped and counted, and the
good samples around it survive."""

from __future__ import annotations

import io
import tarfile
from collections import Counter

import pytest

from mawsflow.dataset.safe_tar import iter_tar_samples, split_member_name


def tar_bytes(members: list[tuple[str, bytes] | tarfile.TarInfo]) -> bytes:
    """A tar archive of (name, data) regular files and raw TarInfo entries (links, dirs)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
                continue
            name, data = member
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read(data: bytes, **kwargs) -> tuple[list[tuple[str, dict[str, bytes], int]], Counter]:
    problems: Counter[str] = Counter()
    samples = [
        (s.key, s.members, s.ordinal)
        for s in iter_tar_samples(io.BytesIO(data), problems, **kwargs)
    ]
    return samples, problems


def sample(key: str, caption: str = "#dog") -> list[tuple[str, bytes]]:
    return [(f"{key}.jpg", b"\xff\xd8\xff" + key.encode() * 300), (f"{key}.txt", caption.encode())]


def test_members_group_into_samples_by_key():
    data = tar_bytes(
        [
            *sample("a"),
            ("./b.PNG", b"png"),
            ("./b.txt", b"#cat"),
            ("dir/c.labels.json", b"[1]"),
            ("dir/c.jpg", b"j"),
        ]
    )
    samples, problems = read(data)
    assert [(key, sorted(members), ordinal) for key, members, ordinal in samples] == [
        ("a", ["jpg", "txt"], 0),
        ("b", ["png", "txt"], 1),
        ("dir/c", ["jpg", "labels.json"], 2),
    ]
    assert not problems


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", ("a", "jpg")),
        ("x/y/123.labels.json", ("x/y/123", "labels.json")),
        ("a.TXT", ("a", "txt")),
        (".DS_Store", None),
        ("noextension", None),
        ("dir/.hidden", None),
    ],
)
def test_member_names_split_like_webdataset(name, expected):
    assert split_member_name(name) == expected


def test_unsafe_paths_are_skipped_and_neighbours_survive():
    data = tar_bytes(
        [
            *sample("good1"),
            ("/etc/passwd.txt", b"root"),
            ("../escape.jpg", b"x"),
            ("a/../../b.png", b"x"),
            *sample("good2"),
        ]
    )
    samples, problems = read(data)
    assert [key for key, _, _ in samples] == ["good1", "good2"]
    assert problems == {"unsafe_member_path": 3}


def test_links_devices_hidden_files_and_oversized_members_are_skipped():
    link = tarfile.TarInfo("evil.jpg")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/shadow"
    fifo = tarfile.TarInfo("pipe.txt")
    fifo.type = tarfile.FIFOTYPE
    directory = tarfile.TarInfo("somedir")
    directory.type = tarfile.DIRTYPE
    data = tar_bytes(
        [
            directory,
            *sample("good1"),
            link,
            fifo,
            (".DS_Store", b"junk"),
            ("big.jpg", b"\xff\xd8\xff" + b"0" * 5000),
            ("big.txt", b"#dog"),
            *sample("good2"),
        ]
    )
    samples, problems = read(data, max_member_bytes=2000)
    assert [(key, sorted(members)) for key, members, _ in samples] == [
        ("good1", ["jpg", "txt"]),
        ("big", ["txt"]),  # the caption alone is left; the build drops it as missing_image
        ("good2", ["jpg", "txt"]),
    ]
    assert problems == {"non_file_member": 2, "member_without_key": 1, "oversized_member": 1}


def test_duplicate_keys_keep_the_first_sample():
    data = tar_bytes(
        [
            *sample("a", "#first"),
            *sample("a", "#adjacent copy"),
            *sample("b"),
            *sample("a", "#later copy"),
            *sample("c"),
        ]
    )
    samples, problems = read(data)
    assert [(key, members["txt"]) for key, members, _ in samples] == [
        ("a", b"#first"),
        ("b", b"#dog"),
        ("c", b"#dog"),
    ]
    assert [ordinal for _, _, ordinal in samples] == [0, 1, 2]
    assert problems == {"duplicate_key": 2}


def members_of(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return archive.getmembers()


def test_truncated_inside_member_data_keeps_earlier_samples():
    whole = tar_bytes([*sample("a"), *sample("b"), *sample("c")])
    b_image = members_of(whole)[2]
    samples, problems = read(whole[: b_image.offset_data + 100])
    assert [key for key, _, _ in samples] == ["a"]
    assert problems == {"truncated_shard": 1}


def test_truncated_after_a_complete_member_is_detected():
    whole = tar_bytes([*sample("a"), *sample("b")])
    last = members_of(whole)[-1]
    end_of_last_member = last.offset_data + 512  # its data fits one block
    samples, problems = read(whole[:end_of_last_member])
    assert [(key, sorted(members)) for key, members, _ in samples] == [
        ("a", ["jpg", "txt"]),
        ("b", ["jpg", "txt"]),
    ]
    assert problems == {"truncated_shard": 1}


def test_truncated_inside_a_header_is_detected():
    whole = tar_bytes([*sample("a"), *sample("b")])
    b_header = members_of(whole)[2].offset
    samples, problems = read(whole[: b_header + 100])
    assert [key for key, _, _ in samples] == ["a"]
    assert problems == {"truncated_shard": 1}


def test_corrupt_header_mid_shard_keeps_earlier_samples():
    whole = tar_bytes([*sample("a"), *sample("b")])
    start = members_of(whole)[2].offset
    corrupt = whole[:start] + b"\x07" * 512 + whole[start + 512 :]
    samples, problems = read(corrupt)
    assert [key for key, _, _ in samples] == ["a"]
    assert problems == {"corrupt_shard": 1}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty_shard"),
        (tar_bytes([]), "empty_shard"),
        (b"\x00" * 100, "truncated_shard"),
        (b"this is not a tar file at all" * 40, "corrupt_shard"),
    ],
    ids=["zero-bytes", "end-marker-only", "partial-first-header", "not-a-tar"],
)
def test_unreadable_shards_yield_nothing_and_are_counted(data, problem):
    samples, problems = read(data)
    assert samples == []
    assert problems == {problem: 1}
