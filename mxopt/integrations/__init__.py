"""Layer 6: adapters that let other libraries drive mxopt (Thinc and spaCy)."""
