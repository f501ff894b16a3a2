"""Dataset builders: MovieLens-100K (from the pinned recbole wheel) and synthetic data, in a track's raw
layout, with the hidden answers kept aside for `./run.sh evaluate`."""
