"""The auth_classes rules (domain/access.py): tag forms, grants, elevation, bad policies."""

from __future__ import annotations

import pytest

from tamstore.domain.access import EVERYTHING, Policy, check_classes_value, classes_of, groups_from_claim
from tamstore.domain.errors import BadRequest, Forbidden

POLICY = Policy.from_toml(
    {
        "untagged": "closed",
        "grants": [
            {"group": "news", "classes": ["news"], "actions": ["read", "write", "delete"]},
            {"group": "sport", "classes": ["sport_ro"], "actions": ["read"]},
        ],
    }
)


def test_the_tag_is_a_list_or_a_comma_separated_string() -> None:
    assert classes_of({"auth_classes": ["news", "sport_ro"]}) == {"news", "sport_ro"}
    assert classes_of({"auth_classes": " news , sport_ro,"}) == {"news", "sport_ro"}
    assert classes_of({"other": "x"}) == frozenset() == classes_of(None)
    assert classes_of({"auth_classes": 5}) == frozenset()  # stored badly: names no class
    with pytest.raises(BadRequest, match="auth_classes"):
        check_classes_value({"a": 1})
    with pytest.raises(BadRequest, match="auth_classes"):
        check_classes_value([f"c{i}" for i in range(100)])


def test_any_class_of_the_resource_grants_the_action() -> None:
    sport = POLICY.access_for(["sport"], admin=False)
    both = frozenset({"news", "sport_ro"})
    assert sport.allows("read", both) and not sport.allows("write", both)
    assert not sport.allows("read", frozenset({"news"}))
    assert not sport.allows("read", frozenset())  # untagged is closed here
    assert POLICY.access_for([], admin=True) is EVERYTHING
    assert Policy.none().access_for(["anyone"], admin=False) is EVERYTHING


def test_classes_change_only_by_someone_who_may_write_each_one() -> None:
    news = POLICY.access_for(["news"], admin=False)
    news.check_change(frozenset({"news"}), frozenset({"news"}))
    with pytest.raises(Forbidden, match="sport_ro"):
        news.check_change(frozenset({"news"}), frozenset({"news", "sport_ro"}))
    with pytest.raises(Forbidden, match="admins only"):
        news.check_change(frozenset({"news"}), frozenset())
    with pytest.raises(Forbidden, match="admins only"):  # created untagged, where that is closed
        news.check_change(frozenset(), frozenset())
    EVERYTHING.check_change(frozenset({"a"}), frozenset({"b"}))


@pytest.mark.parametrize(
    "section",
    [
        {"untagged": "maybe"},
        {"grants": [{"classes": ["x"]}]},
        {"grants": [{"group": "g", "classes": "x"}]},
        {"grants": [{"group": "g", "classes": ["x"], "actions": ["admin"]}]},
        {"groups_claim": ""},
    ],
)
def test_bad_policies_are_refused_at_start(section: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="policy"):
        Policy.from_toml(section)


def test_groups_from_tokens() -> None:
    assert groups_from_claim("a b,c") == {"a", "b", "c"}
    assert groups_from_claim(["a", 1]) == {"a"}
    assert groups_from_claim(None) == frozenset()
