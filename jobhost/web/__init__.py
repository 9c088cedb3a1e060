"""The host's optional HTTP face: status page, health, Prometheus metrics and the JSON API."""
