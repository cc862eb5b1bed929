"""Every example audience gives a non-empty audience of sensible size on synthetic data."""

from __future__ import annotations

from datetime import date

import pytest

from cja_audiences.compute import evaluate_audience
from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake
from cja_audiences.settings import PROJECT_ROOT, Settings
from cja_audiences.specs.model import load_specs

END = date(2026, 11, 20)
SPECS, ERRORS = load_specs(PROJECT_ROOT / "include" / "audiences")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("demo")
    generate_synthetic(Lake(home), persons=4000, days=90, end=END, seed=5)
    return Settings(
        home=home,
        audiences_dir=PROJECT_ROOT / "include" / "audiences",
        filters_dir=PROJECT_ROOT / "include" / "filters",
    )


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_example_is_non_empty_and_sensible(spec, settings: Settings) -> None:
    stats = evaluate_audience(spec, settings=settings, as_of=END).stats
    persons = stats["preview_metrics"]["persons_in_window"]
    assert 0 < stats["size"] <= 0.5 * persons, (spec.id, stats["size"], persons)


def test_examples_have_no_errors() -> None:
    assert ERRORS == [] and len(SPECS) >= 6
