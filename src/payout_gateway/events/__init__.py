"""Status-change pipeline and fan-out (in-process by default, Redis for several replicas)."""
