"""GCS memory over many empty tasks, with and without flushing (the paper's Fig. 10b at 1M tasks).

    python examples/gcs_memory.py --tasks 1000000 --flush 1.0
    python examples/gcs_memory.py --tasks 1000000 --flush 0

Submits empty tasks in waves of 1,000 on a one-node cluster and prints, every 100,000 tasks,
the resident memory of the GCS replica processes and what their tables hold in memory; at the
end, the peak. `testbed run experiments/fig10_gcs_ft.toml --set run.engine=real` does the same
at the config's scale and plots it.
"""
from __future__ import annotations

import argparse
import time

import testbed as tb
from testbed.real import api


@tb.remote
def empty():
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200_000, help="empty tasks to run (default 200,000)")
    ap.add_argument("--flush", type=float, default=1.0, help="gcs_flush_interval_s; 0 = never flush (default 1.0)")
    args = ap.parse_args()
    if args.tasks < 1000 or args.flush < 0:
        ap.error("--tasks must be >= 1000 and --flush >= 0")
    cluster = tb.init(num_cpus=2, gcs_flush_interval_s=args.flush)
    t0, peak = time.time(), 0
    for wave in range(args.tasks // 1000):
        tb.get([empty.remote() for _ in range(1000)])
        if wave % 20 == 0:
            peak = max(peak, cluster.gcs_rss())
        if wave % 100 == 0:
            stats = api._gcs_stats()
            held = {t: n for s in stats.values() for t, n in s["entries"].items() if t in ("task", "obj")}
            print(f"{(wave + 1) * 1000:>9,} tasks {time.time() - t0:6.1f} s  GCS RSS {cluster.gcs_rss() / 1e6:6.1f} MB"
                  f"  in memory: {held}  flushed: {sum(s['flushed'] for s in stats.values()):,}", flush=True)
    peak = max(peak, cluster.gcs_rss())
    print(f"flush={args.flush:g} s: {args.tasks:,} tasks in {time.time() - t0:.1f} s; peak GCS RSS {peak / 1e6:.1f} MB")
    tb.shutdown()


if __name__ == "__main__":
    main()
