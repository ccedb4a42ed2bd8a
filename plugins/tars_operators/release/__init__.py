"""Release logic: the state machine, gate decisions, brake and run notes."""
