"""Raw lake generation, raw → bronze ingestion and bronze → silver refinement."""
