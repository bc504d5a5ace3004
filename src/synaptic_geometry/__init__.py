"""synaptic_geometry: mirror descent, weight-change statistics and the book that uses them."""

__version__ = "0.1.0"
