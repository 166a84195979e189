"""What the tests and the benchmarks both run against: a real HTTP origin (``origin``), a
throwaway PostgreSQL cluster (``pgcluster``) and an S3-compatible store (``s3store``). Not
part of the installed package."""
