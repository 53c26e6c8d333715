"""The restore executor and the admin-client wrapper, on a recording fake admin client.

These are the paths Tansu cannot show for real: config changes (it reports none), added partitions (no
CreatePartitions), ACLs (CreateAcls gets no answer), a cluster without an authorizer, and a broker that refuses a
group's offsets.
"""

import pytest

from ansible_collections.caas.backup.plugins.module_utils.common import SourceError
from ansible_collections.caas.backup.plugins.module_utils.kafka_meta import (
    Cluster,
    apply_plan,
    kafka_errors,
    resume_time,
)

ACL = {
    "principal": "User:billing",
    "host": "*",
    "operation": "READ",
    "permission_type": "ALLOW",
    "resource_type": "TOPIC",
    "resource_name": "orders",
    "pattern_type": "LITERAL",
}


class FakeAdmin:
    """Records what the executor asks of kafka-python's admin client; answers as told."""

    def __init__(self, alter="OK", acl_failures=(), offset_error=None, authorizer=True):
        self.calls = []
        self.alter = alter
        self.acl_failures = list(acl_failures)
        self.offset_error = offset_error
        self.authorizer = authorizer

    def create_topics(self, specs, wait_for_metadata=False):
        self.calls.append(("create_topics", specs))

    def create_partitions(self, specs):
        self.calls.append(("create_partitions", specs))

    def alter_configs(self, resources, raise_on_unknown=True):
        [resource] = resources
        self.calls.append(("alter_configs", resource.name, resource.configs))
        return {"topic": {resource.name: self.alter}}

    def create_acls(self, acls):
        self.calls.append(("create_acls", [a.resource_pattern.resource_name for a in acls]))
        return {"succeeded": acls, "failed": self.acl_failures}

    def alter_group_offsets(self, group_id, offsets):
        self.calls.append(
            (
                "alter_group_offsets",
                group_id,
                {(tp.topic, tp.partition): (om.offset, om.metadata) for tp, om in offsets.items()},
            )
        )
        return {tp: self.offset_error or kafka_errors.NoError for tp in offsets}

    def describe_acls(self, acl_filter):
        if not self.authorizer:
            raise kafka_errors.SecurityDisabledError("No Authorizer is configured on the broker")
        return [], kafka_errors.NoError


def cluster_on(admin):
    cluster = Cluster.__new__(Cluster)  # no connection: the fake admin stands in for it
    cluster.admin = admin
    cluster._consumer = None
    return cluster


def test_apply_plan_does_topics_then_acls_then_offsets():
    admin = FakeAdmin()
    actions = [
        {
            "topic": "orders",
            "action": "create",
            "partitions": 3,
            "replication_factor": 1,
            "configs": {"retention.ms": "9"},
        },
        {"topic": "audit", "action": "add_partitions", "from": 1, "to": 4},
        {
            "topic": "events",
            "action": "alter_configs",
            "changes": {"cleanup.policy": {"from": "delete", "to": "compact"}},
        },
    ]
    groups = {"billing": {"current": {}, "wanted": {("orders", 0): 5}, "metadata": {("orders", 0): "v2"}, "notes": {}}}
    apply_plan(cluster_on(admin), actions, [ACL], groups)
    assert admin.calls == [
        ("create_topics", {"orders": {"num_partitions": 3, "replication_factor": 1, "configs": {"retention.ms": "9"}}}),
        ("create_partitions", {"audit": 4}),
        ("alter_configs", "events", {"cleanup.policy": "compact"}),
        ("create_acls", ["orders"]),
        ("alter_group_offsets", "billing", {("orders", 0): (5, "v2")}),
    ]


def test_a_refused_config_change_fails_with_the_brokers_reason():
    admin = FakeAdmin(alter="InvalidConfigurationError: retention.ms must be a number")
    with pytest.raises(SourceError, match="cannot alter the configs of topic events: InvalidConfigurationError"):
        cluster_on(admin).set_configs("events", {"retention.ms": "soon"})


def test_a_refused_acl_fails():
    admin = FakeAdmin(acl_failures=[kafka_errors.ClusterAuthorizationFailedError])
    with pytest.raises(SourceError, match="cannot create 1 ACL"):
        cluster_on(admin).create_acls([ACL])


def test_offsets_the_broker_refuses_fail_naming_the_partitions():
    admin = FakeAdmin(offset_error=kafka_errors.UnknownMemberIdError)
    with pytest.raises(
        SourceError, match=r"refused offsets of consumer group billing: \{'orders-0': 'UnknownMemberIdError'\}"
    ):
        cluster_on(admin).commit_offsets("billing", {("orders", 0): 5})


def test_a_cluster_without_authorizer_has_no_acls_rather_than_an_empty_list():
    assert cluster_on(FakeAdmin(authorizer=False)).acls() is None
    assert cluster_on(FakeAdmin()).acls() == []


class Log:
    """read_record over offsets 10..19 with timestamps 1000 + offset."""

    def read_record(self, topic, part, offset):
        return (offset, 1000 + offset) if 10 <= offset < 20 else None


@pytest.mark.parametrize(
    ("offset", "expected"),
    [(10, 1010), (15, 1015), (20, 1020), (9, None), (21, None)],
)
def test_resume_time_is_the_next_records_time_or_just_after_the_last(offset, expected):
    """A committed offset outside the log (Tansu's LATEST, or a truncated log) has no time."""
    assert resume_time(Log(), "t", 0, offset, 10, 20) == expected
    assert resume_time(Log(), "t", 0, 5, 5, 5) is None
