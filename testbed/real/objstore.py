"""Per-node shared-memory object store (Ray's plasma, simplified): layout, allocator, server, client.

No processes and no sockets here: the runtime carries the messages. One store per logical node::

      driver / worker (StoreClient)                     node manager (StoreServer)
    +------------------------------------+           +-------------------------------------+
    | ser = serialize(value)             |           | objects: oid -> state, location,    |
    | ser.size <= inline max (100 KiB):  |           |          pins per client, spill file|
    |   send to_bytes(ser) in a message  |           | LRU of sealed, unpinned objects     |
    | else:                              |           |                                     |
    |   ("create", oid, size) -----------+---------> | create: Arena.alloc; when full,     |
    |   <------------- (segment, offset) +---------- |   spill LRU objects to spill_dir    |
    |   write(segment, offset, ser)      |           |                                     |
    |   ("seal", oid) -------------------+---------> | seal: readable, immutable, evictable|
    |                                    |           |                                     |
    |   ("get", oid) --------------------+---------> | get(oid, pin_for=client): restores  |
    |   <------ (segment, offset, size)  +---------- |   a spilled object, pins it         |
    |   v = read(segment, offset, size,  |           |                                     |
    |            keepalive=k)            |           | Arena: /dev/shm/<prefix>-<n> files, |
    |   k collected -> ("unpin", oid) ---+---------> |   best-fit free list, coalescing;   |
    +------------------------------------+           |   freed blocks are reused           |
         both sides mmap the same /dev/shm files     +-------------------------------------+

Who owns what: the server (one thread of the node manager) owns every decision — where an
object lives, when its memory is reused, what is spilled — and creates and unlinks the
segment files. Clients only map the files and copy bytes in (``write``) or view them in
place (``read``). A client never frees memory: it tells the server (``unpin``, ``delete``).

Rules for the runtime:
* Pin before replying with a location (``get(oid, pin_for=client)``): an unpinned object may
  be spilled and its memory handed to the next ``create`` at any time.
* The keepalive given to ``read`` dies when the last array derived from the value dies; hang
  the unpin on it (``weakref.finalize(k, queue.append, oid)``). That callback runs inside
  whatever code dropped the last reference, in any thread: it must only enqueue.
* A dead client's pins and half-written objects: ``release_client(client_id)`` (pass the
  client id to ``create`` too). A dead node's files: ``cleanup_prefix(prefix, spill_dir)``.
* ``serialize`` keeps views of the value's arrays: write before the value can change.

Layout of a stored object (identical for the inline case, so one code path reads both)::

    0   header: magic "TBOB", version, flags, number of buffers n, in-band length, total size
    32  n x u64: length of each out-of-band buffer
        in-band pickle (protocol 5, cloudpickle)
        buffer 0 at the next multiple of ALIGN (64) bytes, buffer 1 at the next, ...

Values are pickled with protocol 5 and a ``buffer_callback``, so numpy arrays travel
out-of-band: ``serialize`` copies nothing big, ``write`` copies each buffer once into
shared memory, and ``read`` hands numpy read-only views of the shared memory (zero-copy).

Costs that shaped this module (anchors §B2-B3, and measured for it on this machine, 100 MB):
the first touch of a fresh tmpfs page costs a fault plus zeroing (a fresh write runs at
~2 GB/s; anchors: ~1 GB/s), memcpy runs at ~7 GB/s, and a page already in memory still costs
a minor fault the first time *a given process* writes it (~2.6 GB/s). Hence: freed blocks are
reused before new segments are made; emptied segments are kept; ``StoreClient.write`` fills
the destination's page tables in one MADV_POPULATE_WRITE call before a large copy (a write
into memory another process freed: 2.8 -> 5.3 GB/s); ``Arena.prefault`` can pay the zeroing
ahead of time. Segments are mapped with ``os.open`` + ``mmap`` (30-38 µs), not
``multiprocessing.shared_memory`` (~400 µs first attach, and its resource tracker).
"""
from __future__ import annotations

import bisect
import enum
import errno
import io
import mmap
import os
import pickle
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import numpy as np

from testbed.core.errors import TestbedError

#: where segment files live (a tmpfs, so a file is shared memory)
SHM_DIR = "/dev/shm"
#: alignment of every out-of-band buffer and of every allocated block, bytes (a cache line;
#: enough for any numpy dtype and for AVX-512 loads)
ALIGN = 64
#: size of one shared-memory segment, bytes; an object larger than this gets its own segment
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
#: objects whose serialised size is at most this many bytes travel inline in messages, not
#: through shared memory (Ray's max_direct_call_object_size: 100 KiB)
DEFAULT_INLINE_MAX_BYTES = 100 * 1024
#: a write of at least this many bytes first populates the destination's page tables in one
#: madvise call, instead of taking one page fault per 4 KiB page
DEFAULT_POPULATE_MIN_BYTES = 256 * 1024

PAGE = mmap.PAGESIZE
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)   # Linux >= 5.14
_MAGIC = b"TBOB"
_VERSION = 1
#: magic, version, flags, number of buffers, reserved, in-band length, total layout size
_HEADER = struct.Struct("<4sHHIIQQ")
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_NAME_MAX = 200   # leaves room for "-<n>" / "-spill-<n>" under the 255-byte NAME_MAX


# --------------------------------------------------------------------------- errors

class StoreError(TestbedError):
    """The object store cannot do what was asked (closed, wrong state, corrupt layout...)."""


class StoreFull(StoreError):
    """No room for an object, even after spilling every unpinned sealed object."""


class ObjectNotFound(StoreError, KeyError):
    """No such object in this store (never created, deleted, or deleted while pinned)."""

    def __str__(self) -> str:   # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ObjectExists(StoreError):
    """``create`` was called for an object id the store already holds."""


def _align(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) & ~(a - 1)


def _check_name(what: str, name: str) -> str:
    if not isinstance(name, str) or len(name) > _NAME_MAX or not _NAME_RE.fullmatch(name):
        raise ValueError(f"{what} must be a file name of letters, digits, '.', '_' or '-' "
                         f"(at most {_NAME_MAX} characters, not starting with '-' or '.'), got {name!r}")
    return name


def _check_positive_int(what: str, x) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x <= 0:
        raise ValueError(f"{what} must be a positive int (bytes), got {x!r}")
    return x


# --------------------------------------------------------------------------- serialization

@dataclass(frozen=True, slots=True, eq=False)
class Serialized:
    """A value pickled for the store. Buffers are views of the value's own memory: write
    (or ``to_bytes``) before the value is mutated, or the stored object sees the change."""

    inband: bytes                       #: the pickle stream, with out-of-band buffers left out
    buffers: list[memoryview]           #: out-of-band buffers, each a flat contiguous 'B' view
    offsets: tuple[int, ...]            #: where each buffer starts in the layout (ALIGN-aligned)
    size: int                           #: total bytes of the layout (header + in-band + buffers)

    def to_bytes(self) -> bytes:
        """The layout as one bytes object (the inline case): ``deserialize_bytes`` reads it."""
        parts = [_header(self)]
        pos = len(parts[0]) + len(self.inband)
        parts.append(self.inband)
        for off, buf in zip(self.offsets, self.buffers):
            parts.append(bytes(off - pos))
            parts.append(buf)
            pos = off + buf.nbytes
        return b"".join(parts)


class _Pickler(cloudpickle.Pickler):
    """cloudpickle, plus: a non-contiguous ndarray goes out-of-band as one contiguous copy
    (numpy would otherwise copy it in-band, through a bytes object, at ~1 GB/s)."""

    def reducer_override(self, obj):
        if (type(obj) is np.ndarray and not obj.flags.c_contiguous and not obj.flags.f_contiguous
                and not obj.dtype.hasobject):
            return np.ascontiguousarray(obj).__reduce_ex__(5)
        return super().reducer_override(obj)


def _flat(pb: pickle.PickleBuffer) -> memoryview:
    try:
        return pb.raw()
    except BufferError:   # a non-contiguous PickleBuffer made by user code
        return memoryview(memoryview(pb).tobytes())


def serialize(value: Any) -> Serialized:
    """Pickle ``value`` (protocol 5, cloudpickle, buffers out-of-band); copies no big buffer."""
    pbs: list[pickle.PickleBuffer] = []
    with io.BytesIO() as f:
        _Pickler(f, protocol=5, buffer_callback=pbs.append).dump(value)
        inband = f.getvalue()
    buffers = [_flat(pb) for pb in pbs]
    pos = _HEADER.size + 8 * len(buffers) + len(inband)
    offsets = []
    for b in buffers:
        pos = _align(pos)
        offsets.append(pos)
        pos += b.nbytes
    return Serialized(inband, buffers, tuple(offsets), pos)


def _header(ser: Serialized) -> bytes:
    n = len(ser.buffers)
    return (_HEADER.pack(_MAGIC, _VERSION, 0, n, 0, len(ser.inband), ser.size)
            + struct.pack(f"<{n}Q", *(b.nbytes for b in ser.buffers)))


def write_layout(dest: memoryview, ser: Serialized) -> None:
    """Copy ``ser``'s layout into ``dest`` (writable, at least ``ser.size`` bytes)."""
    if dest.nbytes < ser.size:
        raise ValueError(f"dest has {dest.nbytes} bytes, the layout needs {ser.size}")
    if dest.format != "B" or dest.ndim != 1:
        dest = dest.cast("B")
    head = _header(ser)
    h = len(head)
    dest[:h] = head
    dest[h:h + len(ser.inband)] = ser.inband
    for off, buf in zip(ser.offsets, ser.buffers):
        dest[off:off + buf.nbytes] = buf


class _PinnedBytes(np.ndarray):
    """A read-only uint8 array over one stored buffer that also holds the caller's keepalive.

    The unpickler gets ``memoryview(this)``: numpy builds each array with
    ``np.frombuffer(that memoryview)``, whose base is the memoryview, whose exporter is
    this object; views of the array keep that chain. A plain ndarray would not do: numpy
    collapses chains of same-type array bases, and ``ndarray(buffer=...)`` keeps no buffer
    export, so it could skip the keepalive (or outlive an unmapped mmap).
    """

    keepalive: Any


def _pinned(view: memoryview, keepalive: Any) -> memoryview:
    a = np.frombuffer(view, dtype=np.uint8).view(_PinnedBytes)
    a.keepalive = keepalive
    return memoryview(a)


def read_layout(src, keepalive: Any = None) -> Any:
    """Unpickle a layout. Out-of-band buffers are read-only views into ``src`` (zero-copy).

    ``keepalive``: if not None, every buffer handed to the unpickler (hence every numpy array
    derived from the value, and its views) references it, so it lives exactly as long as
    something may still read ``src``'s memory. The runtime attaches the unpin to it.
    """
    src = memoryview(src)
    if src.format != "B" or src.ndim != 1:
        src = src.cast("B")
    if src.nbytes < _HEADER.size:
        raise StoreError(f"not an object layout: {src.nbytes} bytes, shorter than the header")
    magic, version, _flags, n, _res, inband_len, total = _HEADER.unpack_from(src, 0)
    if magic != _MAGIC:
        raise StoreError(f"not an object layout (magic {magic!r}): wrong segment or offset?")
    if version != _VERSION:
        raise StoreError(f"object layout version {version}, this reader knows {_VERSION}")
    if total > src.nbytes or _HEADER.size + 8 * n + inband_len > total:
        raise StoreError(f"object layout says {total} bytes ({n} buffers, {inband_len} in-band), "
                         f"only {src.nbytes} given")
    lengths = struct.unpack_from(f"<{n}Q", src, _HEADER.size)
    ro = src if src.readonly else src.toreadonly()
    pos = _HEADER.size + 8 * n
    inband = ro[pos:pos + inband_len]
    pos += inband_len
    buffers = []
    for length in lengths:
        pos = _align(pos)
        view = ro[pos:pos + length]
        buffers.append(view if keepalive is None else _pinned(view, keepalive))
        pos += length
    return pickle.loads(inband, buffers=buffers)


def to_bytes(ser: Serialized) -> bytes:
    """The layout as one bytes object, for the inline case (same as ``ser.to_bytes()``)."""
    return ser.to_bytes()


def deserialize_bytes(data) -> Any:
    """Read an inline object (``Serialized.to_bytes()``); arrays view ``data``, read-only."""
    return read_layout(data)


# --------------------------------------------------------------------------- allocator

class BlockAllocator:
    """Best-fit free list with coalescing over numbered regions. Pure bookkeeping, no memory.

    Free blocks sit in one list sorted by (size, region, offset): best fit is a bisect, and
    ties go to the oldest region and the lowest offset, so the same calls give the same
    placement every run. Two maps (start -> size, end -> start) find a freed block's
    neighbours in O(1) for coalescing.
    """

    def __init__(self) -> None:
        self._by_size: list[tuple[int, int, int]] = []     #: free blocks (size, region, offset), sorted
        self._start: dict[tuple[int, int], int] = {}       #: (region, offset) -> size of a free block
        self._end: dict[tuple[int, int], int] = {}         #: (region, end) -> offset of a free block
        self._used: dict[tuple[int, int], int] = {}        #: (region, offset) -> size of a live block
        self.regions: dict[int, int] = {}                  #: region -> size, bytes
        self.used_bytes = 0                                #: sum of live block sizes
        self.free_bytes = 0                                #: sum of free block sizes

    def add_region(self, region: int, size: int) -> None:
        """Add ``size`` free bytes as region ``region`` (a new id)."""
        if region in self.regions:
            raise ValueError(f"region {region} exists already")
        self.regions[region] = size
        self._insert(region, 0, size)

    def remove_region(self, region: int) -> None:
        """Forget a region that is entirely free."""
        if not self.region_is_free(region):
            raise ValueError(f"region {region} still has live blocks")
        self._remove(region, 0, self.regions.pop(region))

    def region_is_free(self, region: int) -> bool:
        return self._start.get((region, 0)) == self.regions[region]

    def alloc(self, size: int) -> tuple[int, int] | None:
        """(region, offset) of a block of ``size`` bytes, or None if no free block is that big."""
        i = bisect.bisect_left(self._by_size, (size, -1, -1))
        if i == len(self._by_size):
            return None
        bsize, region, offset = self._by_size[i]
        self._remove(region, offset, bsize, index=i)
        if bsize > size:
            self._insert(region, offset + size, bsize - size)
        self._used[(region, offset)] = size
        self.used_bytes += size
        return region, offset

    def free(self, region: int, offset: int) -> int:
        """Free the live block at (region, offset); return its size."""
        try:
            size = self._used.pop((region, offset))
        except KeyError:
            raise ValueError(f"no live block at region {region}, offset {offset}") from None
        self.used_bytes -= size
        start, end = offset, offset + size
        left = self._end.get((region, start))
        if left is not None:
            self._remove(region, left, start - left)
            start = left
        right = self._start.get((region, end))
        if right is not None:
            self._remove(region, end, right)
            end += right
        self._insert(region, start, end - start)
        return size

    def live_blocks(self) -> list[tuple[int, int, int]]:
        """Sorted (region, offset, size) of the live blocks (for checks and tests)."""
        return sorted((r, o, s) for (r, o), s in self._used.items())

    def free_blocks(self) -> list[tuple[int, int, int]]:
        """Sorted (region, offset, size) of the free blocks (for checks and tests)."""
        return sorted((r, o, s) for (r, o), s in self._start.items())

    def _insert(self, region: int, offset: int, size: int) -> None:
        bisect.insort(self._by_size, (size, region, offset))
        self._start[(region, offset)] = size
        self._end[(region, offset + size)] = offset
        self.free_bytes += size

    def _remove(self, region: int, offset: int, size: int, index: int | None = None) -> None:
        if index is None:
            index = bisect.bisect_left(self._by_size, (size, region, offset))
        del self._by_size[index]
        del self._start[(region, offset)]
        del self._end[(region, offset + size)]
        self.free_bytes -= size


# --------------------------------------------------------------------------- shared memory

def _populate(mm: mmap.mmap, start: int, length: int) -> bool:
    """Fault in the pages of [start, start+length) of ``mm`` in one call (no data changes)."""
    global _MADV_POPULATE_WRITE
    if _MADV_POPULATE_WRITE is None or length <= 0:
        return False
    lo = start & ~(PAGE - 1)
    hi = min(_align(start + length, PAGE), len(mm))
    try:
        mm.madvise(_MADV_POPULATE_WRITE, lo, hi - lo)
    except OSError as exc:
        if exc.errno == errno.EINVAL:   # kernel older than 5.14: plain page faults from now on
            _MADV_POPULATE_WRITE = None
        return False
    return True


def _forget_map(mm: mmap.mmap, view: memoryview) -> None:
    """Drop our references to a mapping; it unmaps when the last view of it dies.

    Never ``view.release()`` + ``mm.close()``: numpy keeps a memoryview (not a buffer
    export) as an array's base, so a release would succeed under a live array and the
    close would unmap memory that array still points to (a segfault, not an exception).
    Refcounting unmaps at once when no value views the memory, and later otherwise.
    """
    del mm, view


@dataclass(eq=False)
class _Segment:
    index: int           #: region id in the allocator (creation order)
    name: str            #: file name under SHM_DIR
    size: int            #: bytes
    mm: mmap.mmap        #: the server's own mapping (spill, restore, prefault)
    view: memoryview     #: memoryview(mm), made once
    dedicated: bool      #: made for one object larger than segment_bytes
    touched: bool = False  #: pages populated by prefault


class Arena:
    """Server side: segment files under /dev/shm plus a best-fit allocator over them.

    Segments are named ``<prefix>-<n>`` (n = 0, 1, ... never reused) and created
    O_CREAT|O_EXCL, 0o600, then ``posix_fallocate``d so a full tmpfs fails here with
    ENOSPC instead of killing a writer with SIGBUS later. An emptied segment is kept,
    because its pages are already faulted in; entirely free segments are unlinked only
    to make room under ``capacity_bytes`` (or by ``trim``). Not thread-safe.
    """

    def __init__(self, prefix: str, *, capacity_bytes: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES):
        self.prefix = _check_name("prefix", prefix)
        #: most bytes of segments this arena may have at once
        self.capacity_bytes = _check_positive_int("capacity_bytes", capacity_bytes)
        #: size of a standard segment, bytes (rounded up to a page)
        self.segment_bytes = _align(_check_positive_int("segment_bytes", segment_bytes), PAGE)
        self._blocks = BlockAllocator()
        self._segs: dict[int, _Segment] = {}        #: live segments by index, in creation order
        self._by_name: dict[str, _Segment] = {}
        self._next = 0                              #: index of the next segment
        self._dropped: list[str] = []               #: names unlinked since take_dropped()
        self.reserved_bytes = 0                     #: sum of live segment sizes
        self.last_error: OSError | None = None      #: why the last segment creation failed
        self.closed = False

    # -- allocation
    def alloc(self, size: int) -> tuple[str, int] | None:
        """(segment name, offset) of ``size`` free bytes, or None if they do not fit under capacity."""
        _check_positive_int("size", size)
        asize = _align(size)
        loc = self._blocks.alloc(asize)
        if loc is None:
            need = _align(asize, PAGE)
            if need > self.capacity_bytes:
                return None
            self._drop_free_segments(need)
            room = self.capacity_bytes - self.reserved_bytes
            if need > room:
                return None
            dedicated = asize > self.segment_bytes
            # a standard segment, or a smaller last one that uses up the capacity
            if self._create(need if dedicated else min(self.segment_bytes, room), dedicated) is None:
                return None
            loc = self._blocks.alloc(asize)
        region, offset = loc
        return self._segs[region].name, offset

    def free(self, segment: str, offset: int) -> int:
        """Free the block at (segment, offset); return its (aligned) size."""
        seg = self._seg(segment)
        return self._blocks.free(seg.index, offset)

    def block_size(self, size: int) -> int:
        """Bytes an allocation of ``size`` takes (what ``used_bytes`` counts)."""
        return _align(size)

    @property
    def used_bytes(self) -> int:
        """Bytes in live blocks."""
        return self._blocks.used_bytes

    @property
    def segments(self) -> list[str]:
        """Names of the live segments, oldest first."""
        return [s.name for s in self._segs.values()]

    def view(self, segment: str) -> memoryview:
        """The server's writable view of a whole segment (spill, restore, tests)."""
        return self._seg(segment).view

    # -- segment life
    def prefault(self, nbytes: int) -> int:
        """Fault in up to ``nbytes`` of never-touched segment memory ahead of use (oldest
        segments first, creating standard segments within capacity when all are touched).
        Data is not changed. Returns the bytes touched. Clients still take one cheap
        populate per page they have not mapped yet, but no page allocation or zeroing."""
        done = 0
        for seg in list(self._segs.values()):
            if done >= nbytes:
                return done
            if not seg.touched:
                done += self._touch(seg)
        while done < nbytes:
            room = self.capacity_bytes - self.reserved_bytes
            size = min(self.segment_bytes, room)
            if size < PAGE:
                break
            seg = self._create(size, False)
            if seg is None:
                break
            done += self._touch(seg)
        return done

    def trim(self) -> int:
        """Unlink every entirely free segment; return the bytes released."""
        before = self.reserved_bytes
        for seg in [s for s in self._segs.values() if self._blocks.region_is_free(s.index)]:
            self._drop(seg)
        return before - self.reserved_bytes

    def take_dropped(self) -> list[str]:
        """Names of segments unlinked since the last call: clients should ``detach`` them, or
        their mappings keep the memory alive."""
        out, self._dropped = self._dropped, []
        return out

    def close(self) -> None:
        """Unlink and unmap every segment (idempotent). Mappings with live views are left to the GC."""
        for seg in list(self._segs.values()):
            self._drop(seg, force=True)
        self._dropped.clear()
        self.closed = True

    def check(self) -> None:
        """Assert the allocator's invariants (validation mode, tests)."""
        b = self._blocks
        assert set(b.regions) == set(self._segs), "regions and segments differ"
        assert self.reserved_bytes == sum(s.size for s in self._segs.values()) <= self.capacity_bytes
        assert b.used_bytes + b.free_bytes == self.reserved_bytes, "used + free != reserved"
        spans = sorted(b.live_blocks() + b.free_blocks())
        for (r1, o1, s1), (r2, o2, _) in zip(spans, spans[1:]):
            assert r1 != r2 or o1 + s1 == o2, f"blocks overlap or leave a gap in region {r1} at {o1 + s1}"
        for r, o, s in b.free_blocks():
            assert b._end[(r, o + s)] == o
            assert (r, o + s) not in b._start, f"free blocks at {o} and {o + s} were not coalesced"

    # -- internals
    def _seg(self, name: str) -> _Segment:
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(f"no live segment named {name!r} in arena {self.prefix!r}") from None

    def _create(self, size: int, dedicated: bool) -> _Segment | None:
        if self.closed:
            raise StoreError(f"arena {self.prefix!r} is closed")
        name = f"{self.prefix}-{self._next}"
        path = os.path.join(SHM_DIR, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise StoreError(f"{path} exists: another store uses prefix {self.prefix!r}, or a crashed "
                             f"one left it behind (cleanup_prefix({self.prefix!r}) removes it)") from None
        self._next += 1
        try:
            os.ftruncate(fd, size)
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):   # not a tmpfs: sparse is fine
                    raise
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:   # ENOSPC (tmpfs full), ENOMEM, EMFILE...: alloc returns None
            self.last_error = exc
            os.unlink(path)
            return None
        finally:
            os.close(fd)
        self.last_error = None
        seg = _Segment(self._next - 1, name, size, mm, memoryview(mm), dedicated)
        self._segs[seg.index] = seg
        self._by_name[name] = seg
        self._blocks.add_region(seg.index, size)
        self.reserved_bytes += size
        return seg

    def _drop(self, seg: _Segment, force: bool = False) -> None:
        if not force:
            self._blocks.remove_region(seg.index)
        try:
            os.unlink(os.path.join(SHM_DIR, seg.name))
        except FileNotFoundError:   # cleanup_prefix got there first
            pass
        _forget_map(seg.mm, seg.view)
        del self._segs[seg.index], self._by_name[seg.name]
        self.reserved_bytes -= seg.size
        self._dropped.append(seg.name)

    def _drop_free_segments(self, need: int) -> None:
        """Unlink entirely free segments (dedicated ones first, oldest first) until ``need``
        more bytes fit under capacity."""
        if self.reserved_bytes + need <= self.capacity_bytes:
            return
        free = [s for s in self._segs.values() if self._blocks.region_is_free(s.index)]
        for seg in sorted(free, key=lambda s: (not s.dedicated, s.index)):
            self._drop(seg)
            if self.reserved_bytes + need <= self.capacity_bytes:
                return

    def _touch(self, seg: _Segment) -> int:
        if not _populate(seg.mm, 0, seg.size):
            # no MADV_POPULATE_WRITE: read one byte per page (a read fault allocates the page
            # too, and unlike a write it cannot race with a client writing the same page)
            np.frombuffer(seg.view, dtype=np.uint8)[::PAGE].sum()
        seg.touched = True
        return seg.size


def cleanup_prefix(prefix: str, spill_dir: str | os.PathLike | None = None) -> list[str]:
    """Unlink every /dev/shm file of the store(s) named ``prefix`` (and their spill files in
    ``spill_dir``): names equal to ``prefix`` or starting with ``prefix + "-"`` (a prefix that
    ends in "-" matches any name starting with it), so "tb-x-node1" does not touch
    "tb-x-node10-0". For the supervisor, after the node that owned them crashed."""
    p = _check_name("prefix", prefix)
    start = p if p.endswith("-") else p + "-"
    removed = []
    for d in [SHM_DIR] + ([os.fspath(spill_dir)] if spill_dir is not None else []):
        try:
            names = sorted(os.listdir(d))
        except FileNotFoundError:
            continue
        for name in names:
            if name == p or name.startswith(start):
                try:
                    os.unlink(os.path.join(d, name))
                    removed.append(os.path.join(d, name))
                except FileNotFoundError:
                    pass
    return removed


# --------------------------------------------------------------------------- server

class ObjState(enum.Enum):
    """Where a stored object is in its life. Legal moves: ``_TRANSITIONS``."""

    CREATED = "created"   #: space reserved; the creating client is writing the bytes
    SEALED = "sealed"     #: immutable, in shared memory, readable
    SPILLED = "spilled"   #: immutable, only in a spill file (evicted); get() restores it


_TRANSITIONS = {
    (ObjState.CREATED, ObjState.SEALED),    # seal
    (ObjState.SEALED, ObjState.SPILLED),    # LRU eviction
    (ObjState.SPILLED, ObjState.SEALED),    # restore on get / pin
}


@dataclass(slots=True, eq=False)
class _Entry:
    size: int                                 #: layout bytes (what a client reads)
    state: ObjState
    segment: str | None = None                #: segment while in shared memory
    offset: int = 0                           #: offset in that segment
    owner: Hashable | None = None             #: creating client, while CREATED
    pins: dict = field(default_factory=dict)  #: client id -> pin count
    doomed: bool = False                      #: delete() was called while pinned
    spill_path: str | None = None             #: spill file, while SPILLED

    def move(self, to: ObjState) -> None:
        if (self.state, to) not in _TRANSITIONS:
            raise StoreError(f"illegal object transition {self.state.value} -> {to.value}")
        self.state = to


@dataclass
class StoreStats:
    """Counters of one store since it started."""

    created: int = 0          #: create() calls that succeeded
    sealed: int = 0           #: seal() calls
    deleted: int = 0          #: objects freed by delete / release_client (not eviction)
    spilled: int = 0          #: objects evicted (LRU) to a spill file
    spilled_bytes: int = 0    #: layout bytes written to spill files
    restored: int = 0         #: spilled objects read back into shared memory
    restored_bytes: int = 0   #: layout bytes read back
    evicted_bytes: int = 0    #: shared memory freed by eviction (aligned block bytes)
    full: int = 0             #: StoreFull raised (create or restore)


class StoreServer:
    """Server side, owned by one thread of the node manager: which objects exist, where,
    who pins them; LRU eviction to ``spill_dir``.

    Object ids are bytes or str. Calls naming an unknown object raise ObjectNotFound, except
    ``get`` and ``contains`` (answer None / False) and the clean-up calls ``unpin`` and
    ``delete`` (return False), which may race with a client's death.
    """

    def __init__(self, prefix: str, capacity_bytes: int, spill_dir: str | os.PathLike | None = None, *,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES, validate: bool = False):
        self.arena = Arena(prefix, capacity_bytes=capacity_bytes, segment_bytes=segment_bytes)
        self.prefix = prefix
        #: directory for spill files (made on first spill); None: never evict, raise StoreFull
        self.spill_dir = None if spill_dir is None else os.fspath(spill_dir)
        self.validate = validate          #: run check() after every change (tests)
        self.stats = StoreStats()
        self._objs: dict[Hashable, _Entry] = {}
        self._lru: OrderedDict[Hashable, None] = OrderedDict()   #: evictable objects, oldest first
        self._client_pins: dict[Hashable, dict[Hashable, int]] = {}   #: client -> oid -> count
        self._creating: dict[Hashable, dict[Hashable, None]] = {}     #: client -> oids it is writing
        self._spill_seq = 0
        self.closed = False

    # -- queries
    @property
    def capacity_bytes(self) -> int:
        return self.arena.capacity_bytes

    @property
    def used_bytes(self) -> int:
        """Shared memory in live blocks (created, sealed and doomed-but-pinned objects)."""
        return self.arena.used_bytes

    def contains(self, oid) -> bool:
        """Sealed (in memory or spilled) and not deleted."""
        e = self._objs.get(oid)
        return e is not None and e.state is not ObjState.CREATED and not e.doomed

    def state(self, oid) -> ObjState | None:
        e = self._objs.get(oid)
        return None if e is None else e.state

    def pins(self, oid) -> dict:
        """client id -> pin count of an object (a copy; empty if unknown)."""
        e = self._objs.get(oid)
        return {} if e is None else dict(e.pins)

    # -- life of an object
    def create(self, oid, size: int, client_id: Hashable | None = None) -> tuple[str, int]:
        """Reserve ``size`` bytes for ``client_id`` to write; (segment, offset). Spills LRU
        objects if needed; raises StoreFull if it still cannot, ObjectExists for a known id."""
        self._check_open()
        _check_oid(oid)
        _check_positive_int("size", size)
        if oid in self._objs:
            raise ObjectExists(f"object {oid!r} exists in store {self.prefix!r} "
                               f"({self._objs[oid].state.value}); ids are written once")
        segment, offset = self._alloc(size, f"create {oid!r}")
        self._objs[oid] = _Entry(size, ObjState.CREATED, segment, offset, owner=client_id)
        if client_id is not None:
            self._creating.setdefault(client_id, {})[oid] = None
        self.stats.created += 1
        self._validate()
        return segment, offset

    def seal(self, oid) -> None:
        """The creator finished writing: the object becomes readable, immutable, evictable."""
        self._check_open()
        e = self._entry(oid)
        e.move(ObjState.SEALED)
        if e.owner is not None:
            self._creating[e.owner].pop(oid, None)
            if not self._creating[e.owner]:
                del self._creating[e.owner]
            e.owner = None
        if not e.pins and not e.doomed:
            self._lru[oid] = None
        self.stats.sealed += 1
        self._validate()

    def get(self, oid, pin_for: Hashable | None = None) -> tuple[str, int, int] | None:
        """(segment, offset, size) of a sealed object, restoring it if spilled; None if not
        sealed or unknown. With ``pin_for``, also pins it for that client (do this, or pin
        before replying: an unpinned object may be evicted and its memory reused)."""
        self._check_open()
        e = self._objs.get(oid)
        if e is None or e.doomed or e.state is ObjState.CREATED:
            return None
        if e.state is ObjState.SPILLED:
            self._restore(oid, e)
        if pin_for is not None:
            self._pin(oid, e, pin_for)
        elif oid in self._lru:
            self._lru.move_to_end(oid)
        self._validate()
        return e.segment, e.offset, e.size

    def view(self, oid) -> memoryview:
        """The object's layout bytes in the server's own mapping, writable (restored first if
        spilled): to fill a CREATED object received from another node, or to copy a sealed
        one out. Use it at once: after a later create/get/delete the memory may be reused."""
        self._check_open()
        e = self._entry(oid)
        if e.state is ObjState.SPILLED:
            self._restore(oid, e)
            self._validate()
        elif e.state is ObjState.CREATED and e.size >= DEFAULT_POPULATE_MIN_BYTES:
            _populate(self.arena._seg(e.segment).mm, e.offset, e.size)   # about to be written
        return self.arena.view(e.segment)[e.offset:e.offset + e.size]

    def pin(self, oid, client_id: Hashable) -> None:
        """Keep a sealed object in memory for ``client_id`` (counted: pin twice, unpin twice)."""
        self._check_open()
        e = self._entry(oid)
        if e.state is ObjState.CREATED:
            raise StoreError(f"pin {oid!r}: the object is not sealed yet")
        if e.state is ObjState.SPILLED:
            self._restore(oid, e)
        self._pin(oid, e, client_id)
        self._validate()

    def unpin(self, oid, client_id: Hashable) -> bool:
        """Drop one pin; False if ``client_id`` held none. The last unpin frees a deleted object."""
        self._check_open()
        e = self._objs.get(oid)
        if e is None or client_id not in e.pins:
            return False
        self._drop_pin(oid, e, client_id, 1)
        self._validate()
        return True

    def delete(self, oid) -> bool:
        """Free an object now (True) or, if pinned, at its last unpin (False; it is gone for
        get/contains at once). Unknown ids: False. Also aborts an object still being written."""
        self._check_open()
        e = self._objs.get(oid)
        if e is None or e.doomed:
            return False
        if e.pins:
            e.doomed = True
            self._lru.pop(oid, None)
            self._validate()
            return False
        self._free(oid, e)
        self._validate()
        return True

    def release_client(self, client_id: Hashable) -> int:
        """A client died: drop all its pins and abort the objects it was still writing.
        Returns the number of pins dropped."""
        self._check_open()
        held = self._client_pins.get(client_id, {})
        dropped = 0
        for oid, count in list(held.items()):
            self._drop_pin(oid, self._objs[oid], client_id, count)
            dropped += count
        for oid in list(self._creating.pop(client_id, {})):
            self._free(oid, self._objs[oid])
        self._validate()
        return dropped

    def close(self) -> None:
        """Unlink every segment and spill file this store made (idempotent)."""
        if self.closed:
            return
        for e in self._objs.values():
            if e.spill_path is not None:
                _unlink_quietly(e.spill_path)
        self._objs.clear()
        self._lru.clear()
        self._client_pins.clear()
        self._creating.clear()
        self.arena.close()
        self.closed = True

    def __enter__(self) -> "StoreServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check(self) -> None:
        """Assert the store's invariants (validation mode, tests)."""
        self.arena.check()
        live = sorted((self.arena._seg(e.segment).index, e.offset, self.arena.block_size(e.size))
                      for e in self._objs.values() if e.segment is not None)
        assert live == self.arena._blocks.live_blocks(), "objects and live blocks differ"
        for oid, e in self._objs.items():
            in_memory = e.state in (ObjState.CREATED, ObjState.SEALED)
            assert (e.segment is not None) == in_memory, f"{oid!r}: location vs state {e.state}"
            assert (e.spill_path is not None) == (e.state is ObjState.SPILLED), f"{oid!r}: spill file"
            evictable = e.state is ObjState.SEALED and not e.pins and not e.doomed
            assert (oid in self._lru) == evictable, f"{oid!r}: LRU membership"
            assert not e.doomed or e.pins, f"{oid!r}: doomed but unpinned (should be freed)"
            assert all(n > 0 and self._client_pins[c][oid] == n for c, n in e.pins.items())
            assert (e.owner is not None) <= (e.state is ObjState.CREATED)
        for c, held in self._client_pins.items():
            assert held and all(self._objs[oid].pins[c] == n for oid, n in held.items())

    # -- internals
    def _check_open(self) -> None:
        if self.closed:
            raise StoreError(f"store {self.prefix!r} is closed")

    def _validate(self) -> None:
        if self.validate:
            self.check()

    def _entry(self, oid) -> _Entry:
        e = self._objs.get(oid)
        if e is None or e.doomed:
            raise ObjectNotFound(f"no object {oid!r} in store {self.prefix!r}"
                                 + (" (deleted)" if e is not None else ""))
        return e

    def _pin(self, oid, e: _Entry, client_id: Hashable) -> None:
        if client_id is None:
            raise ValueError("client_id must not be None")
        e.pins[client_id] = e.pins.get(client_id, 0) + 1
        held = self._client_pins.setdefault(client_id, {})
        held[oid] = held.get(oid, 0) + 1
        self._lru.pop(oid, None)

    def _drop_pin(self, oid, e: _Entry, client_id: Hashable, count: int) -> None:
        left = e.pins[client_id] - count
        held = self._client_pins[client_id]
        if left > 0:
            e.pins[client_id] = held[oid] = left
            return
        del e.pins[client_id], held[oid]
        if not held:
            del self._client_pins[client_id]
        if not e.pins:
            if e.doomed:
                self._free(oid, e)
            else:
                self._lru[oid] = None    # most recently used

    def _free(self, oid, e: _Entry) -> None:
        if e.segment is not None:
            self.arena.free(e.segment, e.offset)
        if e.spill_path is not None:
            _unlink_quietly(e.spill_path)
        if e.owner is not None:
            creating = self._creating.get(e.owner, {})
            creating.pop(oid, None)
            if not creating:
                self._creating.pop(e.owner, None)
        self._lru.pop(oid, None)
        del self._objs[oid]
        self.stats.deleted += 1

    def _alloc(self, size: int, why: str) -> tuple[str, int]:
        """Allocate, spilling LRU objects until it fits; StoreFull if it never does."""
        if self.arena.block_size(size) > self.capacity_bytes:
            self.stats.full += 1
            raise StoreFull(f"{why}: {size} bytes is more than the store's capacity "
                            f"({self.capacity_bytes} bytes)")
        while True:
            loc = self.arena.alloc(size)
            if loc is not None:
                return loc
            if not self._lru or self.spill_dir is None:
                self.stats.full += 1
                pinned = sum(self.arena.block_size(e.size) for e in self._objs.values()
                             if e.segment is not None and (e.pins or e.state is ObjState.CREATED))
                why_not = (f"; last segment creation failed: {self.arena.last_error}"
                           if self.arena.last_error else "")
                raise StoreFull(f"{why}: no room for {size} bytes: {self.used_bytes} of "
                                f"{self.capacity_bytes} bytes in use, {pinned} pinned or being "
                                f"written, nothing left to spill"
                                + (" (no spill_dir)" if self.spill_dir is None else "") + why_not)
            self._spill(next(iter(self._lru)))

    def _spill(self, oid) -> None:
        e = self._objs[oid]
        path = os.path.join(self.spill_dir, f"{self.prefix}-spill-{self._spill_seq}")
        self._spill_seq += 1
        try:
            os.makedirs(self.spill_dir, exist_ok=True)
            with open(path, "xb") as f:
                f.write(self.arena.view(e.segment)[e.offset:e.offset + e.size])
        except OSError as exc:
            _unlink_quietly(path)
            self.stats.full += 1
            raise StoreFull(f"spilling {oid!r} to {path} failed: {exc}") from exc
        self.stats.evicted_bytes += self.arena.free(e.segment, e.offset)
        e.segment, e.offset, e.spill_path = None, 0, path
        e.move(ObjState.SPILLED)
        del self._lru[oid]
        self.stats.spilled += 1
        self.stats.spilled_bytes += e.size

    def _restore(self, oid, e: _Entry) -> None:
        segment, offset = self._alloc(e.size, f"restore {oid!r}")
        dest = self.arena.view(segment)[offset:offset + e.size]
        try:
            with open(e.spill_path, "rb", buffering=0) as f:
                got = 0
                while got < e.size:
                    n = f.readinto(dest[got:])
                    if not n:
                        break
                    got += n
        except OSError as exc:
            self.arena.free(segment, offset)
            raise StoreError(f"restore {oid!r}: cannot read spill file {e.spill_path}: {exc}") from exc
        if got != e.size:
            self.arena.free(segment, offset)
            raise StoreError(f"restore {oid!r}: spill file {e.spill_path} has {got} bytes, "
                             f"expected {e.size}")
        _unlink_quietly(e.spill_path)
        e.segment, e.offset, e.spill_path = segment, offset, None
        e.move(ObjState.SEALED)
        if not e.pins:
            self._lru[oid] = None
        self.stats.restored += 1
        self.stats.restored_bytes += e.size


def _check_oid(oid) -> None:
    if not isinstance(oid, (bytes, str)):
        raise TypeError(f"object id must be bytes or str, got {type(oid).__name__}")


def _unlink_quietly(path: str) -> None:
    """Remove a file we made, if it is still there (clean-up must not raise)."""
    try:
        os.unlink(path)
    except OSError:
        pass


# --------------------------------------------------------------------------- client

class StoreClient:
    """Client side, in a worker or the driver on the store's node: maps segments, writes
    layouts into them and reads values out of them zero-copy.

    Thread-safe: mappings are cached per segment under a lock; ``write`` and ``read`` touch
    only the memory the server handed out.
    """

    def __init__(self, *, populate_min_bytes: int = DEFAULT_POPULATE_MIN_BYTES):
        #: writes of at least this many bytes populate page tables first (0: always, or a huge
        #: number: never)
        self.populate_min_bytes = populate_min_bytes
        self._maps: dict[str, tuple[mmap.mmap, memoryview]] = {}
        self._lock = threading.Lock()

    def attach(self, segment: str) -> memoryview:
        """A writable view of a whole segment, mapped on first use and cached."""
        return self._map(segment)[1]

    def _map(self, segment: str) -> tuple[mmap.mmap, memoryview]:
        got = self._maps.get(segment)
        if got is not None:
            return got
        _check_name("segment", segment)
        with self._lock:
            got = self._maps.get(segment)
            if got is None:
                path = os.path.join(SHM_DIR, segment)
                try:
                    fd = os.open(path, os.O_RDWR)
                except FileNotFoundError:
                    raise StoreError(f"segment {path} does not exist (its store closed or was "
                                     f"cleaned up)") from None
                try:
                    mm = mmap.mmap(fd, os.fstat(fd).st_size, flags=mmap.MAP_SHARED,
                                   prot=mmap.PROT_READ | mmap.PROT_WRITE)
                except (OSError, ValueError) as exc:   # ValueError: an empty file
                    raise StoreError(f"cannot map segment {path}: {exc}") from exc
                finally:
                    os.close(fd)
                got = self._maps[segment] = (mm, memoryview(mm))
        return got

    def detach(self, segment: str) -> bool:
        """Forget a segment's mapping (the server dropped it); False if not attached. Memory
        still viewed by live values stays mapped until they are collected."""
        with self._lock:
            got = self._maps.pop(segment, None)
        if got is None:
            return False
        _forget_map(*got)
        return True

    def write(self, segment: str, offset: int, ser: Serialized) -> None:
        """Copy a serialised value into the block the server gave for it."""
        mm, dest = self._range(segment, offset, ser.size)
        if ser.size >= self.populate_min_bytes:
            _populate(mm, offset, ser.size)
        write_layout(dest, ser)

    def write_bytes(self, segment: str, offset: int, data) -> None:
        """Copy a raw layout (e.g. received from another node) into a block."""
        data = memoryview(data).cast("B")
        mm, dest = self._range(segment, offset, data.nbytes)
        if data.nbytes >= self.populate_min_bytes:
            _populate(mm, offset, data.nbytes)
        dest[:] = data

    def view(self, segment: str, offset: int, size: int) -> memoryview:
        """Read-only raw bytes of a stored layout (to send to another node, or to inspect)."""
        return self._range(segment, offset, size)[1].toreadonly()

    def read(self, segment: str, offset: int, size: int, keepalive: Any = None) -> Any:
        """The stored value; its arrays are read-only views of shared memory and reference
        ``keepalive`` (pin the object until it is collected)."""
        return read_layout(self._range(segment, offset, size)[1], keepalive)

    def close(self) -> None:
        """Unmap every segment; mappings still viewed by live values are left to the GC."""
        with self._lock:
            maps, self._maps = self._maps, {}
        for mm, view in maps.values():
            _forget_map(mm, view)

    def __enter__(self) -> "StoreClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _range(self, segment: str, offset: int, size: int) -> tuple[mmap.mmap, memoryview]:
        mm, view = self._map(segment)
        if offset < 0 or size < 0 or offset + size > view.nbytes:
            raise StoreError(f"bytes [{offset}, {offset + size}) are outside segment {segment} "
                             f"({view.nbytes} bytes)")
        return mm, view[offset:offset + size]
