"""The networks: backbones and the embedding head, and images -> embeddings (in process or on Ray)."""
