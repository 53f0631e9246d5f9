#!/usr/bin/env python3
"""
Run by hand, not by ctest: how often a private influxd (Debian's) loses a
point of concurrent writes into a new database. For each of ROUNDS fresh
databases, WRITERS connections each send one point of a series of its own,
all released at once; every write must be answered 204. Then SELECT
count(f) must be WRITERS. Prints each database where it is not, with what
SHOW SERIES lists, and the total. With --first-point one point of another
measurement is written into each database beforehand (its shard exists).
docs/influxdb.md, "Concurrent writes into a new shard", has the figures.

    python3 test/integration/new_database_race.py [--first-point] ROUNDS WRITERS
"""

import argparse
import socket
import threading
import urllib.parse

import relaytest

T = 1_600_000_000 * 10 ** 9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rounds", type=int)
    ap.add_argument("writers", type=int)
    ap.add_argument("--first-point", action="store_true")
    args = ap.parse_args()
    cleanups = []
    try:
        tmp = relaytest.make_tmpdir(cleanups.append)
        ix = relaytest.Influxd(cleanups.append)
        ix.write_config(tmp)
        ix.start()
        dbs = ["d%05d" % i for i in range(args.rounds)]
        st, _, body = ix.request("POST", "/query?" + urllib.parse.urlencode(
            {"q": "; ".join('CREATE DATABASE "%s"' % db for db in dbs)}))
        assert st == 200, body
        lost = 0
        for db in dbs:
            if args.first_point:
                st, _, _ = relaytest.http_request(ix.port, "POST", "/write?db=" + db,
                                                  b"other f=1 %d\n" % T)
                assert st == 204, st
            start = threading.Barrier(args.writers)

            def write(i, db=db, start=start):
                body = b"m,k=%d f=%d %d\n" % (i, i, T)
                s = socket.create_connection(("127.0.0.1", ix.port))
                req = (b"POST /write?db=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                       % (db.encode(), len(body))) + body
                start.wait()
                s.sendall(req)
                status, head = relaytest.read_head(s)
                assert status == 204, head
                s.close()

            ts = [threading.Thread(target=write, args=(i,)) for i in range(args.writers)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            n = ix.count_or_none(db, "m", "f") or 0
            if n != args.writers:
                lost += 1
                print(db, "count", n, "series",
                      ix.query(db, "SHOW SERIES")["results"][0].get("series"), flush=True)
        print("databases with a point missing: %d of %d" % (lost, args.rounds))
    finally:
        for f in reversed(cleanups):
            f()


if __name__ == "__main__":
    main()
