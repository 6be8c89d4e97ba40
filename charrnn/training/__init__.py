"""A training run: the trainer loop, fine-tuning, and what the user sees while it trains."""
