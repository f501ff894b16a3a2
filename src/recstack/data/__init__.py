"""Raw readers and writers for each track, dataset builders (MovieLens-100K, synthetic), validation."""
