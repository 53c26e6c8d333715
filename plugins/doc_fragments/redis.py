# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment:
    """How redis_snapshot and redis_restore reach Redis."""

    DOCUMENTATION = r"""
options:
  url:
    description:
      - V(redis://host:port) or V(rediss://host:port) (TLS); a user name may be given as V(redis://user@host:port).
      - Must not hold a password; use O(login_password). A password put there anyway is refused, and masked
        wherever Ansible prints the options. Overrides O(login_host) and O(login_port).
    type: str
  login_host:
    description:
      - Host of the Redis server.
    type: str
    default: 127.0.0.1
  login_port:
    description:
      - Port of the Redis server (1-65535).
    type: int
    default: 6379
  login_user:
    description:
      - ACL user name (Redis 6+). The V(default) user when omitted.
    type: str
  login_password:
    description:
      - Password (C(requirepass) or the ACL user's). Sent with C(AUTH) on the connection, never on a command
        line, never logged or returned.
      - Falls back to E(REDIS_PASSWORD) or E(CAAS_REDIS_PASSWORD).
    type: str
  tls:
    description:
      - Connect with TLS (also turned on by a V(rediss://) O(url)).
    type: bool
    default: false
  tls_ca_cert:
    description:
      - CA bundle to verify the server's certificate with.
    type: path
  tls_cert:
    description:
      - Client certificate, for servers with C(tls-auth-clients yes).
    type: path
  tls_key:
    description:
      - Key of O(tls_cert).
    type: path
  tls_verify:
    description:
      - Verify the server's certificate and host name.
    type: bool
    default: true
  connect_timeout:
    description:
      - Seconds to wait for a connection (0.1-3600).
    type: float
    default: 10.0
  timeout:
    description:
      - Seconds any one step may take (a save, a transfer's silence, loading, an AOF rewrite), 1-86400.
    type: int
    default: 600
requirements:
  - redis (the redis-py library)
  - anycrc
"""
