"""Data by job: raw/ (readers and writers of each track's raw layouts), builders/ (MovieLens-100K, synthetic),
tables/ (prepare's canonical tables, the scored-rows prediction format, ranker inputs)."""
