"""In-context learning: demonstrations, prompts, batched prefix-cached scoring, calibration, evaluation."""
