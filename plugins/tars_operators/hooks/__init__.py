"""All I/O of Tars: SSH to hosts, artifact store, load balancers."""
