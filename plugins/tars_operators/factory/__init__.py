"""Pure: AppSpec → DAG. No network, Variables, Connections or clock at parse time."""
