"""The readers' front-ends over ``query/``: the HTTP JSON API and dashboard, the gRPC query
service, ``/metrics``, the in-process Python client and the activity log line. They parse,
check and render; every number comes from a ``query/`` function, never from SQL of their own."""
