"""The identify tool: test paired before/after synapse measurements for the geometry of their change."""
