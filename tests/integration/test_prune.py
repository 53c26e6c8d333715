"""s3_backup_prune on real storage: S3 (moto) and a local directory."""

import json

import pytest
from harness import make_set, module_env, run_module, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import MANIFEST, list_sets
from ansible_collections.caas.backup.plugins.module_utils.storage import S3Storage, open_storage


@pytest.fixture(params=["s3", "file"])
def target(request, svc, s3_url, tmp_path):
    """(storage_url, Storage, module env) for S3 and for a local directory."""
    if request.param == "s3":
        return s3_url, s3_storage(svc, s3_url), module_env(svc)
    url = f"file://{tmp_path}/store"
    (tmp_path / "store").mkdir()
    return url, open_storage(url), module_env(svc)


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
    before = sorted(o.key for o in storage.list(""))
    result = run_module("s3_backup_prune", {"storage_url": url}, env)
    assert result["rc"] == 1
    assert "unreadable manifest" in result["msg"] and broken in result["msg"]
    assert old in json.dumps(before)
    assert sorted(o.key for o in storage.list("")) == before


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
    before = sorted(o.key for o in storage.list(""))
    result = run_module("s3_backup_prune", {"storage_url": url, "policy": policy}, env)
    assert result["rc"] == 1 and message in result["msg"]
    assert result["msg"].startswith("Failed to prune backups: ")
    assert sorted(o.key for o in storage.list("")) == before


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
