"""Streamlit-only glue for the app: session state, caching wrappers, the training job registry, shared widgets."""
