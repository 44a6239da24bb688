"""The safety poll's manifest cache never hides a change: content, owner or mode (issue 16).

Parsing every manifest every few seconds was most of an idle watcher's CPU,
so ``survey`` reuses what it parsed of a file whose stat is unchanged. These
tests change real manifests the ways a user or a rogue process would.
"""

from __future__ import annotations

import os
from dataclasses import replace

from fleet import Fleet

from expwatch.manifest import ManifestCache, save_manifest, survey


def test_a_cached_manifest_is_read_again_when_it_changes_or_stops_being_trusted(tmp_path):
    fleet = Fleet(tmp_path / "exp")
    try:
        fleet.adopt_sleepers(["a", "b"])
        layout, cache = fleet.layout, ManifestCache()
        first, broken = survey(layout, cache=cache)
        assert [m.name for m in first] == ["a", "b"] and broken == []
        again, _ = survey(layout, cache=cache)
        assert [id(m) for m in again] == [id(m) for m in first]  # unchanged files: not parsed again

        save_manifest(layout, replace(again[0], expected=7))
        changed, _ = survey(layout, cache=cache)
        assert changed[0].expected == 7 and changed[1] is first[1]

        path = layout.manifest_path("b")
        mode = os.stat(path).st_mode
        os.chmod(path, mode | 0o002)
        usable, broken = survey(layout, cache=cache)
        assert [m.name for m in usable] == ["a"] and broken[0].name == "b" and broken[0].untrusted
        os.chmod(path, mode)
        assert [m.name for m in survey(layout, cache=cache)[0]] == ["a", "b"]

        os.unlink(path)
        assert [m.name for m in survey(layout, cache=cache)[0]] == ["a"]
    finally:
        fleet.cleanup()
