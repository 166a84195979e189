"""A range-aware disk cache for routes whose origin serves byte ranges (http_proxy, s3).

``store`` keeps aligned slices on disk; ``settings`` reads the route's keys; the serving path
(collapsed fills, responses from slices) builds on both.
"""
