"""Interactive apps: the attention-map browser of notebook 08 (`make browse`)."""
