"""Training: the native global (beam) update."""
