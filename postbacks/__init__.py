"""Generated gRPC contracts of the postbacks service (make proto)."""
