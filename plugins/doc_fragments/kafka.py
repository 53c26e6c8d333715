# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    """How the Kafka modules connect to a cluster (kafka-python's admin client options); SELECTION: what they read."""

    DOCUMENTATION = r"""
options:
  bootstrap_servers:
    description:
      - Brokers to bootstrap from, as C(host:port) (port 1-65535).
      - Falls back to E(CAAS_KAFKA_BOOTSTRAP_SERVERS) when not given (never to the generic
        E(KAFKA_BOOTSTRAP_SERVERS) applications use, which could point a restore at another cluster).
    type: list
    elements: str
    required: true
  security_protocol:
    description:
      - How to talk to the brokers.
    type: str
    default: PLAINTEXT
    choices: [PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL]
  sasl_mechanism:
    description:
      - SASL mechanism, for O(security_protocol=SASL_PLAINTEXT) or O(security_protocol=SASL_SSL).
    type: str
    choices: [PLAIN, SCRAM-SHA-256, SCRAM-SHA-512]
  sasl_plain_username:
    description:
      - SASL user name (for PLAIN and SCRAM).
      - Falls back to E(KAFKA_SASL_USERNAME).
    type: str
  sasl_plain_password:
    description:
      - SASL password (for PLAIN and SCRAM). Never logged or returned.
      - Falls back to E(KAFKA_SASL_PASSWORD).
    type: str
  ssl_cafile:
    description:
      - CA bundle to verify the brokers' certificates with.
    type: path
  ssl_certfile:
    description:
      - Client certificate (PEM) for mutual TLS.
    type: path
  ssl_keyfile:
    description:
      - Private key (PEM) of O(ssl_certfile).
    type: path
  ssl_password:
    description:
      - Password of O(ssl_keyfile). Never logged or returned.
      - Falls back to E(KAFKA_SSL_PASSWORD).
    type: str
  ssl_check_hostname:
    description:
      - Check that the brokers' certificates match their host names.
    type: bool
    default: true
  connect_timeout:
    description:
      - Seconds to wait for the first broker to answer (1-3600); an unreachable cluster fails after this.
    type: int
    default: 15
  request_timeout:
    description:
      - Seconds to wait for one admin request (1-3600).
    type: int
    default: 30
requirements:
  - kafka-python >= 3.0
"""

    SELECTION = r"""
options:
  include_topics:
    description:
      - Regular expressions (matching the whole name) of topics to read; all topics when empty. Internal topics
        (C(__consumer_offsets), C(__transaction_state)) are never read.
    type: list
    elements: str
    default: []
  exclude_topics:
    description:
      - Regular expressions (matching the whole name) of topics to leave out.
    type: list
    elements: str
    default: []
  include_groups:
    description:
      - Regular expressions (matching the whole id) of consumer groups whose committed offsets are recorded; all
        groups when empty.
      - Only offsets on the selected topics are kept; a group with none is left out.
    type: list
    elements: str
    default: []
  exclude_groups:
    description:
      - Regular expressions (matching the whole id) of consumer groups to leave out.
    type: list
    elements: str
    default: []
"""
