"""Maps of embeddings: projections, what a map shows, density, selections, figures."""
