"""`headwater bench …`: throughput of a service against an in-process baseline, same run."""
