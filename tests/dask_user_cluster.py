"""One user's Dask cluster in a process of its own, as on a facility (run by the Dask tests).

Usage: python dask_user_cluster.py WORKERS THREADS_PER_WORKER PROCESSES(0|1)
Prints one JSON line (scheduler address, dashboard URL) once every worker has joined, then
closes the cluster when a line (or end of file) arrives on standard input.

Each user's scheduler needs its own process: distributed's /metrics handler keeps its
collectors in a class attribute, so schedulers sharing a process report each other's figures.
"""

import json
import sys

from distributed import Client, LocalCluster

if __name__ == "__main__":
    workers, threads, processes = (int(a) for a in sys.argv[1:4])
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=threads, processes=bool(processes), host="127.0.0.1", protocol="tcp://",
        scheduler_port=0, dashboard_address="127.0.0.1:0",
    )
    with Client(cluster) as client:
        client.wait_for_workers(workers, timeout=120)
    print(json.dumps({"scheduler": cluster.scheduler_address, "dashboard": cluster.dashboard_link.rsplit("/", 1)[0]}), flush=True)
    sys.stdin.readline()
    cluster.close(timeout=30)
