"""The GCS's chain replication under replica failures, and the GCS-client workload (Fig. 10a).

Each GCS shard is a chain of ``gcs_chain_length`` replicas (the paper's §4.2.1, as in
credis): a write enters at the head, passes every member and is acknowledged by the tail;
reads are served by the tail. The simulator models a shard as one FIFO server (its
``gcs_write_s`` / ``gcs_read_s`` service) plus, for a write, one hop of latency and service
per further live member::

  faults.gcs_replica_failures {at_s, shard, replica} --> the member dies at at_s:
      the chain master reconfigures the chain for gcs_reconfigure_s; every operation on the
      shard that reaches it in [at_s, at_s + gcs_reconfigure_s) waits until then, and one in
      flight at at_s (begun, not yet acknowledged) is sent again then, paying its cost again
  gcs_replace_replicas --> after the reconfiguration a fresh replica copies the shard's
      state (modelled GCS memory / shards, at bandwidth_bytes_per_s) in the background and
      joins as the new tail: the chain is back to full length (writes pay its hop again)

Nothing acknowledged is lost: a write is acknowledged by the tail only, so it is on every
live member, and the chain always keeps one (a failure of a shard's last live replica is a
ConfigError: its state would be gone). The kill times are the config's schedule, so the
waiting windows are known ahead: operations computed in closed form ahead of time (the
engine's servers) see the same windows as operations issued later.

Choices where the paper is silent: every operation on the shard waits during a
reconfiguration and every one in flight at the failure is retried, whichever member died
(the chain master tells all clients of the chain); the state copy slows nothing.

:class:`~testbed.sim.gcs_client.GcsClientSimulation` is the workload shape ``"gcs_client"``: a client (each driver,
``in_flight`` requests at a time; the paper's Fig. 10a has one) writes a ``gcs_key_bytes``
key with a ``gcs_value_bytes`` value (even jobs) and reads it back (odd jobs). A request
costs the latency to the shard, the chain's work (waiting out reconfigurations, retried
if in flight at a failure), and the latency back. Trace rows: function ``gcs.write`` /
``gcs.read``, node -1, placed = started = submitted (sent), finished = reply received.
"""
from __future__ import annotations

from bisect import bisect_right

from ..core.errors import ConfigError


class GcsChains:
    """Which members of each shard's chain are alive, and when operations may proceed."""

    def __init__(self, shards: int, length: int, reconfigure_s: float, replace: bool, failures: list[dict]):
        #: seconds from a member's death until its chain works again
        self.reconfigure_s = reconfigure_s
        #: a fresh member replaces a dead one (after copying the state)
        self.replace = replace
        #: live members of each shard's chain now
        self.members = [length] * shards
        #: per shard: the kill times of the schedule, sorted
        self._kills: list[list[float]] = [[] for _ in range(shards)]
        for x in failures:
            self._kills[x["shard"]].append(x["at_s"])
        for k in self._kills:
            k.sort()
        #: (time of the failure, seconds the chain was reconfiguring): one per member killed
        self.reconfigurations: list[tuple[float, float]] = []
        #: fresh members that joined
        self.added = 0
        #: per shard: how many of its scheduled failures have happened
        self._applied = [0] * shards

    def begin(self, shard: int, t: float) -> float:
        """When an operation reaching ``shard`` at ``t`` can begin: at ``t``, or at the end
        of the reconfiguration under way then (and of any that starts before that end)."""
        kills = self._kills[shard]
        if not kills:
            return t
        r = self.reconfigure_s
        while True:
            i = bisect_right(kills, t)
            if i and kills[i - 1] + r > t:   # the latest failure at or before t has the latest end
                t = kills[i - 1] + r
                continue
            return t

    def members_at(self, shard: int, t: float) -> int:
        """Live members of ``shard``'s chain at ``t`` >= now: now's, less the failures scheduled
        up to ``t`` that have not happened yet (an operation computed ahead of a failure)."""
        kills = self._kills[shard]
        done = self._applied[shard]
        ahead = bisect_right(kills, t) - done
        return self.members[shard] - ahead if ahead > 0 else self.members[shard]

    def failure_within(self, shard: int, begin: float, end: float) -> float | None:
        """The first failure on ``shard`` strictly inside (begin, end), or None."""
        kills = self._kills[shard]
        i = bisect_right(kills, begin)
        if i < len(kills) and kills[i] < end:
            return kills[i]
        return None

    def kill(self, shard: int, now: float, key: str) -> None:
        """A member of ``shard``'s chain dies (which one does not matter: see the module
        docstring). ``key`` names the config entry for an error."""
        live = self.members[shard]
        if live <= 1:
            raise ConfigError(f"kills the last live replica of shard {shard} at {now:g} s (the ones before "
                              f"it died and were not replaced yet): its state would be lost", key=key)
        self.members[shard] = live - 1
        self._applied[shard] += 1
        self.reconfigurations.append((now, self.reconfigure_s))

    def join(self, shard: int) -> None:
        """A fresh replica has copied the state and joins as the tail (each join follows its
        own kill, so the chain is below ``length`` until then)."""
        self.members[shard] += 1
        self.added += 1
