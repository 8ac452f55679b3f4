"""Peers for tests, reusable by anyone testing collaboration (as gpiozero ships its mock
pins): replicas of one document, updates exchanged until they settle, and two concurrent
edits merged every way they can arrive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from companion.model.document import Project

ORDERS = ("a_first", "b_first", "at_once")


def sync(*peers: Project) -> None:
    """Exchange updates until every peer has seen everything (repairs included)."""
    for _ in range(20):
        changed = False
        for a in peers:
            for b in peers:
                if a is not b:
                    before = b.get_state()
                    b.apply_update(a.get_update(before))
                    changed |= b.get_state() != before
        if not changed:
            return
    raise AssertionError("peers do not settle")


def replica(base: bytes, user: str, *updates: bytes) -> Project:
    """A peer of ``user`` holding ``base`` and then ``updates``."""
    p = Project(user)
    p.apply_update(base)
    for u in updates:
        p.apply_update(u)
    return p


def merged_three_ways(setup: Callable[[Project], Any],
                      edit_a: Callable[[Project, Any], None],
                      edit_b: Callable[[Project, Any], None]
                      ) -> dict[str, tuple[Project, Project]]:
    """``edit_a`` (by alice) and ``edit_b`` (by bob) made concurrently on a base made by
    ``setup`` (its result is passed to both), then merged three ways: A hears B first, B
    hears A first, both hear each other at once (so both repair before they hear the other's
    repair). Returns both peers, settled, for each way."""
    origin = Project.create("setup")
    ctx = setup(origin)
    base = origin.get_update()
    a, b = replica(base, "alice"), replica(base, "bob")
    sv = a.get_state()
    edit_a(a, ctx)
    edit_b(b, ctx)
    ua, ub = a.get_update(sv), b.get_update(sv)
    ways = {}
    for order in ORDERS:
        ra, rb = replica(base, "alice", ua), replica(base, "bob", ub)
        if order == "a_first":
            ra.apply_update(ub)
            sync(ra, rb)
        elif order == "b_first":
            rb.apply_update(ua)
            sync(rb, ra)
        else:
            sa, sb = ra.get_state(), rb.get_state()
            ua2, ub2 = ra.get_update(sb), rb.get_update(sa)
            ra.apply_update(ub2)
            rb.apply_update(ua2)
            sync(ra, rb)
        ways[order] = (ra, rb)
    return ways
