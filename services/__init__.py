"""wattserve services: the inference service, the model registry and (later) sensor exporters."""
