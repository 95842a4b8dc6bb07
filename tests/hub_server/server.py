#!/usr/bin/env python3
"""A loopback Hugging Face Hub for tests (standard library only).

It speaks the HTTP API that huggingface_hub uses with Xet disabled (HF_HUB_DISABLE_XET=1), as
described in /work/shared/reference/mergekit-hub-and-crates.md sections 2 and 6:

  POST /api/repos/create                         (409 with "url" when the repo exists)
  POST /api/validate-yaml
  GET  /api/models/{repo}[/revision/{rev}]       {id, sha, siblings, private}
  GET  /api/models/{repo}/tree/{rev}[/{path}]    ?recursive=&cursor=  (Link rel="next" pages)
  POST /api/models/{repo}/preupload/{rev}        regular vs lfs per file, remote oid
  POST /api/models/{repo}/branch/{branch}
  POST /{repo}.git/info/lfs/objects/batch        basic or multipart actions, verify action
  POST /api/models/{repo}/commit/{rev}           NDJSON: header, file (base64), lfsFile, deletedFile
  HEAD/GET /{repo}/resolve/{rev}/{path}          X-Repo-Commit, ETag; LFS files answer 302 to
                                                 the second origin with X-Linked-Etag/-Size

The second origin ("CDN", another port, so another host as far as clients are concerned) serves
LFS downloads and takes presigned LFS uploads. It records every request that carries an
Authorization header: a client must never send its token there.

Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) and X-Error-Message.

Test control (main origin): POST /_control/faults sets injected faults, GET /_control/log returns
the request log and the Authorization headers seen on the CDN, POST /_control/reset clears both.

Usage: server.py --data DIR [--token T ...] [--read-token T ...] [--page-size N]
                 [--multipart-threshold BYTES] [--chunk-size BYTES]
Prints one line `READY {"endpoint": ..., "cdn": ...}` on stdout when listening.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_INLINE = 10 << 20
LFS_JSON = "application/vnd.git-lfs+json"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


class State:
    def __init__(self, args):
        self.data = args.data
        self.tokens = set(args.token or [])
        self.read_tokens = set(args.read_token or [])
        self.page_size = args.page_size
        self.multipart_threshold = args.multipart_threshold
        self.chunk_size = args.chunk_size
        self.lock = threading.RLock()
        self.repos = {}  # repo_id -> {"private", "branches": {name: oid}, "commits": {oid: commit}}
        self.faults = []
        self.log = []
        self.cdn_auth = []
        self.commits = []
        self.endpoint = ""
        self.cdn = ""
        os.makedirs(self.objects(), exist_ok=True)
        os.makedirs(self.tmp(), exist_ok=True)

    def objects(self):
        return os.path.join(self.data, "objects")

    def tmp(self):
        return os.path.join(self.data, "tmp")

    def obj_path(self, key):
        assert re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", key), key
        return os.path.join(self.objects(), key)

    def put_object(self, key, data: bytes):
        p = self.obj_path(key)
        if not os.path.exists(p):
            with tempfile.NamedTemporaryFile(dir=self.tmp(), delete=False) as f:
                f.write(data)
            os.replace(f.name, p)

    def new_commit(self, repo, parent, files, summary):
        body = json.dumps({"parent": parent, "files": files, "summary": summary,
                           "t": time.time_ns()}, sort_keys=True).encode()
        oid = hashlib.sha1(body).hexdigest()
        repo["commits"][oid] = {"parent": parent, "files": files, "summary": summary}
        return oid

    def take_fault(self, origin, method, path):
        with self.lock:
            for f in self.faults:
                if f.get("origin", "main") != origin:
                    continue
                if f.get("method") and f["method"] != method:
                    continue
                if f.get("match", "") not in path:
                    continue
                if f.get("times", 1) <= 0:
                    continue
                f["times"] = f.get("times", 1) - 1
                return dict(f)
        return None


STATE = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    origin = "main"

    def log_message(self, fmt, *args):  # quiet
        pass

    # -- plumbing -------------------------------------------------------------------------------
    def record(self):
        if self.path.startswith("/_control"):
            return
        auth = self.headers.get("Authorization")
        with STATE.lock:
            STATE.log.append({"origin": self.origin, "method": self.command, "path": self.path,
                              "auth": auth is not None, "range": self.headers.get("Range")})
            if self.origin == "cdn" and auth is not None:
                STATE.cdn_auth.append({"method": self.command, "path": self.path})

    def send(self, status, body=b"", headers=None, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status, code=None, message="", headers=None):
        h = dict(headers or {})
        if code:
            h["X-Error-Code"] = code
        if message:
            h["X-Error-Message"] = message
        self.send(status, {"error": message or code or "error"}, h)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def token(self):
        a = self.headers.get("Authorization", "")
        return a[len("Bearer "):] if a.startswith("Bearer ") else None

    def can_read(self, repo):
        if not repo["private"]:
            return True
        t = self.token()
        return t in STATE.tokens or t in STATE.read_tokens

    def require_write(self):
        t = self.token()
        if t is None or (t not in STATE.tokens and t not in STATE.read_tokens):
            self.error(401, None, "Invalid credentials in Authorization header")
            return False
        if t not in STATE.tokens:
            self.error(403, None, "You don't have the rights to write to this repository")
            return False
        return True

    def apply_fault(self):
        f = STATE.take_fault(self.origin, self.command, self.path)
        if not f:
            return None
        if f["kind"] == "status":
            self.error(f["status"], f.get("code"), f.get("message", "injected"),
                       f.get("headers"))
            return "done"
        if f["kind"] == "json":
            # a crafted reply: any status, headers and JSON body (hostile listings)
            self.read_body()
            self.send(f.get("status", 200), f.get("body", {}), f.get("headers"))
            return "done"
        if f["kind"] == "huge-json":
            self.read_body()
            n = int(f.get("bytes", 65 << 20))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(n + 2))
            self.end_headers()
            self.wfile.write(b"[")
            block = b" " * (1 << 20)
            left = n
            while left > 0:
                self.wfile.write(block[:min(left, len(block))])
                left -= min(left, len(block))
            self.wfile.write(b"]")
            return "done"
        return f

    def repo_or_error(self, repo_id, write=False):
        repo = STATE.repos.get(repo_id)
        if repo is None or (not write and not self.can_read(repo)):
            self.error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}")
            return None
        return repo

    def resolve_rev(self, repo, repo_id, rev):
        rev = urllib.parse.unquote(rev)
        if rev in repo["branches"]:
            return repo["branches"][rev]
        if rev in repo["commits"]:
            return rev
        self.error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return None

    # -- dispatch -------------------------------------------------------------------------------
    def do_HEAD(self):
        self.dispatch()

    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def dispatch(self):
        self.record()
        try:
            if self.apply_fault() == "done":
                return
            if self.origin == "cdn":
                return self.cdn_route()
            return self.main_route()
        except OSError:  # the client went away (timeouts, refused bodies)
            pass

    def main_route(self):
        u = urllib.parse.urlsplit(self.path)
        path, query = u.path, urllib.parse.parse_qs(u.query)
        m = self.command
        if path == "/_control/faults" and m == "POST":
            with STATE.lock:
                STATE.faults = json.loads(self.read_body() or b"[]")
            return self.send(200, {})
        if path == "/_control/log":
            with STATE.lock:
                return self.send(200, {"log": STATE.log, "cdn_auth": STATE.cdn_auth,
                                       "commits": STATE.commits})
        if path == "/_control/reset" and m == "POST":
            with STATE.lock:
                STATE.log.clear()
                STATE.cdn_auth.clear()
                STATE.faults = []
            return self.send(200, {})
        if path == "/api/repos/create" and m == "POST":
            return self.create_repo()
        if path == "/api/validate-yaml" and m == "POST":
            self.read_body()
            return self.send(200, {"errors": [], "warnings": []})
        mm = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if mm and m == "GET":
            return self.repo_info(mm.group(1), mm.group(2) or "main")
        mm = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if mm and m == "GET":
            return self.tree(mm.group(1), mm.group(2), mm.group(3) or "", query)
        mm = re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/([^/]+)", path)
        if mm and m == "POST":
            return self.preupload(mm.group(1), mm.group(2))
        mm = re.fullmatch(r"/api/models/([^/]+/[^/]+)/branch/([^/]+)", path)
        if mm and m == "POST":
            return self.create_branch(mm.group(1), urllib.parse.unquote(mm.group(2)))
        mm = re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/([^/]+)", path)
        if mm and m == "POST":
            return self.commit(mm.group(1), mm.group(2))
        mm = re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
        if mm and m == "POST":
            return self.lfs_batch(mm.group(1))
        mm = re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/verify", path)
        if mm and m == "POST":
            return self.lfs_verify(mm.group(1))
        mm = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if mm and m in ("GET", "HEAD"):
            return self.resolve(mm.group(1), mm.group(2), urllib.parse.unquote(mm.group(3)))
        self.read_body()
        # an unknown route is answered like the Hub: 404 with an error code
        self.error(404, "EntryNotFound", f"no route {m} {path}")

    # -- repos ----------------------------------------------------------------------------------
    def create_repo(self):
        body = json.loads(self.read_body() or b"{}")
        if not self.require_write():
            return
        repo_id = f"{body.get('organization')}/{body['name']}"
        url = f"{STATE.endpoint}/{repo_id}"
        with STATE.lock:
            if repo_id in STATE.repos:
                return self.send(409, {"error": "You already created this model repo", "url": url})
            private = body.get("visibility") == "private" or bool(body.get("private"))
            repo = {"private": private, "branches": {}, "commits": {}, "lfs": set()}
            attrs = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.gguf filter=lfs diff=lfs merge=lfs -text\n"
            sha = git_sha1(attrs)
            STATE.put_object(sha, attrs)
            files = {".gitattributes": {"lfs": False, "key": sha, "size": len(attrs)}}
            repo["branches"]["main"] = STATE.new_commit(repo, None, files, "initial commit")
            STATE.repos[repo_id] = repo
        self.send(200, {"url": url})

    def repo_info(self, repo_id, rev):
        repo = self.repo_or_error(repo_id)
        if repo is None:
            return
        oid = self.resolve_rev(repo, repo_id, rev)
        if oid is None:
            return
        files = repo["commits"][oid]["files"]
        self.send(200, {"id": repo_id, "modelId": repo_id, "sha": oid, "private": repo["private"],
                        "siblings": [{"rfilename": p} for p in sorted(files)]})

    def create_branch(self, repo_id, branch):
        self.read_body()
        if not self.require_write():
            return
        repo = self.repo_or_error(repo_id, write=True)
        if repo is None:
            return
        with STATE.lock:
            if branch in repo["branches"]:
                return self.error(409, None, "Branch already exists")
            repo["branches"][branch] = repo["branches"]["main"]
        self.send(200, {})

    def tree(self, repo_id, rev, sub, query):
        repo = self.repo_or_error(repo_id)
        if repo is None:
            return
        oid = self.resolve_rev(repo, repo_id, rev)
        if oid is None:
            return
        files = repo["commits"][oid]["files"]
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = sub.rstrip("/") + "/" if sub else ""
        entries, dirs = [], set()
        for p in sorted(files):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if recursive or i == 1:
                    dirs.add(d)
            if not recursive and len(parts) > 1:
                continue
            f = files[p]
            if f["lfs"]:
                ptr = lfs_pointer(f["key"], f["size"])
                entries.append({"type": "file", "path": p, "size": f["size"], "oid": git_sha1(ptr),
                                "lfs": {"oid": f["key"], "size": f["size"], "pointerSize": len(ptr)}})
            else:
                entries.append({"type": "file", "path": p, "size": f["size"], "oid": f["key"]})
        for d in sorted(dirs):
            entries.append({"type": "directory", "path": d, "size": 0,
                            "oid": hashlib.sha1(d.encode()).hexdigest()})
        entries.sort(key=lambda e: e["path"])
        start = int(query.get("cursor", ["0"])[0])
        page = entries[start:start + STATE.page_size]
        headers = {}
        if start + STATE.page_size < len(entries):
            q = urllib.parse.urlencode({"recursive": str(recursive).lower(),
                                        "cursor": start + STATE.page_size})
            sub_part = f"/{sub}" if sub else ""
            headers["Link"] = f'<{STATE.endpoint}/api/models/{repo_id}/tree/{rev}{sub_part}?{q}>; rel="next"'
        self.send(200, page, headers)

    # -- uploads --------------------------------------------------------------------------------
    def preupload(self, repo_id, rev):
        body = json.loads(self.read_body() or b"{}")
        if not self.require_write():
            return
        repo = self.repo_or_error(repo_id, write=True)
        if repo is None:
            return
        oid = self.resolve_rev(repo, repo_id, rev)
        if oid is None:
            return
        files = repo["commits"][oid]["files"]
        out = []
        for f in body.get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            lfs = (f["path"].endswith((".safetensors", ".gguf", ".bin")) or b"\0" in sample
                   or f.get("size", 0) > MAX_INLINE)
            entry = {"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                     "shouldIgnore": False}
            if f["path"] in files:
                entry["oid"] = files[f["path"]]["key"]
            out.append(entry)
        self.send(200, {"files": out, "commitOid": oid})

    def lfs_batch(self, repo_id):
        body = json.loads(self.read_body() or b"{}")
        if not self.require_write():
            return
        repo = self.repo_or_error(repo_id, write=True)
        if repo is None:
            return
        objects, multipart = [], False
        for o in body.get("objects", []):
            oid, size = o["oid"], int(o["size"])
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": "bad oid"}})
                continue
            # LFS objects belong to a repository, as on the Hub: content another repo holds
            # is uploaded again
            if oid in repo["lfs"] and os.path.exists(STATE.obj_path(oid)):
                objects.append({"oid": oid, "size": size})
                continue
            sig = secrets.token_hex(8)
            verify = {"href": f"{STATE.endpoint}/{repo_id}.git/info/lfs/verify", "header": {}}
            if size >= STATE.multipart_threshold:
                multipart = True
                n = (size + STATE.chunk_size - 1) // STATE.chunk_size
                header = {"chunk_size": str(STATE.chunk_size)}
                for i in range(1, n + 1):
                    header[str(i)] = f"{STATE.cdn}/upload/{oid}/part/{i}?sig={sig}"
                up = {"href": f"{STATE.cdn}/upload/{oid}/complete?sig={sig}", "header": header}
            else:
                up = {"href": f"{STATE.cdn}/upload/{oid}?size={size}&sig={sig}"}
            objects.append({"oid": oid, "size": size, "authenticated": True,
                            "actions": {"upload": up, "verify": verify}})
        self.send(200, {"transfer": "multipart" if multipart else "basic", "objects": objects},
                  ctype=LFS_JSON)

    def lfs_verify(self, repo_id):
        body = json.loads(self.read_body() or b"{}")
        if not self.require_write():
            return
        p = STATE.obj_path(body["oid"])
        if os.path.exists(p) and os.path.getsize(p) == int(body["size"]):
            return self.send(200, {"message": "ok"}, ctype=LFS_JSON)
        self.error(404, None, "object not uploaded")

    def commit(self, repo_id, rev):
        raw = self.read_body()
        if not self.require_write():
            return
        repo = self.repo_or_error(repo_id, write=True)
        if repo is None:
            return
        with STATE.lock:
            oid = self.resolve_rev(repo, repo_id, rev)
            if oid is None:
                return
            branch = urllib.parse.unquote(rev)
            if branch not in repo["branches"]:
                return self.error(400, None, "can only commit to a branch")
            files = dict(repo["commits"][oid]["files"])
            summary = ""
            for line in raw.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, v = item["key"], item["value"]
                path = v.get("path", "")
                if key != "header" and (path.startswith("/") or ".." in path.split("/")
                                        or ".git" in path.split("/")):
                    return self.error(400, None, f"invalid path {path}")
                if key == "header":
                    summary = v.get("summary", "")
                elif key == "file":
                    data = base64.b64decode(v["content"])
                    if len(data) > MAX_INLINE:
                        return self.error(400, None, "Your push was rejected because it contains files larger than 10 MiB")
                    sha = git_sha1(data)
                    STATE.put_object(sha, data)
                    files[path] = {"lfs": False, "key": sha, "size": len(data)}
                elif key == "lfsFile":
                    p = STATE.obj_path(v["oid"])
                    if not os.path.exists(p):
                        return self.error(400, None, f"LFS object {v['oid']} was not uploaded")
                    files[path] = {"lfs": True, "key": v["oid"], "size": os.path.getsize(p)}
                    repo["lfs"].add(v["oid"])
                elif key == "deletedFile":
                    files.pop(path, None)
            new = STATE.new_commit(repo, oid, files, summary)
            STATE.commits.append({"repo": repo_id, "summary": summary})
            repo["branches"][branch] = new
        self.send(200, {"commitUrl": f"{STATE.endpoint}/{repo_id}/commit/{new}", "commitOid": new,
                        "success": True})

    # -- downloads ------------------------------------------------------------------------------
    def resolve(self, repo_id, rev, path):
        repo = self.repo_or_error(repo_id)
        if repo is None:
            return
        oid = self.resolve_rev(repo, repo_id, rev)
        if oid is None:
            return
        f = repo["commits"][oid]["files"].get(path)
        if f is None:
            return self.error(404, "EntryNotFound", f"{path} does not exist on {rev}",
                              {"X-Repo-Commit": oid})
        if f["lfs"]:
            sig = secrets.token_hex(8)
            location = f"{STATE.cdn}/lfs/{f['key']}?sig={sig}"
            return self.send(302, b"", {"Location": location, "X-Repo-Commit": oid,
                                        "X-Linked-Etag": f'"{f["key"]}"',
                                        "X-Linked-Size": str(f["size"]),
                                        "ETag": f'"{git_sha1(lfs_pointer(f["key"], f["size"]))}"'},
                             ctype=None)
        fault = STATE.take_fault("main-body", self.command, self.path)
        self.serve_file(STATE.obj_path(f["key"]), {"X-Repo-Commit": oid, "ETag": f'"{f["key"]}"'},
                        fault)

    def serve_file(self, p, headers, fault=None):
        size = os.path.getsize(p)
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        h = dict(headers)
        h["Accept-Ranges"] = "bytes"
        if rng:
            mm = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if mm:
                start = int(mm.group(1))
                end = int(mm.group(2)) if mm.group(2) else size - 1
                if start >= size:
                    return self.send(416, b"", {"Content-Range": f"bytes */{size}"}, ctype=None)
                end = min(end, size - 1)
                status = 206
                h["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        kind = fault["kind"] if fault else None
        announced = length - 10 if kind == "short-length" else length
        self.send_response(status)
        for k, v in h.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(announced))
        if kind in ("drop", "truncate", "stall"):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(p, "rb") as fh:
            fh.seek(start)
            remaining = announced
            sent = 0
            cut = length // 2 if kind in ("drop", "truncate", "stall") else None
            while remaining > 0:
                chunk = fh.read(min(1 << 20, remaining))
                if not chunk:
                    break
                if cut is not None and sent + len(chunk) > cut:
                    chunk = chunk[:cut - sent]
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    if kind == "stall":
                        time.sleep(float(fault.get("seconds", 30)))
                    return
                if kind == "wrong-bytes" and sent == 0 and chunk:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                self.wfile.write(chunk)
                sent += len(chunk)
                remaining -= len(chunk)

    def cdn_route(self):
        u = urllib.parse.urlsplit(self.path)
        path, query = u.path, urllib.parse.parse_qs(u.query)
        m = self.command
        fault = None
        f = STATE.take_fault("cdn-body", m, self.path)
        if f:
            fault = f
        mm = re.fullmatch(r"/lfs/([0-9a-f]{64})", path)
        if mm and m in ("GET", "HEAD"):
            p = STATE.obj_path(mm.group(1))
            if not os.path.exists(p):
                return self.send(404, b"NoSuchKey", ctype="text/plain")
            return self.serve_file(p, {"ETag": f'"{mm.group(1)}"'}, fault)
        mm = re.fullmatch(r"/upload/([0-9a-f]{64})", path)
        if mm and m == "PUT":
            oid = mm.group(1)
            tmp = self.receive_to_tmp()
            if sha256_file(tmp) != oid or os.path.getsize(tmp) != int(query["size"][0]):
                os.remove(tmp)
                return self.send(400, b"BadDigest", ctype="text/plain")
            os.replace(tmp, STATE.obj_path(oid))
            return self.send(200, b"", ctype=None)
        mm = re.fullmatch(r"/upload/([0-9a-f]{64})/part/(\d+)", path)
        if mm and m == "PUT":
            tmp = self.receive_to_tmp()
            part = os.path.join(STATE.tmp(), f"{mm.group(1)}.part{int(mm.group(2))}")
            os.replace(tmp, part)
            return self.send(200, b"", {"ETag": f'"{sha256_file(part)[:32]}"'}, ctype=None)
        mm = re.fullmatch(r"/upload/([0-9a-f]{64})/complete", path)
        if mm and m == "POST":
            oid = mm.group(1)
            body = json.loads(self.read_body() or b"{}")
            parts = sorted(body.get("parts", []), key=lambda x: x["partNumber"])
            with tempfile.NamedTemporaryFile(dir=STATE.tmp(), delete=False) as out:
                for prt in parts:
                    pp = os.path.join(STATE.tmp(), f"{oid}.part{prt['partNumber']}")
                    if not os.path.exists(pp) or f'"{sha256_file(pp)[:32]}"' != prt["etag"]:
                        return self.send(400, b"InvalidPart", ctype="text/plain")
                    with open(pp, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                    os.remove(pp)
            if sha256_file(out.name) != oid:
                os.remove(out.name)
                return self.send(400, b"BadDigest", ctype="text/plain")
            os.replace(out.name, STATE.obj_path(oid))
            return self.send(200, {}, ctype=LFS_JSON)
        self.read_body()
        self.send(404, b"NoSuchKey", ctype="text/plain")

    def receive_to_tmp(self):
        n = int(self.headers.get("Content-Length") or 0)
        with tempfile.NamedTemporaryFile(dir=STATE.tmp(), delete=False) as f:
            remaining = n
            while remaining > 0:
                chunk = self.rfile.read(min(1 << 20, remaining))
                if not chunk:
                    break
                f.write(chunk)
                remaining -= len(chunk)
        return f.name


class CdnHandler(Handler):
    origin = "cdn"


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    global STATE
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--token", action="append")
    ap.add_argument("--read-token", action="append")
    ap.add_argument("--page-size", type=int, default=1000)
    ap.add_argument("--multipart-threshold", type=int, default=1 << 62)
    ap.add_argument("--chunk-size", type=int, default=8 << 20)
    args = ap.parse_args()
    STATE = State(args)
    main_srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    cdn_srv = ThreadingHTTPServer(("127.0.0.1", 0), CdnHandler)
    main_srv.daemon_threads = cdn_srv.daemon_threads = True
    STATE.endpoint = f"http://127.0.0.1:{main_srv.server_address[1]}"
    STATE.cdn = f"http://127.0.0.1:{cdn_srv.server_address[1]}"
    threading.Thread(target=cdn_srv.serve_forever, daemon=True).start()
    print("READY " + json.dumps({"endpoint": STATE.endpoint, "cdn": STATE.cdn}), flush=True)
    # stop when the test that started us goes away (stdin closes)
    threading.Thread(target=main_srv.serve_forever, daemon=True).start()
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    main_srv.shutdown()
    cdn_srv.shutdown()


if __name__ == "__main__":
    main()
