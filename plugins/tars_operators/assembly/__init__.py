"""Host assembly: runtime requirements (preflight), assemble steps, the assemble DAG's work."""
