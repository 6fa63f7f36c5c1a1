"""Generated code for the postbacks.v1 protobuf package: do not edit, run make proto."""
