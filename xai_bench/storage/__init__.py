"""Files: the one atomic writer, the tidy tables' schema and readers, checkpoints, content
digests (what identifies code, weights and data) and provenance."""
