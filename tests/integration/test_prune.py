"""s3_backup_prune on real storage: S3 (moto) and a local directory."""

import datetime
import json
import os
import time
from pathlib import Path

import pytest
from harness import NOW, make_set, module_env, run_module, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import MANIFEST, SetWriter, list_sets
from ansible_collections.caas.backup.plugins.module_utils.storage import S3Storage, open_storage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions
from ansible_collections.caas.backup.plugins.module_utils.verify import record_verification


@pytest.fixture(params=["s3", "file"])
def target(request, svc, s3_url, tmp_path):
    """(storage_url, Storage, module env) for S3 and for a local directory."""
    if request.param == "s3":
        return s3_url, s3_storage(svc, s3_url), module_env(svc)
    url = f"file://{tmp_path}/store"
    (tmp_path / "store").mkdir()
    return url, open_storage(url), module_env(svc)


def sets_stored(storage):
    """Every stored key but the audit records (a refused prune is recorded as an attempt, and touches no set)."""
    return sorted(o.key for o in storage.list("") if not o.key.startswith("audit/"))


def by_set(result):
    return {f"{p['kind']}/{p['source']}/{p['backup_id']}": p for p in result["plan"]}


def test_dry_run_plans_with_reasons_and_deletes_nothing(target):
    url, storage, env = target
    old, recent, forever = make_set(storage, 400), make_set(storage, 3), make_set(storage, 2000, tags=["keep"])
    before = sorted(o.key for o in storage.list(""))
    result = run_module("s3_backup_prune", {"storage_url": url}, env, check_mode=True)
    assert result["rc"] == 0, result
    plan = by_set(result)
    assert plan[old]["action"] == "delete" and plan[old]["reasons"] == ["outside every retention rule"]
    assert plan[recent]["reasons"] == ["within 365 days"]
    assert plan[forever]["action"] == "keep" and plan[forever]["reasons"] == ["tagged keep"]
    assert result["would_delete"] == [old] and result["deleted"] == [] and result["changed"]
    assert sorted(o.key for o in storage.list("")) == before


def test_prune_deletes_old_and_abandoned_sets_and_keeps_the_rest(target):
    url, storage, env = target
    old = make_set(storage, 400)
    kept = [make_set(storage, 3), make_set(storage, 2000, tags=["keep"])]
    abandoned = make_set(storage, 5, commit=False)
    young_partial = make_set(storage, 0, commit=False)
    result = run_module("s3_backup_prune", {"storage_url": url}, env)
    assert result["rc"] == 0, result
    assert sorted(result["deleted"]) == sorted([old, abandoned])
    left = {s.prefix: s for s in list_sets(storage, "config")}
    assert sorted(left) == sorted([*kept, young_partial])
    assert all(left[p].complete for p in kept)
    again = run_module("s3_backup_prune", {"storage_url": url}, env)
    assert again["deleted"] == [] and not again["changed"]


def test_minimum_redundancy_overrides_the_policy(target):
    url, storage, env = target
    sets = [make_set(storage, d) for d in (900, 800, 700)]
    result = run_module("s3_backup_prune", {"storage_url": url, "minimum_redundancy": 2}, env)
    assert result["deleted"] == [sets[0]]
    assert [s.prefix for s in list_sets(storage, "config")] == sets[1:]


def test_unreadable_manifest_means_nothing_is_deleted(target):
    url, storage, env = target
    old = make_set(storage, 400)
    broken = make_set(storage, 500)
    storage.put_bytes(f"{broken}/{MANIFEST}", b"{broken")
    before = sets_stored(storage)
    result = run_module("s3_backup_prune", {"storage_url": url}, env)
    assert result["rc"] == 1
    assert "unreadable manifest" in result["msg"] and broken in result["msg"]
    assert old in json.dumps(before)
    assert sets_stored(storage) == before
    records = [json.loads(storage.get_bytes(o.key)) for o in storage.list("audit/")]
    assert [(r["record"], r["action"], r.get("result")) for r in records] == [
        ("start", "delete", None),
        ("result", "delete", "failed"),
    ]


@pytest.mark.parametrize(
    "policy,message",
    [
        ({"mysql": {"days": 1}}, "unknown kind 'mysql'"),
        ({"config": {"days": -3}}, "must be a whole number >= 0"),
    ],
)
def test_bad_policy_fails_and_deletes_nothing(target, policy, message):
    url, storage, env = target
    make_set(storage, 400)
    before = sets_stored(storage)
    result = run_module("s3_backup_prune", {"storage_url": url, "policy": policy}, env)
    assert result["rc"] == 1 and message in result["msg"]
    assert result["msg"].startswith("Failed to prune backups: ")
    assert sets_stored(storage) == before


def test_unreachable_storage_is_a_clear_error(svc):
    env = module_env(svc, CAAS_S3_ENDPOINT="http://127.0.0.1:9", AWS_MAX_ATTEMPTS="1")
    result = run_module("s3_backup_prune", {"storage_url": "s3://caas-backups/x"}, env)
    assert result["rc"] == 1 and "S3 endpoint unreachable" in result["msg"]


def test_object_locked_sets_are_skipped_and_reported(svc, s3):
    s3.create_bucket(Bucket="locked-backups", ObjectLockEnabledForBucket=True)
    locked = S3Storage(
        "locked-backups",
        "p",
        endpoint_url=svc["CAAS_S3_ENDPOINT"],
        access_key=svc["AWS_ACCESS_KEY_ID"],
        secret_key=svc["AWS_SECRET_ACCESS_KEY"],
        object_lock_mode="COMPLIANCE",
        object_lock_days=1,
    )
    prefix, recent = make_set(locked, 400), make_set(locked, 1)
    result = run_module("s3_backup_prune", {"storage_url": "s3://locked-backups/p"}, module_env(svc))
    assert result["rc"] == 0, result
    assert by_set(result)[prefix]["action"] == "delete"
    assert [entry["set"] for entry in result["locked"]] == [prefix]
    assert result["deleted"] == []
    assert [s.prefix for s in list_sets(locked, "config")] == [prefix, recent]


def test_unfinished_multipart_uploads_are_aborted(svc, s3_url, s3):
    bucket, prefix = s3_url[5:].split("/", 1)
    s3.create_multipart_upload(Bucket=bucket, Key=f"{prefix}/config/app/20260101T000000Z-0000/data")
    args = {"storage_url": s3_url, "incomplete_grace_hours": 0}
    planned = run_module("s3_backup_prune", args, module_env(svc), check_mode=True)
    assert planned["would_delete_partial_uploads"] == ["config/app/20260101T000000Z-0000/data"]
    assert planned["partial_uploads"] == []
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads")
    run_module("s3_backup_prune", args, module_env(svc))
    assert not s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads")


def test_s3_delete_goes_in_batches_of_at_most_1000_keys(svc, s3_url, s3):
    """moto, like S3, refuses a DeleteObjects request of more than 1000 keys: all 1200 going proves batching."""
    bucket, prefix = s3_url[5:].split("/", 1)
    keys = [f"config/app/20250101T000000Z-0000/k{n:04d}" for n in range(1200)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=b"")
    storage = s3_storage(svc, s3_url)
    assert storage.delete(keys) == {}
    assert list(storage.list("")) == []


def write_set(storage, kind, when, facts=None, source="app"):
    """A set of ``kind`` finished at ``when``, with ``facts`` in its manifest."""
    writer = SetWriter(storage, kind, source, WriteOptions("none"), now=when)
    with writer.object("data") as out:
        out.write(b"x" * 10)
    writer.commit(facts or {}, finished_at=when)
    return writer.prefix


def leave_upload(storage, s3, key, age_hours):
    """What a write of ``key`` leaves until it ends: an unfinished multipart upload on S3, a partial file on file://.

    moto reports every upload as initiated on 2010-11-10 (a fixed date in its ListMultipartUploads): an upload
    ``age_hours`` old is made by sending no part, a young one (age 0) by sending a part now, whose time moto
    reports truly: the module takes the newest part's time as the upload's last sign of life.
    """
    if isinstance(storage, S3Storage):
        started = s3.create_multipart_upload(Bucket=storage.bucket, Key=f"{storage.prefix}/{key}")
        if not age_hours:
            s3.upload_part(
                Bucket=storage.bucket,
                Key=f"{storage.prefix}/{key}",
                UploadId=started["UploadId"],
                PartNumber=1,
                Body=b"part",
            )
        return key
    path = Path(storage.root, *key.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".partial-{path.name}"
    partial.write_bytes(b"half")
    old = time.time() - age_hours * 3600
    os.utime(partial, (old, old))
    os.utime(partial.parent, (old, old))
    return f"{key.rsplit('/', 1)[0]}/{partial.name}"


def uploads_left(storage, s3):
    """The keys of the unfinished uploads (S3) or partial files (file://) still there."""
    if isinstance(storage, S3Storage):
        found = s3.list_multipart_uploads(Bucket=storage.bucket, Prefix=f"{storage.prefix}/").get("Uploads", ())
        return sorted(u["Key"][len(storage.prefix) + 1 :] for u in found)
    root = Path(storage.root)
    return sorted(str(p.relative_to(root)) for p in root.rglob(".partial-*"))


def test_a_failed_newest_set_does_not_cost_the_good_one(target):
    """The newest set's stored verification failed: it does not count for minimum_redundancy, the good one stays."""
    url, storage, env = target
    good, bad = make_set(storage, 5), make_set(storage, 1)
    [bad_set] = [s for s in list_sets(storage, "config") if s.prefix == bad]
    record_verification(storage, bad_set, {"ok": False, "level": "checksum", "verified_at": "2026-01-01T00:00:00Z"})
    result = run_module("s3_backup_prune", {"storage_url": url, "policy": {"config": {"days": 2}}}, env)
    assert result["rc"] == 0, result
    assert result["deleted"] == []
    plan = by_set(result)
    assert plan[good]["action"] == "keep" and plan[good]["verified"] is None
    assert plan[bad]["verified"] is False and "verification failed: not counted as restorable" in plan[bad]["reasons"]
    assert [s.prefix for s in list_sets(storage, "config")] == [good, bad]


@pytest.mark.parametrize(
    "args,message",
    [
        ({"minimum_redundancy": 0}, "minimum_redundancy must be between 1 and 10000, not 0"),
        ({"incomplete_grace_hours": -1}, "incomplete_grace_hours must be a whole number from 0 to 87600"),
        ({"incomplete_grace_hours": 10**12}, "incomplete_grace_hours must be a whole number from 0 to 87600"),
    ],
)
def test_bad_limits_fail_clearly_and_delete_nothing(target, args, message):
    url, storage, env = target
    make_set(storage, 400)
    make_set(storage, 30, commit=False)
    before = sets_stored(storage)
    result = run_module("s3_backup_prune", {"storage_url": url, **args}, env)
    assert result["rc"] == 1 and result["msg"].startswith(f"Failed to prune backups: {message}"), result
    assert "exception" not in result
    assert sets_stored(storage) == before


def test_cleanup_keeps_to_the_selected_kinds_and_counts_what_it_cleaned(target, s3):
    """Prune of config only: config's abandoned set and killed upload go, redis-rdb's stay; live uploads stay."""
    url, storage, env = target
    abandoned_config = make_set(storage, 3, commit=False)
    abandoned_redis = make_set(storage, 3, kind="redis-rdb", commit=False)
    killed = leave_upload(storage, s3, "config/app/20260101T000000.000Z-0001/data", 48)
    other = leave_upload(storage, s3, "redis-rdb/app/20260101T000000.000Z-0002/dump.rdb", 48)
    live = leave_upload(storage, s3, "config/app/20990101T000000.000Z-0003/data", 0)
    args = {"storage_url": url, "kinds": ["config"], "incomplete_grace_hours": 1}
    result = run_module("s3_backup_prune", args, env)
    assert result["rc"] == 0, result
    assert result["deleted"] == [abandoned_config]
    assert result["partial_uploads"] == [killed]
    assert result["abandoned"] == {"config": {"incomplete_sets": 1, "unfinished_uploads": 1, "empty_directories": 0}}
    assert uploads_left(storage, s3) == sorted([other, live])
    assert [s.prefix for s in list_sets(storage)] == [abandoned_redis]


def test_a_young_upload_is_not_aborted(target, s3):
    url, storage, env = target
    young = leave_upload(storage, s3, "config/app/20990101T000000.000Z-0004/data", 0)
    result = run_module("s3_backup_prune", {"storage_url": url}, env)
    assert result["rc"] == 0 and result["partial_uploads"] == [] and result["abandoned"] == {}, result
    assert uploads_left(storage, s3) == [young]


def test_empty_set_directories_are_removed_on_file_storage(tmp_path, svc):
    """A killed write can leave a set directory with nothing in it, or only its partial file: both go."""
    url = f"file://{tmp_path}"
    storage = open_storage(url)
    kept = make_set(storage, 3)
    empty = tmp_path / "config" / "app" / "20260101T000000.000Z-0005"
    empty.mkdir(parents=True)
    old = time.time() - 48 * 3600
    os.utime(empty, (old, old))
    partial = leave_upload(storage, None, "config/app/20260101T000000.000Z-0006/data", 48)
    result = run_module("s3_backup_prune", {"storage_url": url}, module_env(svc))
    assert result["rc"] == 0, result
    assert result["partial_uploads"] == sorted([partial, "config/app/20260101T000000.000Z-0005/"])
    assert result["abandoned"]["config"] == {"incomplete_sets": 0, "unfinished_uploads": 1, "empty_directories": 1}
    assert sorted(p.name for p in (tmp_path / "config" / "app").iterdir()) == [kept.rsplit("/", 1)[1]]


def test_the_full_backup_the_oplog_window_needs_survives_a_short_full_policy(target):
    """mongo-full kept 2 days, slices 7: the full backup at the window's start stays, with a module warning; the
    slices from its consistent point on stay; a full backup neither needs goes."""
    url, storage, env = target
    now = NOW.replace(minute=0, second=0)
    fulls = {}
    for days in range(0, 11):
        when = now - datetime.timedelta(days=days, hours=1)
        fulls[days] = write_set(storage, "mongo-full", when, {"last_ts": {"t": int(when.timestamp()), "i": 1}}, "rs0")
    first, slices = now - datetime.timedelta(days=10, hours=2), []
    while first < now:
        last = first + datetime.timedelta(hours=6)
        facts = {"first_ts": {"t": int(first.timestamp()), "i": 1}, "last_ts": {"t": int(last.timestamp()), "i": 1}}
        slices.append(write_set(storage, "mongo-oplog", last, facts, "rs0"))
        first = last
    args = {"storage_url": url, "policy": {"mongo-full": {"days": 2}, "mongo-oplog": {"days": 7}}}
    result = run_module("s3_backup_prune", args, env)
    assert result["rc"] == 0, result
    plan = by_set(result)
    base = fulls[8]
    assert plan[base]["action"] == "keep" and plan[base]["reasons"][0].startswith("base of the point-in-time window")
    assert plan[fulls[9]]["action"] == "delete" and plan[fulls[5]]["action"] == "delete"
    [warning] = result["pitr_warnings"]
    assert f"the mongo-full policy would delete {base}" in warning and warning in json.dumps(result["warnings"])
    base_point = (now - datetime.timedelta(days=8, hours=1)).timestamp()
    left = {s.prefix: s for s in list_sets(storage, "mongo-oplog")}
    needed = [p for p in slices if plan[p]["action"] == "keep"]
    assert sorted(left) == sorted(needed)
    assert min(left[p].facts["first_ts"]["t"] for p in needed) <= base_point


def test_pruning_only_full_backups_still_keeps_the_base_the_slices_need(target):
    """kinds: [mongo-full] alone: the slices are not pruned, but they still decide which full backup is the base
    of their window - it stays (out of the plan, the slices let it go with the 30-day rule)."""
    url, storage, env = target
    now = NOW.replace(minute=0, second=0)
    old = now - datetime.timedelta(days=40)
    base = write_set(storage, "mongo-full", old, {"last_ts": {"t": int(old.timestamp()), "i": 1}}, "rs0")
    later = now - datetime.timedelta(days=35)  # kept anyway: the newest full backup
    newest = write_set(storage, "mongo-full", later, {"last_ts": {"t": int(later.timestamp()), "i": 1}}, "rs0")
    first, slices = old, 0
    while first < now - datetime.timedelta(hours=6):
        last = first + datetime.timedelta(hours=6)
        facts = {"first_ts": {"t": int(first.timestamp()), "i": 1}, "last_ts": {"t": int(last.timestamp()), "i": 1}}
        write_set(storage, "mongo-oplog", last, facts, "rs0")
        first, slices = last, slices + 1
    full_policy = {"daily": 30, "weekly": 0, "monthly": 0, "yearly": 0}
    policy = {"mongo-full": full_policy, "mongo-oplog": {"days": 45}}
    result = run_module("s3_backup_prune", {"storage_url": url, "kinds": ["mongo-full"], "policy": policy}, env)
    assert result["rc"] == 0, result
    assert [s.prefix for s in list_sets(storage, "mongo-full")] == [base, newest], result["plan"]
    assert len(list_sets(storage, "mongo-oplog")) == slices and result["deleted"] == []


def test_check_mode_says_what_it_would_delete_and_a_real_run_deletes_exactly_that(target):
    """would_delete / would_delete_partial_uploads in check mode, deleted and partial_uploads stay empty, the msg
    says "would delete"; the storage is untouched, and the real run then deletes what the check named."""
    url, storage, env = target
    old, older = make_set(storage, 400), make_set(storage, 500)
    make_set(storage, 3)
    abandoned = make_set(storage, 5, commit=False)
    before = sorted((o.key, o.size) for o in storage.list(""))
    planned = run_module("s3_backup_prune", {"storage_url": url}, env, check_mode=True)
    assert planned["rc"] == 0, planned
    assert sorted(planned["would_delete"]) == sorted([old, older, abandoned])
    assert planned["deleted"] == [] and planned["partial_uploads"] == [] and planned["changed"] is True
    assert planned["msg"].startswith("would delete 3 set(s) and ")
    assert sorted((o.key, o.size) for o in storage.list("")) == before
    done = run_module("s3_backup_prune", {"storage_url": url}, env)
    assert done["rc"] == 0, done
    assert sorted(done["deleted"]) == sorted(planned["would_delete"]) and "would_delete" not in done
    assert done["msg"].startswith("deleted 3 set(s) and ")
