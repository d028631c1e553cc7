#!/usr/bin/env python3
"""A bounded load on a farm server (bench/run.sh farm_load): submits JOBS builds from THREADS
threads as fast as the server takes them, samples the API's read latency while the hosts
work them off, and waits until every job has ended. Prints one JSON object.

Usage: farm_load.py URL CA TOKEN_FILE JOBS THREADS
"""
import json
import queue
import ssl
import sys
import threading
import time
import urllib.request


def main():
    url, ca, token_file, jobs, threads = sys.argv[1:6]
    jobs, threads = int(jobs), int(threads)
    token = open(token_file).read().strip()
    context = ssl.create_default_context(cafile=ca)

    def call(method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url + "/api/v1" + path, data=data, method=method)
        request.add_header("Authorization", "Bearer " + token)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        started = time.monotonic()
        with urllib.request.urlopen(request, context=context, timeout=60) as response:
            payload = response.read()
        return time.monotonic() - started, payload

    todo = queue.Queue()
    for i in range(jobs):
        todo.put(f"tiny-{i}")
    submit_latencies = []
    errors = []

    def submitter():
        while True:
            try:
                system = todo.get_nowait()
            except queue.Empty:
                return
            try:
                took, _ = call("POST", "/jobs", {"system": system})
                submit_latencies.append(took)
            except Exception as error:  # noqa: BLE001 - counted and reported
                errors.append(f"{system}: {error}")

    read_latencies = []
    reading = threading.Event()

    def reader():
        while not reading.is_set():
            for path in ("/jobs?limit=50", "/builds?limit=50"):
                try:
                    took, _ = call("GET", path)
                    read_latencies.append(took)
                except Exception as error:  # noqa: BLE001
                    errors.append(f"GET {path}: {error}")
            time.sleep(0.05)

    sampler = threading.Thread(target=reader)
    sampler.start()
    started = time.monotonic()
    workers = [threading.Thread(target=submitter) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    submitted = time.monotonic() - started
    while True:
        _, payload = call("GET", f"/jobs?limit={jobs + 10}")
        states = [job["state"] for job in json.loads(payload)]
        if len(states) >= jobs and all(s in ("succeeded", "failed") for s in states):
            break
        time.sleep(0.5)
    drained = time.monotonic() - started
    reading.set()
    sampler.join()

    def percentile(values, p):
        values = sorted(values)
        return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else None

    print(json.dumps({
        "jobs": jobs,
        "failed": sum(1 for s in states if s != "succeeded"),
        "errors": errors[:5],
        "error_count": len(errors),
        "submissions_per_s": jobs / submitted,
        "submit_p99_s": percentile(submit_latencies, 99),
        "api_read_p50_s": percentile(read_latencies, 50),
        "api_read_p99_s": percentile(read_latencies, 99),
        "api_reads": len(read_latencies),
        "drained_s": drained,
    }))


if __name__ == "__main__":
    main()
