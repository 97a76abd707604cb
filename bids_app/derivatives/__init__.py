"""Writing BIDS derivatives: file names, atomic writes, dataset description, provenance."""
