"""Is the model far too big for its text? The warning `charrnn train` prints before a new run starts.

A character model with many more parameters than it has characters to learn from memorises the text:
the training loss falls towards zero while the validation loss climbs, and the samples are pieces of the
training text. Said at the start, before the time is spent, with what to do instead.
"""
from __future__ import annotations

# Parameters per training character above which a run memorises its text. Measured with
# `python benchmarks/overfit_threshold.py` on 2026-12-06 (2-core AMD EPYC VM; step and epoch budgets, so
# load does not matter): the tiny config's 1,200 steps on the first N characters of tiny Shakespeare
#   51.7 per char (4,500 train chars, 997 epochs): train 0.20, val 4.46 (best 2.28): memorised
#   13.1 per char (18,000, 154 epochs):            train 0.84, val 2.32 (best 1.90, 0.42 below the end)
#    4.4 per char (54,000, 48 epochs):             train 1.45, val 1.67 = its best, still improving
# So the line falls between 4.4 and 13.1. (The default config's 20 epochs of such short texts are only
# 37-66 steps, too few to learn or to memorise; any longer budget, e.g. --max-time, then memorises.)
OVERFIT_PARAMS_PER_CHAR = 10


def too_big(parameters: int, train_chars: int) -> str | None:
    """The warning for a model of `parameters` trained on `train_chars` characters, or None."""
    if train_chars <= 0 or parameters <= OVERFIT_PARAMS_PER_CHAR * train_chars:
        return None
    ratio = parameters / train_chars
    return (f"the model has {parameters:,} parameters for {train_chars:,} training characters ({ratio:,.0f} per "
            f"character, more than {OVERFIT_PARAMS_PER_CHAR}): it will memorise the text rather than learn it "
            "(training loss near 0, validation loss rising); use a smaller model (--config tiny is 2x128; or "
            "--hidden, --layers), more --dropout (e.g. 0.5), or more text, and sample from best.npz")
