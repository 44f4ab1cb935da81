"""stacdrop's HTTP API (``stacdrop serve``): submissions, job status, queues, dead letters, metrics, status page."""
