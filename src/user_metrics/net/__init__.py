"""The network plumbing that the OTLP receivers and the readers share: the threaded HTTP server
with its bounds, request bodies, the gRPC server, bearer tokens and TLS. It knows no stage."""
