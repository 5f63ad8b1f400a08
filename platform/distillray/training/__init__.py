"""The one train loop and its checkpoints."""
