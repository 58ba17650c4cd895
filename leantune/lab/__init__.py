"""The theory lab: a small causal LM trained here, offline, on a synthetic in-context classification task."""
