"""Redis ACL rules that confine a member site's broker user to its own queue and the reply path.

With these rules a site's worker can take tasks only from ``site.<slug>``, keep its own
bookkeeping of unacknowledged tasks (``run_site_worker`` sets ``SITE_WORKER_INSTITUTION``, so
kombu's keys carry the slug), read the coordinator's binding and push answers onto the
``coordinator`` list, which it can neither read nor take from. It cannot list keys, touch another
site's queue, read the global unacknowledged-task table, publish or subscribe. Signatures remain
the guarantee: these rules only narrow what a leaked broker password gives away.
"""

import hashlib

# What kombu's Redis transport and Celery's worker send, and nothing more (Redis 7).
COMMANDS = [
    "auth", "hello", "ping", "select", "client|setname",
    "multi", "exec", "watch", "unwatch", "discard",
    "brpop", "lpush", "llen",
    "sadd", "smembers",
    "hset", "hget", "hdel",
    "zadd", "zrem", "zrange", "zrevrangebyscore",
    "set", "get", "del", "pexpire",
    # redis-py's lock (kombu's mutex around restoring unacknowledged tasks) runs Lua scripts
    # that GET and DEL the lock's own key.
    "evalsha", "script|load",
]  # fmt: skip


def site_user(slug: str) -> str:
    return f"site-{slug}"


def site_keys(slug: str) -> list[str]:
    """The key patterns of a site's user: its own keys read-write, the reply path narrower."""
    return [
        f"~site.{slug}",
        f"~_kombu.binding.site.{slug}",
        f"~_kombu.binding_permanent.site.{slug}",
        f"~unacked.site.{slug}",
        f"~unacked_index.site.{slug}",
        f"~unacked_mutex.site.{slug}",
        "%R~_kombu.binding.coordinator",
        "%W~coordinator",
    ]


def site_rules(slug: str, password: str) -> list[str]:
    """The ``ACL SETUSER`` rules of a site's user (the password stored as its SHA-256)."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return [
        "reset",
        "on",
        f"#{digest}",
        "resetchannels",
        "-@all",
        *(f"+{c}" for c in COMMANDS),
        *site_keys(slug),
    ]


def acl_file_line(slug: str, password: str) -> str:
    """The line for a Redis ``aclfile``."""
    return " ".join(["user", site_user(slug), *site_rules(slug, password)[1:]])
