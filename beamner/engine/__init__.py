"""The bridge between spaCy and the native engine: inputs, the model's layers, the search."""
