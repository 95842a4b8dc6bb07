#!/usr/bin/env python3
"""A read-only OCI distribution registry for hostile-server tests (standard library only).

It serves the manifests and blobs of an OCI image layout directory (a loratool store) under
/v2/<repository>/..., with Bearer-token auth through a WWW-Authenticate challenge (the token
endpoint takes Basic credentials), blob GETs redirected to a second "storage" origin like
registries backed by object storage, and injected faults. The storage origin records requests
that carry an Authorization header: a client must never send its token there.

Control: POST /_control/faults (a JSON list of {match, kind, times, ...}); GET /_control/log.
Fault kinds: status (with "status", optional "headers"), wrong-bytes, truncate, short-length,
stall (with "seconds"), other-manifest (with "tag": answer with that tag's manifest).

Usage: fake_registry.py --layout DIR [--user U --password P]
Prints `READY {"addr": "127.0.0.1:PORT", "storage": "http://127.0.0.1:PORT2"}`.
"""

import argparse
import base64
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
S = {"faults": [], "log": [], "storage_auth": [], "tokens": set()}
LOCK = threading.Lock()
ARGS = None
ADDR = {}


def take_fault(origin, path):
    with LOCK:
        for f in S["faults"]:
            if f.get("origin", "registry") == origin and f.get("match", "") in path and f.get("times", 1) > 0:
                f["times"] = f.get("times", 1) - 1
                return dict(f)
    return None


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    origin = "registry"

    def log_message(self, *a):
        pass

    def send(self, status, body=b"", headers=None, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        self.route()

    def do_HEAD(self):
        self.route()

    def do_POST(self):
        self.route()

    def route(self):
        path = urllib.parse.urlsplit(self.path).path
        if not path.startswith("/_control"):
            with LOCK:
                S["log"].append({"origin": self.origin, "method": self.command, "path": self.path,
                                 "auth": self.headers.get("Authorization") is not None})
                if self.origin == "storage" and self.headers.get("Authorization"):
                    S["storage_auth"].append(self.path)
        try:
            if self.origin == "storage":
                return self.storage(path)
            return self.registry(path)
        except OSError:  # the client went away (timeouts, refused bodies)
            pass

    def registry(self, path):
        if path == "/_control/faults":
            n = int(self.headers.get("Content-Length") or 0)
            with LOCK:
                S["faults"] = json.loads(self.rfile.read(n) or b"[]")
            return self.send(200, {})
        if path == "/_control/log":
            with LOCK:
                return self.send(200, {"log": S["log"], "storage_auth": S["storage_auth"]})
        if path == "/token":
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            auth = self.headers.get("Authorization", "")
            want = "Basic " + base64.b64encode(f"{ARGS.user}:{ARGS.password}".encode()).decode()
            if ARGS.user and auth != want:
                return self.send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
            tok = secrets.token_hex(16)
            with LOCK:
                S["tokens"].add(tok)
            return self.send(200, {"token": tok, "scope": q.get("scope", [""])[0]})
        f = take_fault("registry", self.path)
        if f and f["kind"] == "other-manifest":
            # answer a manifest request with another manifest (a lying registry)
            path = re.sub(r"/manifests/.*", "/manifests/" + f["tag"], path)
        if f and f["kind"] == "status":
            return self.send(f["status"], {"errors": [{"code": "INJECTED", "message": "injected"}]},
                             f.get("headers"))
        if ARGS.user:
            auth = self.headers.get("Authorization", "")
            if not (auth.startswith("Bearer ") and auth[7:] in S["tokens"]):
                realm = f"http://{ADDR['addr']}/token"
                m = re.match(r"/v2/(.+)/(manifests|blobs)/", path)
                scope = f"repository:{m.group(1)}:pull" if m else ""
                return self.send(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                 {"WWW-Authenticate": f'Bearer realm="{realm}",service="fake",scope="{scope}"',
                                  "Docker-Distribution-Api-Version": "registry/2.0"})
        if path == "/v2/":
            return self.send(200, {}, {"Docker-Distribution-Api-Version": "registry/2.0"})
        m = re.fullmatch(r"/v2/(.+)/manifests/([^/]+)", path)
        if m:
            ref = m.group(2)
            digest = ref if ref.startswith("sha256:") else self.tag_digest(m.group(1), ref)
            if digest is None:
                return self.send(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]},
                                 {"Docker-Distribution-Api-Version": "registry/2.0"})
            if not os.path.exists(self.blob(digest)):
                return self.send(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]},
                                 {"Docker-Distribution-Api-Version": "registry/2.0"})
            body = open(self.blob(digest), "rb").read()
            return self.send(200, body, {"Docker-Content-Digest": digest}, ctype=MANIFEST)
        m = re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", path)
        if m:
            p = self.blob(m.group(2))
            if not os.path.exists(p):
                return self.send(404, {"errors": [{"code": "BLOB_UNKNOWN", "message": "unknown"}]},
                                 {"Docker-Distribution-Api-Version": "registry/2.0"})
            if self.command == "HEAD":
                self.send_response(200)
                self.send_header("Content-Length", str(os.path.getsize(p)))
                self.send_header("Docker-Content-Digest", m.group(2))
                self.end_headers()
                return
            loc = f"{ADDR['storage']}/data/{m.group(2)}?sig={secrets.token_hex(6)}"
            return self.send(307, b"", {"Location": loc}, ctype=None)
        self.send(404, b"not found", ctype="text/plain")

    def tag_digest(self, repo, tag):
        idx = json.load(open(os.path.join(ARGS.layout, "index.json")))
        for d in idx.get("manifests", []):
            name = d.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
            if name == f"{repo}:{tag}" or name == tag:
                return d["digest"]
        return None

    def blob(self, digest):
        return os.path.join(ARGS.layout, "blobs", "sha256", digest.split(":")[1])

    def storage(self, path):
        m = re.fullmatch(r"/data/(sha256:[0-9a-f]{64})", path)
        if not m:
            return self.send(404, b"", ctype=None)
        data = open(self.blob(m.group(1)), "rb").read()
        f = take_fault("storage", self.path)
        kind = f["kind"] if f else None
        start = 0
        rng = self.headers.get("Range")
        status = 200
        if rng:
            start = int(re.match(r"bytes=(\d+)-", rng).group(1))
            status = 206
        body = data[start:]
        announced = len(body) - 10 if kind == "short-length" else len(body)
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(announced))
        if kind in ("truncate", "stall"):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if kind == "wrong-bytes":
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if kind in ("truncate", "stall"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if kind == "stall":
                time.sleep(float(f.get("seconds", 30)))
            return
        self.wfile.write(body[:announced])


class Storage(H):
    origin = "storage"


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--layout", required=True)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ARGS = ap.parse_args()
    reg = ThreadingHTTPServer(("127.0.0.1", 0), H)
    sto = ThreadingHTTPServer(("127.0.0.1", 0), Storage)
    reg.daemon_threads = sto.daemon_threads = True
    ADDR["addr"] = f"127.0.0.1:{reg.server_address[1]}"
    ADDR["storage"] = f"http://127.0.0.1:{sto.server_address[1]}"
    threading.Thread(target=sto.serve_forever, daemon=True).start()
    threading.Thread(target=reg.serve_forever, daemon=True).start()
    print("READY " + json.dumps(ADDR), flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
