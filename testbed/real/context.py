"""What every runtime process knows about its cluster: where to connect, and the secret.

The secret lives in memory: the driver hands it to the supervisor through a private
pipe, and forked processes inherit it; it is never in argv, the environment or a log.
"""
from __future__ import annotations

import os
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Context:
    #: private cluster folder (0700): the Unix sockets live here
    dir: str
    #: the per-cluster secret every channel is authenticated with
    secret: bytes = field(repr=False)
    #: the resolved init() options (see api.init)
    config: dict[str, Any]
    #: prefix of every /dev/shm file this cluster creates
    shm_prefix: str = ""

    def gcs(self, shard: int, replica: int = 0) -> str:
        return os.path.join(self.dir, f"gcs-{shard}-{replica}.sock")

    def gcs_master(self) -> str:
        return os.path.join(self.dir, "gcsmaster.sock")

    def global_scheduler(self) -> str:
        return os.path.join(self.dir, "gs.sock")

    def node(self, index: int) -> str:
        return os.path.join(self.dir, f"node-{index}.sock")

    def node_id(self, index: int) -> str:
        """Node ``index``'s NodeID (what ``tb.nodes()`` shows), the same in every process."""
        return uuid.uuid5(uuid.NAMESPACE_OID, f"{self.shm_prefix}{index}").hex

    def store_prefix(self, index: int) -> str:
        """Prefix of node ``index``'s object-store files under /dev/shm."""
        return f"{self.shm_prefix}n{index}"

    def spill_dir(self, index: int) -> str:
        """Where node ``index``'s object store spills."""
        return os.path.join(self.dir, f"spill-{index}")

    @property
    def n_nodes(self) -> int:
        return len(self.config["nodes"])

    @property
    def n_shards(self) -> int:
        return self.config["gcs_shards"]

    def shard_of(self, key: bytes | str) -> int:
        """GCS shard that owns ``key``."""
        if isinstance(key, str):
            key = key.encode()
        return zlib.crc32(key) % self.n_shards
