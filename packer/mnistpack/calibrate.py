"""An honest "not sure": a softmax temperature and a sure threshold, both measured on held-out data.

Temperature scaling (Guo et al., 2017) divides the network's final logits by one number T
fitted to minimise the log loss on held-out digits: T > 1 when the network is
over-confident, as networks trained to the last percent are. It never changes which digit
wins, only how sure the network says it is. The sure threshold is then the smallest top
probability at which, on held-out player-style digits, at most `max_wrong_among_sure` of the
answers shown as sure are wrong, provided "not sure" fires on at most `max_not_sure` of them.

Both come from training data only (the validation slice the network never trained on,
redrawn as players draw): the test sets and the player-drawn benchmark stay untouched.
The module carries them as meta `calibration` (FORMAT.md section 3.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

# log T is searched on this grid, then refined around the best point
LOG_T_RANGE: Final = (-1.5, 2.5)
GRID_POINTS: Final = 401
SMALLEST_PROBABILITY: Final = 1e-30  # float32 softmax rounds tiny probabilities to 0


@dataclass(frozen=True)
class Calibration:
    temperature: float  # > 0: the final softmax takes logits / temperature
    sure_threshold: float  # in (0, 1): below this top probability the answer is "not sure"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature}.")
        if not 0 < self.sure_threshold < 1:
            raise ValueError(f"sure_threshold must be in (0, 1), got {self.sure_threshold}.")

    def as_meta(self) -> dict[str, float]:
        return {"temperature": float(self.temperature), "sure_threshold": float(self.sure_threshold)}


def logits_of(probabilities: np.ndarray) -> np.ndarray:
    """Logits up to a per-row constant (all softmax needs), from a softmax's output."""
    return np.log(np.maximum(np.asarray(probabilities, np.float64), SMALLEST_PROBABILITY))


def tempered(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature), row by row, in float64."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def log_loss(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_sum - z[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T minimising the mean log loss of softmax(logits / T) (a 1-D search, grid then refined)."""
    grid = np.linspace(*LOG_T_RANGE, GRID_POINTS)
    losses = [log_loss(logits, labels, float(np.exp(g))) for g in grid]
    best = int(np.argmin(losses))
    step = grid[1] - grid[0]
    fine = np.linspace(grid[best] - step, grid[best] + step, 41)
    losses = [log_loss(logits, labels, float(np.exp(g))) for g in fine]
    return float(np.exp(fine[int(np.argmin(losses))]))


@dataclass(frozen=True)
class Operating:
    """What a threshold does on a set of digits."""

    threshold: float
    not_sure: float  # share of digits below the threshold
    wrong_among_sure: float  # share of the sure answers that are wrong
    confidently_wrong: float  # share of all digits that are wrong and shown as sure


def operating(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> Operating:
    top = probabilities.max(axis=1)
    wrong = probabilities.argmax(axis=1) != labels
    sure = top >= threshold
    return Operating(
        threshold=threshold,
        not_sure=float((~sure).mean()),
        wrong_among_sure=float((sure & wrong).sum() / max(int(sure.sum()), 1)),
        confidently_wrong=float((sure & wrong).mean()),
    )


def choose_threshold(
    probabilities: np.ndarray, labels: np.ndarray, *, max_wrong_among_sure: float, max_not_sure: float
) -> Operating:
    """The lowest threshold whose sure answers are wrong at most `max_wrong_among_sure` of the time.

    If even "not sure" on `max_not_sure` of the digits cannot get there, the threshold that
    flags exactly that many is returned instead: the limit on not-sure comes first, since
    a recognizer that is never sure is no use. Thresholds are rounded to 1/1000.
    """
    candidates = np.round(np.arange(0.1, 1.0, 0.001), 3)
    best: Operating | None = None
    for threshold in candidates:
        point = operating(probabilities, labels, float(threshold))
        if point.not_sure > max_not_sure:
            break
        best = point
        if point.wrong_among_sure <= max_wrong_among_sure:
            return point
    if best is None:
        return operating(probabilities, labels, float(candidates[0]))
    return best


def calibrate(
    probabilities: np.ndarray,
    labels: np.ndarray,
    *,
    max_wrong_among_sure: float,
    max_not_sure: float,
) -> tuple[Calibration, Operating]:
    """Temperature and threshold from held-out `probabilities` (the network's softmax output)."""
    logits = logits_of(probabilities)
    temperature = fit_temperature(logits, labels)
    point = choose_threshold(
        tempered(logits, temperature),
        labels,
        max_wrong_among_sure=max_wrong_among_sure,
        max_not_sure=max_not_sure,
    )
    return Calibration(temperature=temperature, sure_threshold=point.threshold), point
