"""Objects of an S3-compatible store (AWS S3, MinIO, Ceph RGW, SeaweedFS, Garage) as files.

An ``s3`` route is an ``http_proxy`` route whose requests are signed and whose errors are
mapped: the connection pool, the flow-controlled relay, both timers and the 502/504 rules
are the proxy's (``http_proxy.UpstreamClient``). What this package adds:

    settings      the route's keys (bucket, endpoint, region, key_prefix, credentials)
    sigv4         AWS Signature Version 4 (S3's flavour), the derived key kept for the day
    signer        the route's credentials: its own keys, or botocore's chain (imported only
                  when a route needs it: the ``s3`` extra)
    failures      the store's error codes as statuses for people, and what to fix for operators
    listing       ListObjectsV2 pages rendered as an HTML or JSON folder listing
    integration   GET and HEAD of one object, or one folder
"""
