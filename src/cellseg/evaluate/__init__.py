"""Scoring a run on held-out masks (per source and modality) and the figures of histories and scores."""
