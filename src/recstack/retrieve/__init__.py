"""FAISS indexes, candidate sources, recall reports (the `retrieve` stage)."""
