"""Fine-grained authorisation by ``auth_classes`` (AppNote 0016 "Implementation using Tags",
ADR 0035, ADR 0055), enforced inside tamstore rather than by a proxy.

A Source, Flow, webhook or storage backend may carry an ``auth_classes`` tag: a list of class
names (an array of strings, or one comma-separated string as AppNote 0003 describes). A
*policy* grants each group of principals some actions (read, write, delete) on some classes;
a principal may act on a resource when *any* of the resource's classes grants it that action.
Content without the tag follows the policy's ``untagged`` rule: open (today's coarse scopes
alone decide) or closed (admins only). The ``tams-api/admin`` scope sees and may do everything,
as does every caller when authentication is off or no policy is configured.

Changing the tag needs, besides write access to the resource as it is, write access to every
class added or removed (AppNote 0016 step 5): nobody grants a class they do not hold, nor
takes one away.

Plain Python: the API layer builds an :class:`Access` per request; the stores turn it into SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tamstore.domain.errors import BadRequest, Forbidden

__all__ = [
    "ACTIONS",
    "AUTH_CLASSES_TAG",
    "DELETE",
    "READ",
    "WRITE",
    "EVERYTHING",
    "Access",
    "Policy",
    "auth_key",
    "check_classes_value",
    "key_classes",
    "classes_of",
    "groups_from_claim",
]

AUTH_CLASSES_TAG = "auth_classes"
READ, WRITE, DELETE = "read", "write", "delete"
ACTIONS = (READ, WRITE, DELETE)
MAX_CLASSES = 64  # classes on one resource
MAX_CLASS_LENGTH = 128


def classes_of(tags: Any) -> frozenset[str]:
    """The auth classes a resource's tags name (empty: untagged). Tolerant: tags that are not
    a mapping, or a value that is neither a string nor a list of strings, name no class."""
    if not isinstance(tags, Mapping) or AUTH_CLASSES_TAG not in tags:
        return frozenset()
    return _parse(tags[AUTH_CLASSES_TAG])


KEY_SEPARATOR = "\x1f"  # U+001F, the unit separator: in no class name anyone types


def auth_key(classes: frozenset[str]) -> str | None:
    """One string for a set of classes (the stores filter listings on it); None: untagged."""
    return KEY_SEPARATOR.join(sorted(classes)) if classes else None


def key_classes(key: str | None) -> frozenset[str]:
    """The classes of an ``auth_key`` (a stored row's): the inverse of :func:`auth_key`."""
    return frozenset(key.split(KEY_SEPARATOR)) if key else frozenset()


def _parse(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        items: Iterable[Any] = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        return frozenset()
    return frozenset(s.strip() for s in items if isinstance(s, str) and s.strip())


def check_classes_value(value: Any) -> frozenset[str]:
    """A new ``auth_classes`` value, refused (400 naming the tag) when it cannot be one."""
    ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if not ok:
        raise BadRequest(f"tag {AUTH_CLASSES_TAG}: must be a string or a list of strings")
    classes = _parse(value)
    if len(classes) > MAX_CLASSES or any(len(c) > MAX_CLASS_LENGTH for c in classes):
        raise BadRequest(f"tag {AUTH_CLASSES_TAG}: at most {MAX_CLASSES} classes of {MAX_CLASS_LENGTH} characters")
    return classes


def groups_from_claim(value: Any) -> frozenset[str]:
    """Groups from a token claim: a list of strings, or one string of names separated by
    spaces or commas (identity providers do both)."""
    if isinstance(value, str):
        return frozenset(g for g in value.replace(",", " ").split() if g)
    if isinstance(value, list):
        return frozenset(g for g in value if isinstance(g, str) and g)
    return frozenset()


@dataclass(frozen=True)
class Access:
    """What one principal may do with content carrying ``auth_classes``."""

    everything: bool = False
    read: frozenset[str] = frozenset()
    write: frozenset[str] = frozenset()
    delete: frozenset[str] = frozenset()
    untagged_open: bool = True

    def classes(self, action: str) -> frozenset[str]:
        """The classes that grant ``action``."""
        return {READ: self.read, WRITE: self.write, DELETE: self.delete}[action]

    def allows(self, action: str, classes: frozenset[str]) -> bool:
        if self.everything:
            return True
        if not classes:
            return self.untagged_open
        return not classes.isdisjoint(self.classes(action))

    def check_change(self, old: frozenset[str], new: frozenset[str]) -> None:
        """Refuse (403) a change of a resource's classes that adds or removes a class this
        principal may not write: the tag cannot be used to grant or withdraw others' access.
        Where untagged content is closed, a non-admin may not leave a resource untagged (nor
        create one so: nobody but admins would see it)."""
        if self.everything:
            return
        if not new and not self.untagged_open:  # (made untagged, or created so)
            raise Forbidden(f"without {AUTH_CLASSES_TAG} the resource would be for admins only")
        foreign = sorted((old ^ new) - self.write)
        if foreign:
            raise Forbidden(f"changing {AUTH_CLASSES_TAG} needs write access to the class(es) {', '.join(foreign)}")


EVERYTHING = Access(everything=True)


@dataclass(frozen=True)
class Policy:
    """Groups to classes and actions, from the auth file's ``[policy]`` section::

    [policy]
    untagged = "open"          # or "closed": untagged content is for admins only
    groups_claim = "groups"    # where an identity provider's tokens carry the groups

    [[policy.grants]]
    group = "sport"
    classes = ["sport"]
    actions = ["read", "write", "delete"]

    [[policy.grants]]
    group = "sport"
    classes = ["sport_ro"]
    actions = ["read"]
    """

    grants: tuple[tuple[str, frozenset[str], frozenset[str]], ...] = ()
    untagged_open: bool = True
    groups_claim: str = "groups"
    enabled: bool = True
    _by_group: dict[str, dict[str, set[str]]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def none(cls) -> Policy:
        """No policy: ``auth_classes`` tags are ordinary tags; scopes alone decide."""
        return cls(enabled=False)

    @classmethod
    def from_toml(cls, section: Mapping[str, Any] | None) -> Policy:
        if section is None:
            return cls.none()
        untagged = section.get("untagged", "open")
        if untagged not in ("open", "closed"):
            raise ValueError('policy.untagged must be "open" or "closed"')
        claim = section.get("groups_claim", "groups")
        if not isinstance(claim, str) or not claim:
            raise ValueError("policy.groups_claim must be a claim name")
        grants = []
        for n, grant in enumerate(section.get("grants", [])):
            group, classes, actions = grant.get("group"), grant.get("classes"), grant.get("actions", list(ACTIONS))
            if not isinstance(group, str) or not group:
                raise ValueError(f"policy.grants[{n}]: group must be a name")
            if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
                raise ValueError(f"policy.grants[{n}]: classes must be a list of names")
            if not isinstance(actions, list) or not set(actions) <= set(ACTIONS):
                raise ValueError(f"policy.grants[{n}]: actions must be a list of read, write, delete")
            grants.append((group, frozenset(classes), frozenset(actions)))
        policy = cls(tuple(grants), untagged == "open", claim)
        for group, classes, actions in policy.grants:
            for action in actions:
                policy._by_group.setdefault(group, {}).setdefault(action, set()).update(classes)
        return policy

    def access_for(self, groups: Iterable[str], admin: bool) -> Access:
        """The Access of a principal in ``groups`` (everything for admins, or without a policy)."""
        if admin or not self.enabled:
            return EVERYTHING
        granted: dict[str, set[str]] = {a: set() for a in ACTIONS}
        for group in groups:
            for action, classes in self._by_group.get(group, {}).items():
                granted[action] |= classes
        return Access(
            False,
            frozenset(granted[READ]),
            frozenset(granted[WRITE]),
            frozenset(granted[DELETE]),
            self.untagged_open,
        )

    def describe(self) -> dict[str, Any]:
        """The policy as documents show it (``GET /service``, ``tamstore config show``)."""
        if not self.enabled:
            return {"enabled": False}
        return {
            "enabled": True,
            "tag": AUTH_CLASSES_TAG,
            "untagged": "open" if self.untagged_open else "closed",
            "groups_claim": self.groups_claim,
            "grants": [
                {"group": g, "classes": sorted(c), "actions": [a for a in ACTIONS if a in acts]}
                for g, c, acts in self.grants
            ],
        }
