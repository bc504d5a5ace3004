"""The book build: execute the chapter notebooks at a profile, format their tables and figures, build HTML."""
