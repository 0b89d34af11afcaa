"""What coinfeed shows of itself: the HTTP endpoints, readiness, metrics and process figures."""
