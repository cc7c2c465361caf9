"""Generated protobuf and gRPC modules of the ``user_metrics.v1`` query API (do not edit them).

The source is ``proto/user_metrics/v1/user_metrics.proto``; ``user_metrics.serve.grpc_api`` says how to
regenerate these modules, and a test fails when they are stale.
"""
