"""Deciding a HIT: canonical prompt text, candidates from the store, the pair model and its
guards, and the decision with its calibrated defaults. Internal."""
