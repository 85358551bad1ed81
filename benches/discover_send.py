#!/usr/bin/env python3
"""Part 25a (issue 23, item 1, discovery): a storm of signed RECORD_NEW_FILE_START callbacks,
each for a job the daemon does not watch yet, so each is discovered.

    benches/discover_send.py URL KEY APP FIRST COUNT [SECONDS] [SENDERS]

Sends callbacks for jobs `job-%04d` FIRST .. FIRST+COUNT-1 of app APP to URL (the daemon's
callback receiver), signed with KEY as RTC signs them (HMAC-SHA256 over rand, timestamp and
body, hex), spread evenly over SECONDS (0: as fast as SENDERS keep-alive connections go).
Prints how many were answered 200 and how long the storm took. Python's standard library
only, so it runs without building anything."""
import hashlib
import hmac
import http.client
import sys
import threading
import time
import urllib.parse


def main():
    url, key, app = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
    first, count = int(sys.argv[4]), int(sys.argv[5])
    seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    senders = int(sys.argv[7]) if len(sys.argv) > 7 else 32
    u = urllib.parse.urlsplit(url)
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "other": 0}
    start = time.monotonic()

    def take():
        with lock:
            n = state["next"]
            if n >= count:
                return None
            state["next"] = n + 1
            return n

    def send():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        while True:
            n = take()
            if n is None:
                break
            if seconds > 0:
                due = start + seconds * n / count
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            job = "job-%04d" % (first + n)
            body = (
                '{"event_type":"RECORD_NEW_FILE_START","app_id":"%s","job_id":"%s","record_format":"MP4"}'
                % (app, job)
            ).encode()
            rand = "d%d" % n
            ts = str(int(time.time()))
            mac = hmac.new(key, rand.encode() + ts.encode() + body, hashlib.sha256).hexdigest()
            headers = {
                "content-type": "application/json",
                "x-rtc-rand": rand,
                "x-rtc-timestamp": ts,
                "x-rtc-signature": mac,
            }
            for attempt in range(3):
                try:
                    conn.request("POST", u.path, body, headers)
                    r = conn.getresponse()
                    r.read()
                    break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
                    r = None
            with lock:
                if r is not None and r.status == 200:
                    state["ok"] += 1
                else:
                    state["other"] += 1
        conn.close()

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(
        "# storm: %d of %d answered 200 (%d not) in %.1f s"
        % (state["ok"], count, state["other"], time.monotonic() - start)
    )


main()
