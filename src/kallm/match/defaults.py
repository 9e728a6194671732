"""Which verifier runs and with which thresholds, from the settings and its calibration: the
server and `kallm eval` start from the same defaults."""

from __future__ import annotations

import logging

from kallm.match.decision import Decision
from kallm.match.verifier import Verifier
from kallm.settings import Settings

log = logging.getLogger("kallm")

# Without a verifier, one cosine threshold decides; 0.95 is the precise end of its curve.
UNCALIBRATED_THRESHOLD = 0.95


def load_verifier(settings: Settings, embedding_model: str) -> Verifier | None:
    """The verifier, when it is on and was trained with this embedding model."""
    if not settings.verifier:
        return None
    verifier = Verifier.load(settings.verifier_model)
    if verifier.calibration.embedding_model != embedding_model:
        log.warning(
            "verifier off: it was trained with %s, not %s; HITs are decided by similarity alone",
            verifier.calibration.embedding_model,
            embedding_model,
        )
        return None
    return verifier


def decide_defaults(settings: Settings, verifier: Verifier | None) -> Decision:
    """Settings win; otherwise the calibrated defaults (or cosine 0.95 without a verifier)."""
    calibrated = verifier.calibration if verifier else None
    threshold = settings.similarity_threshold
    if threshold is None:
        threshold = calibrated.similarity_threshold if calibrated else UNCALIBRATED_THRESHOLD
    min_probability = settings.verifier_threshold
    if min_probability is None:
        min_probability = calibrated.min_probability if calibrated else 0.0
    return Decision(threshold, min_probability)
