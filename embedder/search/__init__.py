"""Finding neighbours: the exact streaming top-k, the Annoy index and its shards, the k-NN vote."""
