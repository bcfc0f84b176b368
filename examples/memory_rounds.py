"""RSS of every runtime process, and each node's object-store use, per N rounds of
(a) passing 16 x 100 kB put refs to a task, (b) fetching a 100 kB result made on node 1.

Run: python examples/memory_rounds.py ROUNDS EVERY {args|fetch}  (e.g. 500 100 args)
"""
import sys, time
import numpy as np
import testbed as tb
from testbed.real import api
rounds, every, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
PAGE = api.PAGE_SIZE

@tb.remote
def consume(*xs):
    return sum(float(x[0]) for x in xs)

@tb.remote
def produce(i):
    return np.full(12_500, float(i))          # 100 kB

@tb.remote
def stats():
    return api._core().request("store_stats")

def rss(c):
    out = {}
    for pid, (role, args) in sorted(c.pids.items()):
        try:
            out.setdefault(f"{role}{args[0] if args and role in ('node',) else ''}", []).append(
                int(open(f"/proc/{pid}/statm").read().split()[1]) * PAGE >> 20)
        except OSError:
            pass
    return {k: max(v) for k, v in out.items()}

with tb.init(num_cpus=1, num_nodes=2) as c:
    for r in range(1, rounds + 1):
        if mode == "args":
            refs = [tb.put(np.zeros(12_500)) for _ in range(16)]
            tb.get(consume.options(_node=1).remote(*refs))
        else:
            tb.get(produce.options(_node=1).remote(r))
        if r % every == 0:
            s0 = api._core().request("store_stats")
            s1 = tb.get(stats.options(_node=1).remote())
            print(f"round {r}: objects node0 {s0['objects']} node1 {s1['objects']} known {s0['known']}/{s1['known']}; "
                  f"RSS MiB {rss(c)}", flush=True)
