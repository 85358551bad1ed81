"""Polls the simulator with the official Huawei Cloud Python SDK, one request after another.

Usage: sdk_poll.py ENDPOINT AK SK PROJECT_ID APP_ID JOBS SECONDS
Prints one JSON line: {"requests": n, "errors": n, "seconds": s, "per_second": r, "first_error": ...}
"""
import json
import sys
import time

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions import exceptions
from huaweicloudsdkcloudrtc.v2 import CloudRTCClient, ShowIndividualStreamJobRequest


def main():
    endpoint, ak, sk, project_id, app_id, jobs, seconds = sys.argv[1:8]
    jobs, seconds = int(jobs), float(seconds)
    client = (
        CloudRTCClient.new_builder()
        .with_credentials(BasicCredentials(ak, sk, project_id))
        .with_endpoints([endpoint])
        .build()
    )
    requests = errors = 0
    first_error = None
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < seconds:
        request = ShowIndividualStreamJobRequest(app_id=app_id, job_id="job-%04d" % (i % jobs))
        try:
            response = client.show_individual_stream_job(request)
            if response.state is None:
                raise RuntimeError("no state in the answer")
        except (exceptions.SdkException, RuntimeError) as e:
            errors += 1
            if first_error is None:
                first_error = repr(e)
        requests += 1
        i += 1
    elapsed = time.monotonic() - started
    print(json.dumps({
        "requests": requests,
        "errors": errors,
        "seconds": elapsed,
        "per_second": requests / elapsed,
        "first_error": first_error,
    }))


if __name__ == "__main__":
    main()
