"""Storage throughput and memory, as ratios measured in one run (not a test: it asserts nothing).

Uploads and downloads SIZE MiB of incompressible data through the collection's pipeline to a local
directory and to the S3 server of scripts/services, and compares each with a plain file copy of
the same bytes. Each measurement runs in its own forked process, which reports its peak RSS.

    make bench            # starts the services, runs this, stops them
    python bench/storage.py --size 256   # with CAAS_S3_ENDPOINT etc. exported
"""

import argparse
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "collections"))

from pyrage import x25519  # noqa: E402

from ansible_collections.caas.backup.plugins.module_utils.catalog import (  # noqa: E402
    SetWriter,
    fetch_object,
    latest,
)
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions  # noqa: E402

CHUNK = 1024 * 1024


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(work, *args) -> tuple[float, float]:
    """Run ``work(*args)`` in a forked process: (seconds, peak RSS MiB of that process)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        start = time.perf_counter()
        try:
            work(*args)
        except BaseException:
            queue.put(None)  # so the parent does not wait for ever
            raise
        queue.put((time.perf_counter() - start, peak_rss_mib()))

    proc = ctx.Process(target=child)
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode or result is None:
        raise SystemExit(f"{work.__name__} failed")
    return result


def plain_copy(src: str, dst: str) -> None:
    shutil.copyfile(src, dst)
    os.sync()


def upload(url: str, src: str, options: WriteOptions, storage_options: dict) -> None:
    storage = open_storage(url, **storage_options)
    writer = SetWriter(storage, "config", "bench", options)
    with open(src, "rb") as f, writer.object("blob") as out:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            out.write(chunk)
    writer.commit({})


def download(url: str, identity: str, storage_options: dict) -> None:
    storage = open_storage(url, **storage_options)
    with fetch_object(storage, latest(storage, "config", "bench"), "blob") as copy, copy.reader([identity]) as r:
        while r.read(CHUNK):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="MiB of data (default 256)")
    size = parser.parse_args().size
    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    s3 = {
        "endpoint_url": os.environ.get("CAAS_S3_ENDPOINT"),
        "access_key": os.environ.get("AWS_ACCESS_KEY_ID"),
        "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY"),
    }
    with tempfile.TemporaryDirectory(prefix="caas-bench-") as work:
        src = os.path.join(work, "data")
        with open(src, "wb") as f:
            for _chunk in range(size):
                f.write(os.urandom(CHUNK))
        base_s, base_rss = measured(plain_copy, src, os.path.join(work, "copy"))
        rows = [("plain file copy", base_s, base_rss, 1.0)]
        targets = [("local dir", f"file://{work}/store", {})]
        if s3["endpoint_url"]:
            targets.append(("S3 (moto)", f"s3://{os.environ.get('CAAS_S3_BUCKET', 'caas-backups')}/bench", s3))
        else:
            print("CAAS_S3_ENDPOINT is not set: S3 left out (run `make bench`)", file=sys.stderr)
        for label, url, options in targets:
            for pipeline, opts in (
                ("none", WriteOptions("none")),
                ("zstd+age", WriteOptions("zstd", recipients=(recipient,))),
            ):
                seconds, rss = measured(upload, url + "-" + pipeline.replace("+", "-"), src, opts, options)
                rows.append((f"upload {label} {pipeline}", seconds, rss, base_s / seconds))
                seconds, rss = measured(download, url + "-" + pipeline.replace("+", "-"), str(identity), options)
                rows.append((f"download {label} {pipeline}", seconds, rss, base_s / seconds))
    print(f"\n{size} MiB, incompressible; ratio = plain copy time / this time (1.0 = as fast as cp)\n")
    print(f"{'operation':34} {'seconds':>8} {'MiB/s':>8} {'ratio':>6} {'peak RSS MiB':>13}")
    for label, seconds, rss, ratio in rows:
        print(f"{label:34} {seconds:8.2f} {size / seconds:8.1f} {ratio:6.2f} {rss:13.0f}")


if __name__ == "__main__":
    main()
