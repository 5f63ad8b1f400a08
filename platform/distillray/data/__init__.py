"""Datasets: labelled text, teacher-logit shards and their precompute job."""
