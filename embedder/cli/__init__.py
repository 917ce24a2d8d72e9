"""python -m embedder: the parser made from the settings, the commands, the insight commands."""
