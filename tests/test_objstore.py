"""Object store: layout round trips, zero-copy read-only reads, keepalive, allocator, server life cycle."""
from __future__ import annotations

import gc
import multiprocessing
import os
import stat
import uuid
import weakref

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.real import objstore as os_
from testbed.real.objstore import (ALIGN, Arena, BlockAllocator, ObjectExists, ObjectNotFound, ObjState,
                                   StoreClient, StoreError, StoreFull, StoreServer, cleanup_prefix,
                                   deserialize_bytes, read_layout, serialize, write_layout)

KiB = 1024


def new_prefix() -> str:
    return f"tbtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def prefix():
    return new_prefix()


@pytest.fixture
def store(prefix, tmp_path):
    """A small store (64 KiB segments, 256 KiB capacity) with validation on, and a client."""
    server = StoreServer(prefix, capacity_bytes=256 * KiB, spill_dir=tmp_path / "spill", segment_bytes=64 * KiB,
                         validate=True)
    client = StoreClient()
    yield server, client
    client.close()
    server.close()


def shm_files(prefix: str) -> list[str]:
    return sorted(f for f in os.listdir(os_.SHM_DIR) if f.startswith(prefix))


def put(server: StoreServer, client: StoreClient, oid, value, client_id="w0"):
    ser = serialize(value)
    seg, off = server.create(oid, ser.size, client_id)
    client.write(seg, off, ser)
    server.seal(oid)
    return ser


def get(server: StoreServer, client: StoreClient, oid, keepalive=None, client_id=None):
    seg, off, size = server.get(oid, pin_for=client_id)
    return client.read(seg, off, size, keepalive)


class Token:
    """Something a weakref can watch."""


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------- serialization

def _closure():
    k, xs = 3, [1, 2]
    return lambda x: x * k + sum(xs)


VALUES = {
    "none": None, "int": 7, "bigint": -2 ** 70, "float": 2.5, "str": "héllo", "bytes_empty": b"",
    "bytes_one": b"x", "bytearray": bytearray(b"abc"), "dict": {"a": [1, (2, 3)], 4: None},
    "f64": np.linspace(0, 1, 1001), "i8": np.arange(-5, 5, dtype=np.int8),
    "c128": np.array([1 + 2j, 3 - 4j]), "bool": np.array([True, False, True]),
    "unicode": np.array(["a", "bcd"]), "datetime": np.array(["2024-01-01"], dtype="datetime64[D]"),
    "structured": np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    "zero_d": np.array(4.25), "empty": np.zeros(0), "empty_2d": np.zeros((3, 0)),
    "strided": np.arange(30.0)[::3], "strided_2d": np.arange(60).reshape(6, 10)[::2, 1::3],
    "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)), "object": np.array([1, "x"], dtype=object),
    "list_of_arrays": [np.ones(3), np.eye(2, dtype=np.float32), np.arange(5, dtype=np.uint16)],
}


@pytest.mark.parametrize("name", sorted(VALUES))
def test_values_round_trip_inline_and_through_shared_memory(name, store):
    """Every kind of value comes back equal, inline (bytes) and from shared memory."""
    server, client = store
    value = VALUES[name]
    assert same(value, deserialize_bytes(serialize(value).to_bytes()))
    put(server, client, name, value)
    assert same(value, get(server, client, name))


def test_functions_round_trip_by_value(store):
    """Lambdas and closures travel by value (cloudpickle)."""
    server, client = store
    put(server, client, "f", lambda x: x + 1)
    put(server, client, "g", _closure())
    assert get(server, client, "f")(1) == 2
    assert get(server, client, "g")(2) == 9
    assert deserialize_bytes(serialize(_closure()).to_bytes())(0) == 3


def test_arrays_travel_out_of_band_even_when_not_contiguous():
    """A strided array becomes one contiguous out-of-band buffer, not an in-band copy."""
    for a in (np.arange(100_000.0), np.arange(200_000.0)[::2], np.zeros((400, 500))[::2, ::2]):
        ser = serialize(a)
        assert len(ser.buffers) == 1 and ser.buffers[0].nbytes == a.nbytes
        assert len(ser.inband) < 400


def test_to_bytes_is_the_layout_write_layout_writes():
    value = [np.arange(7, dtype=np.int8), "x", np.ones((3, 3))]
    ser = serialize(value)
    dest = bytearray(ser.size + 10)
    write_layout(memoryview(dest), ser)
    assert bytes(dest[:ser.size]) == ser.to_bytes()
    assert same(value, read_layout(memoryview(dest)))
    with pytest.raises(ValueError, match="needs"):
        write_layout(memoryview(bytearray(ser.size - 1)), ser)


def test_read_layout_rejects_what_is_not_a_layout():
    with pytest.raises(StoreError, match="magic"):
        read_layout(b"\0" * 64)
    with pytest.raises(StoreError, match="shorter"):
        read_layout(b"TBOB")
    with pytest.raises(StoreError, match="only"):
        read_layout(serialize(np.ones(10)).to_bytes()[:-8])


def test_arrays_read_back_are_read_only_and_zero_copy(store):
    """A read maps the shared memory: same address, and writing to it raises."""
    server, client = store
    ser = put(server, client, "a", np.arange(1000.0))
    seg, off, size = server.get("a")
    arr = client.read(seg, off, size)
    assert not arr.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        arr[0] = 1.0
    segment = np.frombuffer(client.attach(seg), dtype=np.uint8)
    assert np.shares_memory(arr, segment)
    assert arr.ctypes.data == segment.ctypes.data + off + ser.offsets[0]
    inline = deserialize_bytes(bytearray(ser.to_bytes()))   # even a writable source reads read-only
    assert not inline.flags.writeable


def test_every_buffer_is_64_byte_aligned(store):
    server, client = store
    value = [np.arange(n, dtype=dt) for n, dt in [(3, np.int8), (7, np.float64), (1, np.int16),
                                                   (13, np.complex64), (0, np.float32), (5, np.uint8)]]
    ser = put(server, client, "v", value)
    assert all(off % ALIGN == 0 for off in ser.offsets)
    for arr in get(server, client, "v"):
        assert arr.ctypes.data % 64 == 0


def test_keepalive_lives_exactly_as_long_as_a_value_derived_from_the_buffers(store):
    """The runtime unpins when keepalive dies: only then may the memory be reused."""
    server, client = store
    put(server, client, "a", {"x": np.arange(100.0).reshape(10, 10), "y": [np.ones(4)]})
    token = Token()
    alive = weakref.ref(token)
    value = get(server, client, "a", keepalive=token)
    del token
    view = value["x"][2:5, ::2].T          # a view of a view of the unpickled array
    y = value["y"][0]
    del value
    assert alive() is not None
    del view
    assert alive() is not None            # y still reads the buffer
    del y
    assert alive() is None                # refcounting alone frees it: no gc.collect() needed
    token = Token()
    alive = weakref.ref(token)
    value = get(server, client, "a", keepalive=token)
    del token, value
    gc.collect()
    assert alive() is None


def test_a_value_without_buffers_does_not_hold_the_keepalive(store):
    server, client = store
    put(server, client, "d", {"a": 1, "b": "two"})
    token = Token()
    alive = weakref.ref(token)
    value = get(server, client, "d", keepalive=token)
    del token
    assert alive() is None and value == {"a": 1, "b": "two"}


# --------------------------------------------------------------------------- allocator

def test_block_allocator_coalesces_freed_neighbours():
    b = BlockAllocator()
    b.add_region(0, 1024)
    blocks = [b.alloc(256) for _ in range(4)]
    assert blocks == [(0, 0), (0, 256), (0, 512), (0, 768)]
    assert b.alloc(64) is None                                  # exhausted
    b.free(0, 256)
    b.free(0, 768)
    assert b.free_blocks() == [(0, 256, 256), (0, 768, 256)]
    b.free(0, 512)                                              # joins both neighbours
    assert b.free_blocks() == [(0, 256, 768)]
    b.free(0, 0)
    assert b.free_blocks() == [(0, 0, 1024)] and b.used_bytes == 0
    with pytest.raises(ValueError, match="no live block"):
        b.free(0, 0)


def test_block_allocator_is_best_fit_and_deterministic():
    b = BlockAllocator()
    b.add_region(0, 1024)
    b.add_region(1, 128)
    assert b.alloc(128) == (1, 0)       # the exact fit, not the first big block
    assert b.alloc(64) == (0, 0)
    b.add_region(2, 64)
    assert b.alloc(64) == (2, 0)


@settings(max_examples=150, deadline=None)
@given(regions=st.lists(st.integers(1, 64), min_size=1, max_size=4),
       ops=st.lists(st.tuples(st.booleans(), st.integers(1, 40), st.integers(0, 10 ** 6)), max_size=120))
def test_block_allocator_never_overlaps_and_coalesces_back(regions, ops):
    """Random alloc/free never hands out overlapping live blocks; freeing all leaves one block a region."""
    b = BlockAllocator()
    for r, pages in enumerate(regions):
        b.add_region(r, pages * ALIGN)
    live: list[tuple[int, int, int]] = []
    for is_alloc, units, pick in ops:
        if is_alloc or not live:
            got = b.alloc(units * ALIGN)
            if got is None:
                assert all(s < units * ALIGN for _, _, s in b.free_blocks())
                continue
            r, off = got
            assert off + units * ALIGN <= b.regions[r]
            for r2, off2, size2 in live:
                assert r2 != r or off + units * ALIGN <= off2 or off2 + size2 <= off
            live.append((r, off, units * ALIGN))
        else:
            r, off, size = live.pop(pick % len(live))
            assert b.free(r, off) == size
        assert b.used_bytes == sum(s for _, _, s in live)
    for r, off, _ in live:
        b.free(r, off)
    assert b.free_blocks() == [(r, 0, pages * ALIGN) for r, pages in enumerate(regions)]


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(1, 40 * KiB), st.integers(0, 10 ** 6)), max_size=40))
def test_arena_never_overlaps_and_stays_within_capacity(ops):
    """The same property over real segments, with objects bigger than a segment mixed in."""
    arena = Arena(new_prefix(), capacity_bytes=128 * KiB, segment_bytes=16 * KiB)
    try:
        live = []
        for is_alloc, size, pick in ops:
            if is_alloc or not live:
                got = arena.alloc(size)
                if got is not None:
                    live.append(got)
            else:
                arena.free(*live.pop(pick % len(live)))
            arena.check()
            assert arena.reserved_bytes <= arena.capacity_bytes
        for seg, off in live:
            arena.free(seg, off)
        arena.check()
        assert arena.used_bytes == 0
        assert arena.trim() > 0 or not arena.segments
        assert arena.segments == []
    finally:
        arena.close()


def test_arena_reuses_freed_memory_before_making_segments(prefix):
    arena = Arena(prefix, capacity_bytes=1 << 20, segment_bytes=64 * KiB)
    try:
        a = arena.alloc(40 * KiB)
        arena.free(*a)
        assert arena.alloc(40 * KiB) == a
        assert arena.segments == [f"{prefix}-0"]
        assert shm_files(prefix) == [f"{prefix}-0"]
        mode = os.stat(os.path.join(os_.SHM_DIR, f"{prefix}-0")).st_mode
        assert stat.S_IMODE(mode) == 0o600
    finally:
        arena.close()
    assert shm_files(prefix) == []


def test_an_object_larger_than_a_segment_gets_its_own_segment(prefix):
    arena = Arena(prefix, capacity_bytes=1 << 20, segment_bytes=64 * KiB)
    try:
        small = arena.alloc(1000)
        big = arena.alloc(200 * KiB)
        assert big == (f"{prefix}-1", 0) and small[0] == f"{prefix}-0"
        assert arena.view(big[0]).nbytes >= 200 * KiB
        assert arena.alloc(1000)[0] == f"{prefix}-0"            # small ones stay in the small segment
        arena.free(*big)
        assert arena.alloc(150 * KiB) == big                    # the freed big segment is reused
        arena.check()
    finally:
        arena.close()


def test_arena_exhaustion_returns_none_and_drops_free_segments_for_room(prefix):
    arena = Arena(prefix, capacity_bytes=192 * KiB, segment_bytes=64 * KiB)
    try:
        a = arena.alloc(64 * KiB)
        b = arena.alloc(64 * KiB)
        c = arena.alloc(64 * KiB)
        assert arena.alloc(64) is None                          # full: three full segments
        assert arena.alloc(1 << 20) is None                     # bigger than the capacity
        arena.free(*a)
        arena.free(*b)
        assert arena.alloc(100 * KiB) == (f"{prefix}-3", 0)     # two free segments unlinked for it
        assert arena.take_dropped() == [f"{prefix}-0", f"{prefix}-1"]
        assert shm_files(prefix) == sorted([c[0], f"{prefix}-3"])
        arena.check()
    finally:
        arena.close()


def test_prefault_touches_fresh_segments_without_changing_data(prefix):
    arena = Arena(prefix, capacity_bytes=256 * KiB, segment_bytes=64 * KiB)
    try:
        seg, off = arena.alloc(100)
        arena.view(seg)[off:off + 5] = b"hello"
        assert arena.prefault(100 * KiB) == 128 * KiB           # the old segment, then one new one
        assert bytes(arena.view(seg)[off:off + 5]) == b"hello"
        assert arena.prefault(1 << 30) == 128 * KiB             # the rest, up to the capacity
        assert arena.reserved_bytes == 256 * KiB
    finally:
        arena.close()


def test_bad_arguments_are_named(prefix, tmp_path):
    with pytest.raises(ValueError, match="prefix"):
        Arena("a/b", capacity_bytes=1 << 20)
    with pytest.raises(ValueError, match="capacity_bytes"):
        Arena(prefix, capacity_bytes=0)
    with pytest.raises(ValueError, match="prefix"):
        cleanup_prefix("")
    with StoreServer(prefix, 1 << 20, tmp_path) as server:
        with pytest.raises(ValueError, match="size"):
            server.create("x", 0)
        with pytest.raises(TypeError, match="object id"):
            server.create(5, 100)
    with pytest.raises(StoreError, match="closed"):
        server.create("x", 100)


# --------------------------------------------------------------------------- server

def test_object_life_create_seal_get_delete(store):
    server, client = store
    ser = serialize(np.arange(10.0))
    seg, off = server.create(b"\x01oid", ser.size, "w0")
    assert server.state(b"\x01oid") is ObjState.CREATED
    assert server.get(b"\x01oid") is None and not server.contains(b"\x01oid")   # not sealed yet
    with pytest.raises(ObjectExists):
        server.create(b"\x01oid", 10)
    client.write(seg, off, ser)
    server.seal(b"\x01oid")
    assert server.contains(b"\x01oid") and server.get(b"\x01oid") == (seg, off, ser.size)
    with pytest.raises(StoreError, match="illegal"):
        server.seal(b"\x01oid")
    assert server.used_bytes == server.arena.block_size(ser.size)
    assert server.delete(b"\x01oid") is True
    assert server.used_bytes == 0 and server.get(b"\x01oid") is None
    assert server.delete(b"\x01oid") is False                 # idempotent
    with pytest.raises(ObjectNotFound):
        server.pin(b"\x01oid", "w0")
    assert (server.stats.created, server.stats.sealed, server.stats.deleted) == (1, 1, 1)


def test_delete_waits_for_the_last_pin(store):
    server, client = store
    put(server, client, "a", np.ones(100))
    server.pin("a", "w1")
    server.pin("a", "w1")
    server.pin("a", "w2")
    assert server.pins("a") == {"w1": 2, "w2": 1}
    assert server.delete("a") is False                        # deferred
    assert not server.contains("a") and server.get("a") is None
    assert server.used_bytes > 0
    assert server.unpin("a", "w1") and server.unpin("a", "w2")
    assert server.used_bytes > 0                               # w1 still holds one pin
    assert server.unpin("a", "w1")
    assert server.used_bytes == 0 and server.state("a") is None
    assert server.unpin("a", "w1") is False


def test_lru_eviction_spills_to_disk_and_get_restores_the_same_bytes(store, tmp_path):
    server, client = store
    values = {k: np.full(6000, float(i)) for i, k in enumerate("abcd")}   # ~48 KiB each
    layouts = {}
    for k in "abc":
        layouts[k] = put(server, client, k, values[k]).to_bytes()
    server.get("a")                                             # a becomes the most recently used
    layouts["d"] = put(server, client, "d", np.zeros(20_000)).to_bytes()   # ~160 KiB: evicts b, then c
    assert server.state("b") is ObjState.SPILLED and server.state("c") is ObjState.SPILLED
    assert server.state("a") is ObjState.SEALED
    assert sorted(os.listdir(tmp_path / "spill")) == [f"{server.prefix}-spill-0", f"{server.prefix}-spill-1"]
    assert server.stats.spilled == 2 and server.stats.spilled_bytes == len(layouts["b"]) + len(layouts["c"])
    assert server.stats.evicted_bytes >= server.stats.spilled_bytes
    server.delete("d")
    seg, off, size = server.get("b")                            # restore
    assert bytes(client.view(seg, off, size)) == layouts["b"]
    assert same(values["b"], client.read(seg, off, size))
    assert server.state("b") is ObjState.SEALED and server.stats.restored == 1
    assert os.listdir(tmp_path / "spill") == [f"{server.prefix}-spill-1"]
    assert bytes(server.view("c")) == layouts["c"]              # the server's own view restores too
    assert server.state("c") is ObjState.SEALED and server.stats.restored == 2
    server.pin("c", "w1")
    assert same(values["c"], get(server, client, "c"))


def test_pinned_and_unsealed_objects_are_never_evicted(store):
    server, client = store
    put(server, client, "a", np.ones(12_000))                   # ~96 KiB
    server.pin("a", "w1")
    seg, off = server.create("b", 100 * KiB, "w2")              # being written
    with pytest.raises(StoreFull, match="nothing left to spill"):
        server.create("c", 100 * KiB)
    with pytest.raises(StoreFull, match="more than the store's capacity"):
        server.create("huge", 1 << 20)
    assert server.stats.full == 2 and server.stats.spilled == 0
    server.unpin("a", "w1")
    server.create("c", 100 * KiB)                               # now a can be spilled
    assert server.state("a") is ObjState.SPILLED


def test_without_a_spill_dir_a_full_store_raises(prefix):
    with StoreServer(prefix, capacity_bytes=64 * KiB, segment_bytes=64 * KiB) as server:
        server.create("a", 60 * KiB)
        server.seal("a")
        with pytest.raises(StoreFull, match="no spill_dir"):
            server.create("b", 60 * KiB)


def test_a_failed_spill_keeps_the_object_in_memory(prefix, tmp_path):
    (tmp_path / "not-a-dir").write_bytes(b"")
    with StoreServer(prefix, 64 * KiB, tmp_path / "not-a-dir", segment_bytes=64 * KiB, validate=True) as server:
        server.create("a", 60 * KiB)
        server.seal("a")
        with pytest.raises(StoreFull, match="spilling 'a'"):
            server.create("b", 60 * KiB)
        assert server.state("a") is ObjState.SEALED and server.get("a") is not None


def test_a_lost_spill_file_fails_the_restore_not_the_store(store, tmp_path):
    server, client = store
    put(server, client, "a", np.ones(20_000))                   # ~160 KiB
    put(server, client, "b", np.ones(20_000))                   # evicts a
    assert server.state("a") is ObjState.SPILLED
    for name in os.listdir(tmp_path / "spill"):
        os.unlink(tmp_path / "spill" / name)
    with pytest.raises(StoreError, match="cannot read spill file"):
        server.get("a")
    assert server.state("a") is ObjState.SPILLED and server.delete("a")
    assert same(np.ones(20_000), get(server, client, "b"))


def test_a_full_tmpfs_is_a_store_full_error_not_a_crash(prefix, monkeypatch):
    """posix_fallocate's ENOSPC surfaces at create time (a writer would otherwise get SIGBUS)."""
    def no_space(fd, offset, length):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with StoreServer(prefix, 1 << 20) as server:
        with pytest.raises(StoreFull, match="No space left"):
            server.create("a", 1000)
        assert shm_files(prefix) == []


def test_release_client_drops_its_pins_and_aborts_its_unsealed_objects(store):
    server, client = store
    put(server, client, "a", np.ones(10))
    server.pin("a", "dead")
    server.pin("a", "dead")
    server.pin("a", "alive")
    server.delete("a")
    server.create("half-written", 1000, "dead")
    server.create("other", 1000, "alive")
    assert server.release_client("dead") == 2
    assert server.pins("a") == {"alive": 1}
    assert server.state("half-written") is None and server.state("other") is ObjState.CREATED
    server.release_client("alive")
    assert server.state("a") is None and server.state("other") is None
    assert server.used_bytes == 0


def test_close_unlinks_every_segment_and_spill_file(prefix, tmp_path):
    server = StoreServer(prefix, 128 * KiB, tmp_path, segment_bytes=64 * KiB)
    client = StoreClient()
    for k in "abcd":
        put(server, client, k, np.ones(5000))
    put(server, client, "big", np.ones(15_000))                 # its own segment
    assert shm_files(prefix) and server.stats.spilled > 0
    value = get(server, client, "big")
    server.close()
    client.close()                                              # a live view: must not crash
    server.close()                                              # idempotent
    assert shm_files(prefix) == [] and os.listdir(tmp_path) == []
    assert value.sum() == 15_000                                # the mapping outlives the file


def test_cleanup_prefix_removes_a_crashed_stores_files_only(tmp_path):
    base = new_prefix()
    crashed = Arena(f"{base}-node1", capacity_bytes=1 << 20, segment_bytes=64 * KiB)
    neighbour = Arena(f"{base}-node10", capacity_bytes=1 << 20, segment_bytes=64 * KiB)
    try:
        crashed.alloc(100)
        crashed.alloc(100 * KiB)
        neighbour.alloc(100)
        (tmp_path / f"{base}-node1-spill-0").write_bytes(b"x")
        removed = cleanup_prefix(f"{base}-node1", tmp_path)
        assert sorted(os.path.basename(p) for p in removed) == [
            f"{base}-node1-0", f"{base}-node1-1", f"{base}-node1-spill-0"]
        assert shm_files(base) == [f"{base}-node10-0"]
        with pytest.raises(StoreError, match="cleanup_prefix"):   # stale files block a new store
            Arena(f"{base}-node10", capacity_bytes=1 << 20).alloc(10)
    finally:
        crashed.close()                                         # files already gone: fine
        neighbour.close()
    assert cleanup_prefix(base) == []


# --------------------------------------------------------------------------- client

def test_client_errors_name_the_segment(store, prefix):
    server, client = store
    with pytest.raises(StoreError, match="does not exist"):
        client.attach(f"{prefix}-99")
    with pytest.raises(ValueError, match="segment"):
        client.attach("../etc/passwd")
    seg, _ = server.create("a", 100)
    with pytest.raises(StoreError, match="outside segment"):
        client.view(seg, 64 * KiB - 10, 100)


def test_a_layout_moves_between_two_stores_as_raw_bytes(store, tmp_path):
    """Node-to-node transfer: read the raw layout on one node, write it on another."""
    server, client = store
    value = [np.arange(5000.0), "meta"]
    put(server, client, "x", value)
    seg, off, size = server.get("x", pin_for="sender")
    with StoreServer(new_prefix(), 1 << 20, tmp_path / "spill2") as other, StoreClient() as c2:
        seg2, off2 = other.create("x", size, "receiver")
        c2.write_bytes(seg2, off2, client.view(seg, off, size))
        other.seal("x")
        server.unpin("x", "sender")
        assert same(value, get(other, c2, "x"))
        other.create("y", size)                     # or through the node manager's own mapping
        other.view("y")[:] = server.view("x")
        other.seal("y")
        assert same(value, get(other, c2, "y"))


def test_detach_forgets_a_mapping_that_values_still_use(store):
    server, client = store
    put(server, client, "a", np.arange(10.0))
    seg, _, _ = server.get("a")
    value = get(server, client, "a")
    assert client.detach(seg) and not client.detach(seg)
    assert value.sum() == 45.0


def _child_writes(prefix: str, seg: str, off: int) -> None:
    client = StoreClient()
    client.write(seg, off, serialize(np.arange(1000.0) * 2))
    client.close()
    os._exit(0)


def test_a_value_written_by_another_process_is_read_in_place(store):
    """The cross-process path: a forked worker maps the segment by name and writes the bytes."""
    server, client = store
    size = serialize(np.arange(1000.0) * 2).size
    seg, off = server.create("w", size, "child")
    proc = multiprocessing.get_context("fork").Process(target=_child_writes, args=(server.prefix, seg, off))
    proc.start()
    proc.join(10)
    assert proc.exitcode == 0
    server.seal("w")
    assert same(np.arange(1000.0) * 2, get(server, client, "w"))
