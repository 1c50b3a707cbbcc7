"""Lifecycle metrics, RFM scores, segments, transitions and summaries (pure DataFrame transforms)."""
