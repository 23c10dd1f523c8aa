"""Client-side libraries: what a professional's machine runs, holding their keys."""
