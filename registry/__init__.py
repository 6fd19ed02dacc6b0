"""The versioned skill registry: database, blob store, checkpoints. Never imports torch."""
