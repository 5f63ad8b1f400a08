"""What differs per task: tokenisation, heads, logit layout, losses and metrics."""
