"""The light client side of Tars (httpx only): talk to Airflow's REST API for CI jobs."""
