"""Redis snapshot throughput and memory, as ratios measured in one run (not a test: it asserts nothing).

Starts its own redis-server (tests/support/services.py), fills it with SIZE MiB of incompressible values,
then fetches the RDB with ``redis-cli --rdb`` and with the collection's replication fetch (streamed into a
local backup set, CRC-64 checked) on the same instance, and snapshots it by BGSAVE. Each of ours runs in a
forked process that reports its peak RSS, which must stay flat whatever SIZE is.

    make bench                        # runs this with --size 1024
    python bench/redis.py --size 128  # smaller
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This file is named redis.py: drop its directory from the path, or "import redis" would import it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO / ".build" / "collections"))
sys.path.insert(0, str(REPO / "tests" / "support"))

import redis  # noqa: E402
import services  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_storage", REPO / "bench" / "storage.py")
_storage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_storage)
measured = _storage.measured  # forks, times, reports the child's peak RSS

from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.redis_backup import (  # noqa: E402
    Connection,
    bgsave,
    copy_rdb,
    open_saved_rdb,
    replication_fetch,
)
from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions  # noqa: E402

VALUE = 16 * 1024


def fill(port: int, size_mib: int) -> None:
    client = redis.Redis(port=port)
    count = size_mib * 1024 * 1024 // VALUE
    pipe = client.pipeline(transaction=False)
    for number in range(count):
        pipe.set(f"key:{number}", os.urandom(VALUE))
        if number % 256 == 255:
            pipe.execute()
    pipe.execute()


def redis_cli(port: int, dest: str) -> None:
    subprocess.run([services.binary("redis-cli"), "-p", str(port), "--rdb", dest], check=True, capture_output=True)


def ours(port: int, root: str, method: str, compression: str, diskless: bool = False) -> None:
    conn = Connection("127.0.0.1", port)
    writer = SetWriter(LocalStorage(root), "redis-rdb", "bench", WriteOptions(compression))
    with writer.object("dump.rdb") as out:
        if method == "replication":
            replication_fetch(conn, out, diskless)
        else:
            path, _reused = bgsave(conn, 0)
            with open_saved_rdb(path) as src:
                copy_rdb(src, out, path)
    writer.commit({})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="MiB of data (default 1024)")
    size = parser.parse_args().size
    with tempfile.TemporaryDirectory(prefix="caas-bench-redis-") as work:
        conf = {"appendonly": "no", "save": "", "repl-diskless-sync-delay": "0"}
        handle = services.start_redis(Path(work) / "redis", extra_conf=conf)
        try:
            start = time.perf_counter()
            fill(handle.port, size)
            print(f"filled {size} MiB in {time.perf_counter() - start:.1f}s", file=sys.stderr)
            rows = []
            start = time.perf_counter()
            redis_cli(handle.port, os.path.join(work, "cli.rdb"))
            base = time.perf_counter() - start
            rdb_mib = os.path.getsize(os.path.join(work, "cli.rdb")) / 2**20
            rows.append(("redis-cli --rdb", base, None, 1.0))
            for label, args in (
                ("replication, no compression", ("replication", "none")),
                ("replication, diskless, no compr.", ("replication", "none", True)),
                ("replication, zstd", ("replication", "zstd")),
                ("bgsave + copy, zstd", ("bgsave", "zstd")),
            ):
                seconds, rss = measured(ours, handle.port, os.path.join(work, "backups"), *args)
                rows.append((label, seconds, rss, base / seconds))
        finally:
            handle.stop()
    print(f"RDB of {rdb_mib:.0f} MiB ({size} MiB of values); ratio = redis-cli seconds / ours (higher is faster)")
    print(f"{'operation':34} {'seconds':>8} {'MiB/s':>8} {'ratio':>6} {'peak RSS MiB':>13}")
    for label, seconds, rss, ratio in rows:
        shown = f"{rss:13.0f}" if rss is not None else f"{'-':>13}"
        print(f"{label:34} {seconds:8.2f} {rdb_mib / seconds:8.1f} {ratio:6.2f} {shown}")


if __name__ == "__main__":
    main()
