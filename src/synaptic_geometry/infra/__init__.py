"""Infrastructure: the content-addressed results store, cached experiments and resumable sweeps."""
