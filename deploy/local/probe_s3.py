"""Readiness probe for the local S3 server: a real client must list the stack's bucket (the
gateway answers before its filer has made the bucket).

Usage: probe_s3.py BUCKET TIMEOUT_SECONDS  (exit 0 when ready, 1 on timeout)
The endpoint and key come from the environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
"""

import contextlib
import sys
import time

import boto3
import botocore.config


def main() -> int:
    bucket, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
    client = boto3.client("s3", config=botocore.config.Config(
        s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=2,
        retries={"max_attempts": 1}))
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # not up yet: any failure means try again
            if any(b["Name"] == bucket for b in client.list_buckets()["Buckets"]):
                return 0
        time.sleep(1)
    return 1


if __name__ == "__main__":
    sys.exit(main())
