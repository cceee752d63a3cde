"""Line-protocol write throughput: one client posting batches of lines, one after another.

    python3 benches/compare/line_protocol.py --port 8080 [--batches 300] [--lines 10000] [--table lb_targets]

Start the server first (`trafficdb serve -d DIR --http 127.0.0.1:8080`). The batches are built before
the clock starts: shaped like the periodic target stats of docs/line-protocol.md (13 columns, tags
sorted, integers marked `i`), with a new timestamp per line so nothing is a duplicate. Prints lines/s.
Standard library only.
"""

import argparse
import http.client
import sys
import time


def batches(table, count, per, start_ns):
    out, n = [], 0
    for _ in range(count):
        lines = []
        for _ in range(per):
            k = n % 512
            lines.append(
                f"{table},backend=b{k % 64},lb=lb-{k % 16},target=10.0.{k // 256}.{k % 256}:8080,zone=z{k % 3} "
                f"active_conns={n % 100}i,avg_response_ms={(n % 1000) / 10},ejected=false,error_rate=0.01,"
                f"healthy=true,queue_depth=0i,rejected_conns=0i,requests_per_s=120.5,weight=100i "
                f"{start_ns + n * 1_000_000}"
            )
            n += 1
        out.append(("\n".join(lines) + "\n").encode())
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--batches", type=int, default=300)
    p.add_argument("--lines", type=int, default=10_000, help="lines per request")
    p.add_argument("--table", default="lb_targets")
    p.add_argument("--start-ns", type=int, default=1_733_011_200_000_000_000)
    a = p.parse_args()
    bodies = batches(a.table, a.batches, a.lines, a.start_ns)
    conn = http.client.HTTPConnection(a.host, a.port)
    started = time.time()
    for body in bodies:
        conn.request("POST", "/api/v2/write?precision=ns", body)
        r = conn.getresponse()
        answer = r.read()
        if r.status != 204:
            sys.exit(f"HTTP {r.status}: {answer[:500]!r}")
    secs = time.time() - started
    total = a.batches * a.lines
    mb = sum(map(len, bodies)) / len(bodies) / 1e6
    print(f"{total} lines in {secs:.2f} s: {total / secs:,.0f} lines/s ({mb:.2f} MB per request)")


if __name__ == "__main__":
    main()
