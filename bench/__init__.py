"""The benchmark: gateway vs direct sandbox calls, on loopback, ratios measured in one run."""
