"""`server.tune_gc`: startup objects frozen, the young generation collected less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from router.server import tune_gc
from router.settings import RouterSettings


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_freezes_startup_objects_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    survivor = [object()]  # alive at "startup": must end up frozen, never scanned again
    assert tune_gc(RouterSettings(gc_gen0_threshold=50_000)) == (50_000, 10, 10)
    assert gc.get_freeze_count() > 0
    assert survivor


def test_zero_keeps_pythons_thresholds_but_still_freezes() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    assert tune_gc(RouterSettings(gc_gen0_threshold=0)) == (700, 10, 10)
    assert gc.get_freeze_count() > 0


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTER_GC_GEN0_THRESHOLD", "1234")
    assert RouterSettings().gc_gen0_threshold == 1234
    assert RouterSettings.model_fields["gc_gen0_threshold"].default == 50_000
