"""The Kafka metadata backup's logic: options, config diffing, restore planning, offset mapping, and the
restore executor on a recording fake admin client.

Many cases here are ones Tansu (the test broker) cannot show, so they have no
integration test: topic config overrides (Tansu's DescribeConfigs reports none,
and labels what it has as defaults), replication factors above 1 (one broker),
ACLs (CreateAcls gets no answer), a cluster without an authorizer, added
partitions (no CreatePartitions), a broker refusing a group's offsets, and a
correct ListOffsets by time (Tansu answers 0 whatever the time).
"""

import re

import pytest

from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    IntegrityError,
    SourceError,
)
from ansible_collections.caas.backup.plugins.module_utils.kafka.client import (
    Cluster,
    check_topic_name,
    client_config,
    compile_patterns,
    kafka_errors,
    selected,
    translate_error,
)
from ansible_collections.caas.backup.plugins.module_utils.kafka.metadata import (
    FORMAT,
    FORMAT_VERSION,
    TargetState,
    apply_plan,
    diff_configs,
    document_facts,
    group_diff,
    offset_for_time,
    partitions_after,
    plan_acls,
    plan_topics,
    resume_time,
    select_from_document,
    target_offset,
    time_answer_holds,
    topic_diff,
    topic_overrides,
    validate_document,
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
BASE = {"bootstrap_servers": ["kafka-1:9092"], "security_protocol": "PLAINTEXT"}


def entry(value, source="DEFAULT_CONFIG", sensitive=False):
    return {"value": value, "config_source": source, "is_sensitive": sensitive, "read_only": False}


# What Apache Kafka answers to DescribeConfigs(config_filter=all) for a topic with two overrides (shortened).
KAFKA_DESCRIBED = {
    "cleanup.policy": entry("delete"),
    "retention.ms": entry("86400000", "DYNAMIC_TOPIC_CONFIG"),
    "segment.bytes": entry("1073741824", "STATIC_BROKER_CONFIG"),
    "min.insync.replicas": entry("2", "DYNAMIC_TOPIC_CONFIG"),
    "max.message.bytes": entry("1048588", "DEFAULT_CONFIG"),
    "sasl.jaas.config": entry(None, "DYNAMIC_TOPIC_CONFIG", sensitive=True),
}
# What Tansu answers for a topic created with retention.ms set: that entry alone, labelled a default.
TANSU_DESCRIBED = {"retention.ms": entry("86400000")}


def document(**topics):
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "cluster": {"cluster_id": "prod", "brokers": 3},
        "topics": topics or {"orders": {"partitions": 3, "replication_factor": 3, "configs": {}}},
        "acls": None,
        "groups": {"billing": {"offsets": {"orders": {"0": {"offset": 5}, "1": {"offset": 7}}}}},
    }


# --- options ---


def test_client_config_plain():
    config = client_config(dict(BASE, request_timeout=10, connect_timeout=5))
    assert config["bootstrap_servers"] == ["kafka-1:9092"]
    assert config["request_timeout_ms"] == 10000 and config["bootstrap_timeout_ms"] == 5000
    assert "sasl_plain_password" not in config and "ssl_cafile" not in config


def test_client_config_sasl_scram_over_ssl():
    config = client_config(
        dict(
            BASE,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username="backup",
            sasl_plain_password="s3cret",
            ssl_cafile="/etc/ca.pem",
            ssl_check_hostname=False,
        )
    )
    assert config["sasl_mechanism"] == "SCRAM-SHA-512" and config["sasl_plain_password"] == "s3cret"
    assert config["ssl_cafile"] == "/etc/ca.pem" and config["ssl_check_hostname"] is False


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (dict(bootstrap_servers=[]), "bootstrap_servers is empty"),
        (dict(bootstrap_servers=["kafka-1"]), "is not host:port"),
        (dict(security_protocol="SASL_PLAINTEXT"), "needs sasl_mechanism"),
        (dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN"), "needs sasl_plain_username"),
        (dict(sasl_mechanism="PLAIN"), "needs security_protocol SASL_PLAINTEXT or SASL_SSL"),
    ],
)
def test_client_config_refuses_combinations_that_cannot_work(params, message):
    with pytest.raises(ConfigurationError, match=message):
        client_config(dict(BASE, **params))


@pytest.mark.parametrize("name", ["orders", "a.b_c-1", "x" * 249])
def test_valid_topic_names(name):
    assert check_topic_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "has space", "x" * 250, "ümlaut", "a/b"])
def test_invalid_topic_names(name):
    with pytest.raises(ConfigurationError, match="invalid topic name"):
        check_topic_name(name)


def test_patterns_match_whole_names_and_name_a_bad_one():
    include = compile_patterns(["orders.*"], "include_topics")
    exclude = compile_patterns([r".*\.dlq"], "exclude_topics")
    assert selected("orders-eu", include, exclude)
    assert not selected("orders.dlq", include, exclude)
    assert not selected("my-orders", include, exclude)
    assert selected("anything", [], [])
    with pytest.raises(ConfigurationError, match="exclude_topics: '\\(' is not a regular expression"):
        compile_patterns(["("], "exclude_topics")


def test_authentication_and_unreachable_errors_are_named():
    auth = translate_error(kafka_errors.SaslAuthenticationFailedError("bad password"), "connect to Kafka")
    assert isinstance(auth, SourceError) and "authentication failed" in str(auth)
    late = translate_error(kafka_errors.KafkaTimeoutError("bootstrap"), "connect to Kafka")
    assert "no broker answered in time" in str(late)
    denied = translate_error(kafka_errors.TopicAuthorizationFailedError(), "list Kafka topics")
    assert "not authorized" in str(denied)


# --- config overrides and diffing ---


def test_only_topic_overrides_are_exported_not_broker_defaults():
    overrides, complete, sensitive = topic_overrides(KAFKA_DESCRIBED)
    assert overrides == {"min.insync.replicas": "2", "retention.ms": "86400000"}
    assert complete
    assert sensitive == ["sasl.jaas.config"]


def test_tansu_describe_configs_answer_is_flagged_incomplete():
    """Tansu returns only the configs set at creation, labelled defaults: nothing is exported, and it is said."""
    overrides, complete, sensitive = topic_overrides(TANSU_DESCRIBED)
    assert (overrides, complete, sensitive) == ({}, False, [])
    assert topic_overrides({}) == ({}, False, [])


def test_diff_configs_corrects_and_adds_but_never_resets():
    backup = {"retention.ms": "1000", "cleanup.policy": "compact"}
    target = {"retention.ms": "5000", "segment.ms": "60000"}
    assert diff_configs(backup, target) == {
        "cleanup.policy": {"from": None, "to": "compact"},
        "retention.ms": {"from": "5000", "to": "1000"},
    }
    assert diff_configs(backup, dict(backup, extra="1")) == {}


# --- topic planning ---


def test_missing_topic_is_created_with_replication_capped_to_brokers():
    backup = {"orders": {"partitions": 6, "replication_factor": 3, "configs": {"retention.ms": "1000"}}}
    actions, drifted, notes = plan_topics(backup, TargetState(brokers=1, topics={}), alter_existing=False)
    assert actions == [
        {
            "topic": "orders",
            "action": "create",
            "partitions": 6,
            "replication_factor": 1,
            "configs": {"retention.ms": "1000"},
        }
    ]
    assert drifted == []
    assert any("replication factor 3 capped to 1" in n for n in notes)


def test_existing_topic_gets_partitions_added_never_removed():
    backup = {
        "orders": {"partitions": 6, "replication_factor": 1, "configs": {}},
        "audit": {"partitions": 2, "replication_factor": 1, "configs": {}},
    }
    target = TargetState(
        brokers=1,
        topics={
            "orders": {"partitions": 3, "replication_factor": 1},
            "audit": {"partitions": 4, "replication_factor": 1},
        },
    )
    actions, _drifted, notes = plan_topics(backup, target, alter_existing=False)
    assert actions == [{"topic": "orders", "action": "add_partitions", "from": 3, "to": 6}]
    assert any("audit has 4 partitions" in n and "cannot remove" in n for n in notes)


def test_drifted_configs_are_reported_and_altered_only_when_asked():
    backup = {"orders": {"partitions": 3, "replication_factor": 3, "configs": {"retention.ms": "1000"}}}
    target = TargetState(
        brokers=3,
        topics={"orders": {"partitions": 3, "replication_factor": 3}},
        configs={"orders": {"retention.ms": "5000"}},
    )
    actions, drifted, notes = plan_topics(backup, target, alter_existing=False)
    assert actions == [] and drifted == ["orders"]
    assert any("set alter_existing" in n for n in notes)
    actions, drifted, _notes = plan_topics(backup, target, alter_existing=True)
    assert actions == [
        {"topic": "orders", "action": "alter_configs", "changes": {"retention.ms": {"from": "5000", "to": "1000"}}}
    ]
    in_sync = TargetState(3, target.topics, {"orders": {"retention.ms": "1000"}})
    assert plan_topics(backup, in_sync, alter_existing=True)[:2] == ([], [])


def test_unknown_target_configs_are_said_and_set_only_when_asked():
    """A target like Tansu that reports no configs: drift cannot be compared."""
    backup = {"orders": {"partitions": 1, "replication_factor": 1, "configs": {"retention.ms": "1000"}}}
    target = TargetState(brokers=1, topics={"orders": {"partitions": 1, "replication_factor": 1}})
    actions, drifted, notes = plan_topics(backup, target, alter_existing=False)
    assert actions == [] and drifted == [] and any("drift cannot be compared" in n for n in notes)
    actions, _drifted, _notes = plan_topics(backup, target, alter_existing=True)
    assert actions[0]["action"] == "alter_configs"


def test_replication_factor_difference_is_reported_not_changed():
    backup = {"orders": {"partitions": 1, "replication_factor": 3, "configs": {}}}
    target = TargetState(brokers=3, topics={"orders": {"partitions": 1, "replication_factor": 1}})
    actions, _drifted, notes = plan_topics(backup, target, alter_existing=True)
    assert actions == [] and any("needs a reassignment" in n for n in notes)


def test_acls_missing_on_the_target_are_created():
    acl = ACL
    other = dict(acl, operation="WRITE")
    assert plan_acls([acl, other], [acl]) == ([other], [])
    assert plan_acls([acl], [acl, other]) == ([], [])
    assert plan_acls([], None) == ([], [])
    created, notes = plan_acls([acl], None)
    assert created == [] and "no authorizer" in notes[0]


def test_partition_counts_after_the_topic_actions():
    target = TargetState(brokers=1, topics={"orders": {"partitions": 3, "replication_factor": 1}})
    actions = [
        {"topic": "orders", "action": "add_partitions", "from": 3, "to": 6},
        {"topic": "new", "action": "create", "partitions": 2, "replication_factor": 1, "configs": {}},
    ]
    assert partitions_after(target, actions) == ({"orders": 3}, {"orders": 6, "new": 2})


def test_diffs_show_before_and_after_topic_by_topic():
    target = TargetState(1, {"orders": {"partitions": 3, "replication_factor": 1}}, {"orders": {"retention.ms": "5"}})
    grow = topic_diff({"topic": "orders", "action": "add_partitions", "from": 3, "to": 6}, target)
    assert grow["before"]["partitions"] == 3 and grow["after"]["partitions"] == 6
    alter = topic_diff({"topic": "orders", "action": "alter_configs", "changes": {"retention.ms": {"to": "9"}}}, target)
    assert alter["before"]["configs"] == {"retention.ms": "5"} and alter["after"]["configs"] == {"retention.ms": "9"}
    new = topic_diff(
        {"topic": "x", "action": "create", "partitions": 1, "replication_factor": 1, "configs": {}}, target
    )
    assert new["before"] == {} and new["after_header"] == "topic x"
    moved = group_diff("billing", {("orders", 0): 10}, {("orders", 0): 4, ("orders", 1): 2})
    assert moved["before"] == {"orders-0": 10, "orders-1": None} and moved["after"] == {"orders-0": 4, "orders-1": 2}


# --- offsets ---


@pytest.mark.parametrize(
    ("mode", "committed", "start", "end", "by_time", "expected", "note"),
    [
        ("committed", 40, 10, 100, None, 40, ""),
        ("committed", 5, 10, 100, None, 10, "below the target's log start 10"),
        ("committed", 150, 10, 100, None, 100, "beyond the target's log end 100"),
        ("committed", 7, 0, 0, None, 0, "beyond the target's log end 0"),
        ("earliest", 40, 10, 100, None, 10, ""),
        ("latest", 40, 10, 100, None, 100, ""),
        ("timestamp", 40, 10, 100, 63, 63, ""),
        ("timestamp", 40, 10, 100, None, 100, "no record at or after"),
        ("timestamp", 40, 10, 100, 5, 10, ""),
    ],
)
def test_target_offset(mode, committed, start, end, by_time, expected, note):
    offset, why = target_offset(mode, committed, start, end, by_time)
    assert offset == expected
    assert note in why if note else why == ""


def test_target_offset_refuses_an_unknown_mode():
    with pytest.raises(ConfigurationError, match="unknown offsets mode"):
        target_offset("newest", 1, 0, 2)


def records(timestamps: dict[int, int]):
    """A reader over a log with (possibly compacted-away) offsets: offset -> timestamp."""
    reads = []

    def read(offset):
        reads.append(offset)
        after = [o for o in sorted(timestamps) if o >= offset]
        return (after[0], timestamps[after[0]]) if after else None

    read.reads = reads
    return read


def test_offset_for_time_finds_the_first_record_at_or_after_a_time():
    log = records({o: 1000 + 10 * o for o in range(100)})
    assert offset_for_time(log, 0, 100, 1000 + 10 * 37) == 37
    assert offset_for_time(log, 0, 100, 1000 + 10 * 37 - 3) == 37
    assert offset_for_time(log, 0, 100, 0) == 0
    assert offset_for_time(log, 0, 100, 10**12) is None
    assert len(log.reads) < 40  # a search, not a scan


def test_offset_for_time_over_a_compacted_log_with_gaps():
    log = records({2: 100, 3: 110, 9: 120, 20: 130, 21: 140})
    assert offset_for_time(log, 2, 22, 115) == 9
    assert offset_for_time(log, 2, 22, 121) == 20
    assert offset_for_time(log, 2, 22, 141) is None


def test_a_listoffsets_by_time_answer_is_checked_against_the_records():
    """Tansu answers offset 0 for any time: the records around the answer show it wrong."""
    log = records({o: 1000 + o for o in range(10)})
    assert time_answer_holds(log, 5, 0, 1005)
    assert not time_answer_holds(log, 0, 0, 1005)  # Tansu's answer
    assert not time_answer_holds(log, 7, 0, 1005)  # too late: the record before is also at or after
    assert time_answer_holds(log, 0, 0, 900)


# --- the document ---


def test_document_facts_count_topics_partitions_groups():
    facts = document_facts(document())
    assert facts == {
        "format_version": FORMAT_VERSION,
        "cluster_id": "prod",
        "topics": 1,
        "partitions": 3,
        "groups": 1,
        "acls": None,
    }


def test_valid_document_passes():
    doc = document()
    assert validate_document(doc) is doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(format_version=2), "format_version 2 is unknown"),
        (dict(format_version=None), "format_version None is unknown"),
        (dict(format="other"), "not a caas.backup/kafka-meta document"),
        (dict(topics=[]), "has no topics object"),
        (dict(acls="all"), "acls is not a list"),
        (dict(topics={"bad name": {"partitions": 1}}), "invalid topic name 'bad name'"),
        (dict(topics={"orders": {"partitions": 0}}), "no valid partition count"),
    ],
)
def test_invalid_documents_are_refused(change, message):
    with pytest.raises(IntegrityError, match=re.escape(message)):
        validate_document(dict(document(), **change))


def test_selecting_topics_keeps_only_their_group_offsets():
    doc = document(
        orders={"partitions": 2, "replication_factor": 1, "configs": {}},
        audit={"partitions": 1, "replication_factor": 1, "configs": {}},
    )
    doc["groups"]["auditor"] = {"offsets": {"audit": {"0": {"offset": 1}}}}
    topics, groups = select_from_document(doc, ["orders"], [])
    assert list(topics) == ["orders"] and list(groups) == ["billing"]
    topics, groups = select_from_document(doc, [], ["auditor"])
    assert sorted(topics) == ["audit", "orders"] and list(groups) == ["auditor"]


@pytest.mark.parametrize(
    ("topics", "groups", "message"),
    [
        (["bad name"], [], "invalid topic name 'bad name'"),
        (["missing"], [], "topic(s) missing are not in the backup"),
        ([], ["nobody"], "consumer group(s) nobody are not in the backup"),
    ],
)
def test_selecting_what_is_not_in_the_backup_is_an_error(topics, groups, message):
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        select_from_document(document(), topics, groups)


# --- the executor and the admin-client wrapper, on a recording fake admin client: the paths Tansu cannot show
# for real (config changes, added partitions, ACLs, no authorizer, a broker refusing a group's offsets) ---


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
