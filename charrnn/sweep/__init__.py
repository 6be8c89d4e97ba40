"""Hyperparameter sweeps on Optuna (the `charrnn[sweep]` extra): `spec` reads the sweep file, `storage`
opens the journal file or database, `worker` trains trials, `main` runs `charrnn sweep`, `table` shows it.
Only `spec` imports nothing from Optuna, so a bad sweep file is reported even without the extra."""
