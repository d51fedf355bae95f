"""mnistpack.calibrate: the temperature it fits and the threshold it picks do what they promise."""

from __future__ import annotations

import numpy as np
import pytest
from mnistpack.calibrate import (
    Calibration,
    calibrate,
    choose_threshold,
    fit_temperature,
    logits_of,
    operating,
    tempered,
)


def overconfident(count: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs of a network `temperature` times too sure of itself, and the true labels."""
    rng = np.random.default_rng(seed)
    honest = rng.normal(0.0, 2.0, (count, 10))
    labels = np.array([rng.choice(10, p=p) for p in tempered(honest, 1.0)])
    return tempered(honest * temperature, 1.0), labels


def test_fit_recovers_the_temperature_that_made_the_data() -> None:
    probabilities, labels = overconfident(20_000, temperature=2.5)
    assert fit_temperature(logits_of(probabilities), labels) == pytest.approx(2.5, rel=0.05)


def test_tempering_never_changes_the_answer() -> None:
    probabilities, _ = overconfident(500, temperature=3.0, seed=1)
    logits = logits_of(probabilities)
    for t in (0.3, 1.0, 4.0):
        assert np.array_equal(tempered(logits, t).argmax(axis=1), probabilities.argmax(axis=1))
    assert np.allclose(tempered(logits, 1.0), probabilities)


def test_threshold_keeps_sure_answers_right_within_the_budget() -> None:
    probabilities, labels = overconfident(5_000, temperature=1.0, seed=2)
    point = choose_threshold(probabilities, labels, max_wrong_among_sure=0.2, max_not_sure=0.9)
    assert point.wrong_among_sure <= 0.2 and point.not_sure <= 0.9
    lower = operating(probabilities, labels, point.threshold - 0.001)
    assert lower.wrong_among_sure > 0.2, "a lower threshold would have done"


def test_the_not_sure_budget_wins_when_both_cannot_be_met() -> None:
    probabilities, labels = overconfident(5_000, temperature=1.0, seed=3)
    point = choose_threshold(probabilities, labels, max_wrong_among_sure=0.001, max_not_sure=0.1)
    assert point.not_sure <= 0.1 and point.wrong_among_sure > 0.001


def test_calibrate_returns_a_valid_calibration() -> None:
    probabilities, labels = overconfident(5_000, temperature=2.0, seed=4)
    calibration, point = calibrate(probabilities, labels, max_wrong_among_sure=0.3, max_not_sure=0.5)
    assert calibration.temperature == pytest.approx(2.0, rel=0.15)
    assert calibration.sure_threshold == point.threshold
    assert calibration.as_meta() == {
        "temperature": calibration.temperature,
        "sure_threshold": calibration.sure_threshold,
    }


@pytest.mark.parametrize(
    ("temperature", "threshold"), [(0.0, 0.5), (float("nan"), 0.5), (1.0, 1.0), (1.0, 0.0)]
)
def test_calibration_refuses_nonsense(temperature: float, threshold: float) -> None:
    with pytest.raises(ValueError):
        Calibration(temperature=temperature, sure_threshold=threshold)
