"""Pipeline files: the same job over a batch of scenes (config, plan, per-scene records, estimate, run)."""
