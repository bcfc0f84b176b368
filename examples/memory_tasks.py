"""RSS of every runtime process per N no-op tasks (batches of 100, results fetched and dropped).

Run: python examples/memory_tasks.py TASKS EVERY  (e.g. 30000 10000)
"""
import sys
import testbed as tb
from testbed.real import api
total, every = int(sys.argv[1]), int(sys.argv[2])
@tb.remote
def noop():
    return None
def rss(c):
    out = {}
    for pid, (role, args) in sorted(c.pids.items()):
        try:
            out.setdefault(f"{role}{args[0] if role == 'node' else ''}", []).append(
                int(open(f"/proc/{pid}/statm").read().split()[1]) * api.PAGE_SIZE >> 20)
        except OSError:
            pass
    return {k: max(v) for k, v in out.items()}
with tb.init(num_cpus=2) as c:
    for n in range(100, total + 1, 100):
        tb.get([noop.remote() for _ in range(100)])
        if n % every == 0:
            s = api._core().request("store_stats")
            print(f"{n} tasks: objects {s['objects']} known {s['known']} freed_early {s['freed_early']}; RSS MiB {rss(c)}", flush=True)
