"""The chapters' experiments: each module holds the computations behind one chapter of the book."""
