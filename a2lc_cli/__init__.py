"""a2lc: active and automated label correction for semantic segmentation (A²LC, AAAI 2026)."""

__version__ = "0.1.0"
