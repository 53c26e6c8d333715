"""Retention at scale: plan and prune N backup sets on the S3 server, counting the S3 calls (not a test).

Writes N small config sets spread over the last years, then measures listing the catalog, planning
(pure), a dry run and a real prune, with the number of S3 requests of each kind.

    make bench                   # starts the services, runs every bench
    python bench/prune.py --sets 10000   # with CAAS_S3_ENDPOINT etc. exported
"""

import argparse
import collections
import datetime
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "collections"))

from ansible_collections.caas.backup.plugins.module_utils.catalog import (  # noqa: E402
    SetWriter,
    list_sets,
    utcnow,
)
from ansible_collections.caas.backup.plugins.module_utils.retention import DEFAULT_POLICY, plan  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions  # noqa: E402


def counting(storage) -> collections.Counter:
    """Count every S3 API call the storage's client makes."""
    calls: collections.Counter = collections.Counter()
    storage.client.meta.events.register("before-call.s3.*", lambda model, **kw: calls.update([model.name]))
    return calls


def make(storage, when: datetime.datetime) -> None:
    writer = SetWriter(storage, "config", "bench", WriteOptions("none"), now=when)
    with writer.object("data") as out:
        out.write(b"x")
    writer.commit({}, finished_at=when)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=10000)
    count = parser.parse_args().sets
    endpoint = os.environ.get("CAAS_S3_ENDPOINT")
    if not endpoint:
        raise SystemExit("CAAS_S3_ENDPOINT is not set: run `make bench`")
    url = f"s3://{os.environ.get('CAAS_S3_BUCKET', 'caas-backups')}/bench-prune-{int(time.time())}"
    storage = open_storage(
        url,
        endpoint_url=endpoint,
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
    )
    now = utcnow()
    step = datetime.timedelta(hours=6)  # four a day: 10,000 sets reach back almost seven years
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: make(storage, now - n * step), range(count)))
    print(f"wrote {count} sets in {time.perf_counter() - start:.1f} s")

    rows = []
    calls = counting(storage)
    start = time.perf_counter()
    sets = list_sets(storage, "config")
    rows.append(("list catalog", time.perf_counter() - start, dict(calls)))
    calls.clear()
    start = time.perf_counter()
    decisions = plan(sets, now, DEFAULT_POLICY)
    rows.append(("plan (pure)", time.perf_counter() - start, dict(calls)))
    doomed = [d.bset for d in decisions if not d.keep]
    calls.clear()
    start = time.perf_counter()
    storage.delete([f"{b.prefix}/manifest.json" for b in doomed])
    storage.delete([k for b in doomed for k in b.keys if not k.endswith("/manifest.json")])
    rows.append((f"delete {len(doomed)} sets", time.perf_counter() - start, dict(calls)))
    print(f"\n{count} sets, {len(doomed)} outside the default config policy (365 days)\n")
    print(f"{'step':26} {'seconds':>8}  S3 requests")
    for label, seconds, requests in rows:
        print(f"{label:26} {seconds:8.2f}  {requests or '-'}")


if __name__ == "__main__":
    main()
