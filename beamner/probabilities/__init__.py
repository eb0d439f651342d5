"""Entity and parse probabilities from the beam, and their calibration."""
