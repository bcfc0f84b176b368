"""Which random stream each policy of a run draws from: one rule, used by both engines.

A run has one integer seed (``run.seeds``' element; ``tb.init(seed=...)``). Every policy
generator is derived from it here, so the same config and seed give the same draws in the
simulator and the real runtime wherever the two engines ask the same policy the same question:

- ``policy_rng(seed, "placement")``: the global scheduler's placement policy,
  ``SeedSequence([seed, 0x5C4ED])`` (the simulator's stream since its first version);
- ``policy_rng(seed, "spillover", node)``: the local scheduler of node index ``node``,
  ``SeedSequence([seed, 0x5C4ED, 1, node])``.

The simulator passes its placement stream to the spillover policy too (none of the built-in
spillover policies draws); the runtime gives each node manager its own stream, as each is a
separate process.
"""
from __future__ import annotations

import numpy as np

#: the policy streams' tag in every SeedSequence (fault injection uses other tags)
POLICY_TAG = 0x5C4ED
#: role -> its tag after POLICY_TAG (placement has none, so its stream is [seed, POLICY_TAG])
ROLES = {"placement": (), "spillover": (1,)}


def policy_seed_sequence(seed: int, role: str, node: int | None = None) -> np.random.SeedSequence:
    """The SeedSequence of ``role``'s generator in a run seeded ``seed`` (``node``: spillover's node index)."""
    if role not in ROLES:
        raise ValueError(f"unknown policy role {role!r}; known: {', '.join(ROLES)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    entropy = [int(seed), POLICY_TAG, *ROLES[role]]
    if role == "spillover":
        if node is None or node < 0:
            raise ValueError("a spillover stream needs the node index (>= 0)")
        entropy.append(int(node))
    return np.random.SeedSequence(entropy)


def policy_rng(seed: int, role: str, node: int | None = None) -> np.random.Generator:
    """The generator ``role``'s policy draws from in a run seeded ``seed`` (see the module doc)."""
    return np.random.default_rng(policy_seed_sequence(seed, role, node))
