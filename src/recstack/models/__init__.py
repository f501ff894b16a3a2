"""Models: one file each (CTR priors baseline today; DIN, QIN, generative retriever next)."""
