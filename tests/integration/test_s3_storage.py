"""The storage core against a real S3 server (moto_server): streaming, integrity, clear errors."""

import json
import signal
import subprocess
import sys
import textwrap

import pytest
from harness import COLLECTIONS, module_env, run_module, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import fetch_object, latest, list_sets
from ansible_collections.caas.backup.plugins.module_utils.common import NotFoundError, StorageError

# Writes SIZE_MIB of incompressible data as one object through zstd + age to S3, then reads it back
# verified, and prints the peak RSS measured before and after, so the test can bound the growth.
BIG_UPLOAD = textwrap.dedent("""
    import hashlib, json, os, resource, sys
    sys.path.insert(0, sys.argv[1])
    from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter, fetch_object, latest
    from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage
    from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions
    url, endpoint, recipient, identity, size_mib, pause = sys.argv[2:8]
    storage = open_storage(url, endpoint_url=endpoint)
    storage.check()
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    base = rss()
    source = hashlib.sha256()
    writer = SetWriter(storage, "config", "big", WriteOptions("zstd", recipients=(recipient,)))
    with writer.object("blob") as out:
        for i in range(int(size_mib)):
            block = os.urandom(1024 * 1024)
            source.update(block)
            out.write(block)
            if float(pause):
                print("written", i, flush=True)
                import time; time.sleep(float(pause))
    writer.commit({})
    after_upload = rss()
    back = hashlib.sha256()
    with fetch_object(storage, latest(storage, "config", "big"), "blob") as copy:
        with copy.reader([identity]) as reader:
            for block in iter(lambda: reader.read(1024 * 1024), b""):
                back.update(block)
    print(json.dumps({"base": base, "after_upload": after_upload, "after_download": rss(),
                      "same": back.hexdigest() == source.hexdigest(),
                      "stored": writer.objects[0]["size"]}))
""")


def big_upload(svc, url, key, size_mib, pause=0.0, **popen):
    args = [
        sys.executable,
        "-c",
        BIG_UPLOAD,
        str(COLLECTIONS),
        url,
        svc["CAAS_S3_ENDPOINT"],
        key["recipient"],
        key["identity"],
        str(size_mib),
        str(pause),
    ]
    return subprocess.Popen(args, env=module_env(svc), stdout=subprocess.PIPE, text=True, **popen)


def test_large_upload_streams_with_bounded_memory(svc, s3_url, age_key):
    proc = big_upload(svc, s3_url, age_key, 96)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0
    report = json.loads(out.strip().splitlines()[-1])
    assert report["same"], "the object read back differs from what was written"
    assert report["stored"] > 96 * 1024 * 1024, "random data must not compress: the test would prove nothing"
    # 96 MiB went through; the pipeline may hold ~4 parts of 8 MiB plus queues, never the whole object.
    assert report["after_upload"] - report["base"] < 64, report
    assert report["after_download"] - report["base"] < 64, report


def test_killed_upload_leaves_no_restorable_set(svc, s3_url, age_key, s3):
    proc = big_upload(svc, s3_url, age_key, 64, pause=0.05)
    for line in proc.stdout:
        if line.startswith("written 20"):  # two multipart parts are on the server by now
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    storage = s3_storage(svc, s3_url)
    assert [s.complete for s in list_sets(storage, "config")] in ([], [False])
    with pytest.raises(NotFoundError, match="no complete config backup"):
        latest(storage, "config", "big")
    prefix = s3_url.split("/", 3)[3]
    uploads = s3.list_multipart_uploads(Bucket=svc["CAAS_S3_BUCKET"], Prefix=prefix).get("Uploads", [])
    assert uploads, "the killed upload should have left an unfinished multipart upload (for prune to clean)"


@pytest.fixture()
def site(tmp_path):
    root = tmp_path / "site"
    (root / "keys").mkdir(parents=True)
    (root / ".env").write_text("TOKEN=abc\n")
    (root / "keys" / "jwt.pem").write_text("PRIVATE\n")
    (root / "app.yml").write_text("port: 1\n")
    return root


def backup_args(url, root, key):
    return {
        "storage_url": url,
        "root": str(root),
        "paths": [".env", "keys", "app.yml"],
        "encryption_recipients": [key["recipient"]],
        "source_name": "web",
    }


def test_corrupted_object_fails_restore_before_touching_dest(svc, s3_url, s3, site, age_key, tmp_path):
    env = module_env(svc)
    made = run_module("config_backup", backup_args(s3_url, site, age_key), env)
    assert made["rc"] == 0, made
    key = f"{s3_url.split('/', 3)[3]}/config/web/{made['backup_id']}/config.tar.zst.age"
    body = bytearray(s3.get_object(Bucket=svc["CAAS_S3_BUCKET"], Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    s3.put_object(Bucket=svc["CAAS_S3_BUCKET"], Key=key, Body=bytes(body))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / ".env").write_text("CURRENT=1\n")
    result = run_module(
        "config_restore", {"storage_url": s3_url, "dest": str(dest), "encryption_identity_file": age_key["file"]}, env
    )
    assert result["rc"] == 1 and result["failed"]
    assert result["msg"].startswith("Failed to restore configuration: ")
    assert "config.tar.zst.age has sha256" in result["msg"] and "corrupted" in result["msg"]
    assert "Traceback" not in result["msg"] and "exception" not in result
    assert (dest / ".env").read_text() == "CURRENT=1\n"
    assert sorted(p.name for p in dest.iterdir()) == [".env"]


def test_missing_bucket_is_a_clear_error(svc, site, age_key):
    result = run_module("config_backup", backup_args("s3://no-such-bucket/x", site, age_key), module_env(svc))
    assert result["rc"] == 1
    assert result["msg"] == (
        f"Failed to back up configuration: cannot reach s3://no-such-bucket/x at "
        f"{svc['CAAS_S3_ENDPOINT']}: bucket 'no-such-bucket' does not exist"
    )


def test_unreachable_endpoint_is_a_clear_error(svc, site, age_key):
    env = module_env(svc, CAAS_S3_ENDPOINT="http://127.0.0.1:9", AWS_MAX_ATTEMPTS="1")
    result = run_module("config_backup", backup_args("s3://caas-backups/x", site, age_key), env)
    assert result["rc"] == 1
    assert "S3 endpoint unreachable" in result["msg"] and "127.0.0.1:9" in result["msg"]


@pytest.mark.parametrize("bad", ["access", "secret"])
def test_wrong_credentials_are_a_clear_error(svc, site, age_key, locked_down_s3, bad):
    endpoint, access, secret = locked_down_s3
    good = run_module(
        "config_backup",
        backup_args("s3://locked/x", site, age_key),
        module_env(svc, CAAS_S3_ENDPOINT=endpoint, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret),
    )
    assert good["rc"] == 0, good
    wrong = {"access": ("AKIAWRONGWRONGWRONG0", secret), "secret": (access, "wrong-secret-" + "x" * 27)}[bad]
    env = module_env(svc, CAAS_S3_ENDPOINT=endpoint, AWS_ACCESS_KEY_ID=wrong[0], AWS_SECRET_ACCESS_KEY=wrong[1])
    result = run_module("config_backup", backup_args("s3://locked/x", site, age_key), env)
    assert result["rc"] == 1
    expected = {"access": "the S3 access key was rejected", "secret": "the S3 secret key was rejected"}[bad]
    assert expected in result["msg"], result["msg"]
    assert wrong[1] not in json.dumps(result) and secret not in json.dumps(result)


def test_storage_errors_name_the_cause(svc):
    storage = s3_storage(svc, "s3://no-such-bucket")
    with pytest.raises(StorageError, match="does not exist"):
        list_sets(storage, "config")


def test_fetch_of_a_deleted_object_is_not_found(svc, s3_url, s3, site, age_key):
    made = run_module("config_backup", backup_args(s3_url, site, age_key), module_env(svc))
    storage = s3_storage(svc, s3_url)
    bset = latest(storage, "config", "web")
    s3.delete_object(Bucket=svc["CAAS_S3_BUCKET"], Key=f"{s3_url.split('/', 3)[3]}/{bset.prefix}/config.tar.zst.age")
    with (
        pytest.raises(NotFoundError, match=f"{made['backup_id']}/config.tar.zst.age does not exist"),
        fetch_object(storage, bset, "config.tar"),
    ):
        pytest.fail("a missing object must not be handed out")
