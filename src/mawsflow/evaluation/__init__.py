"""Downstream evaluations: evaluation datasets, classification metrics, zero-shot, linear probe,
low-shot, finetuning tasks and the run report."""
