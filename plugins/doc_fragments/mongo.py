# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    """Connection options of the modules that talk to MongoDB."""

    DOCUMENTATION = r"""
options:
  uri:
    description:
      - MongoDB connection string (V(mongodb://...)). When set, O(login_host) and O(login_port) are ignored;
        O(login_user), O(login_password) and the TLS options still apply. Never logged.
      - "Which server, in this order: O(uri); else O(login_host)/O(login_port) when either is given; else
        E(CAAS_MONGO_URI) from the environment; else V(localhost:27017). An explicit option always wins over
        the environment, and no generic variable such as E(MONGO_URI) is read."
    type: str
  login_host:
    description:
      - Host of the MongoDB server (or a replica set member) when O(uri) is not set. V(localhost) when
        neither this, O(login_port), O(uri) nor E(CAAS_MONGO_URI) is set.
    type: str
  login_port:
    description:
      - Port of the MongoDB server (1-65535) when O(uri) is not set. V(27017) when unset.
    type: int
  login_user:
    description:
      - User to authenticate as (SCRAM).
    type: str
  login_password:
    description:
      - Password of O(login_user). Passed to the driver only, never on a command line; never logged.
      - Falls back to E(CAAS_MONGO_PASSWORD) or E(MONGO_PASSWORD).
    type: str
  login_database:
    description:
      - Database O(login_user) is defined in (authentication source).
    type: str
    default: admin
  replica_set:
    description:
      - Replica set name to require.
    type: str
  direct_connection:
    description:
      - Talk to the given host only, without discovering the replica set.
    type: bool
  tls:
    description:
      - Connect with TLS.
    type: bool
    default: false
  tls_ca_file:
    description:
      - CA certificates to verify the server's certificate with; implies O(tls).
    type: path
  tls_certificate_key_file:
    description:
      - Client certificate and key (PEM) for X.509 or mutual TLS; implies O(tls).
    type: path
  tls_allow_invalid_certificates:
    description:
      - Accept a server certificate that does not verify. Only for tests.
    type: bool
    default: false
  tls_allow_invalid_hostnames:
    description:
      - Accept a server certificate for another host name.
    type: bool
    default: false
  connect_timeout:
    description:
      - Seconds to wait for the server before failing (1-3600).
    type: int
    default: 10
requirements:
  - pymongo
  - anycrc
"""
