"""The request path: admission, the cached APIs, embeddings, the passthrough, the admin API
and their bookkeeping. Internal: the seams are in `kallm.__all__`."""
