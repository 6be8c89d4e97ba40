"""Looking at models and runs: eval and info, the float64 forward, diagnose, activations, curves, figures."""
