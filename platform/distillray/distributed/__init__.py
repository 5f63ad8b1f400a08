"""DeepSpeed config and Ray Train wiring: everything that knows about parallelism."""
