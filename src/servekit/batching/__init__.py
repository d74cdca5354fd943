"""Dynamic batching: pure batch formation (queue) and the per-model scheduler."""
