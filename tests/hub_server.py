"""A Hub stand-in served on 127.0.0.1: the endpoints huggingface_hub calls, from folders on disk.

- ``GET /api/models/{repo}/revision/{revision}``: model info (commit sha, file list)
- ``HEAD|GET /{repo}/resolve/{revision}/{file}``: file metadata and bytes
Errors carry the ``X-Error-Code`` header the real Hub sends. ``faults`` injects server errors and
downloads cut halfway; ``requests`` records every request so tests can count them.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

REPO = r"(?P<repo>[\w.-]+(?:/[\w.-]+)?)"
INFO = re.compile(rf"/api/models/{REPO}/revision/(?P<revision>[^/]+)\Z")
RESOLVE = re.compile(rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)\Z")


class HubStandIn:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo -> {"refs": {name: sha}, "commits": {sha: {file: bytes}}}
        self.faults: dict[str, str] = {}  # file name -> "500" or "cut"
        self.private: dict[str, str] = {}  # repo -> the token that may see it
        self.requests: list[tuple[str, str]] = []
        self._server = None

    def add_commit(self, repo_id: str, folder, branches=("main",), extra_files=None) -> str:
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        files.update(extra_files or {})
        digest = hashlib.sha1()
        for name, data in sorted(files.items()):
            digest.update(name.encode() + hashlib.sha256(data).digest())
        sha = digest.hexdigest()
        repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
        repo["commits"][sha] = files
        for branch in branches:
            repo["refs"][branch] = sha
        return sha

    # --- serving --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address
        return f"http://{host}:{port}"

    def start(self) -> "HubStandIn":
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one connection per request: stop() really ends service

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                stand_in._answer(self, with_body=False)

            def do_GET(self):
                stand_in._answer(self, with_body=True)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _resolve(self, repo_id, revision, handler):
        repo = self.repos.get(repo_id)
        token = self.private.get(repo_id)
        if repo is None or (token and handler.headers.get("Authorization") != f"Bearer {token}"):
            return None, "RepoNotFound"  # the Hub answers a private repo without the right token like a missing one
        sha = repo["refs"].get(revision, revision if revision in repo["commits"] else None)
        if sha is None:
            return None, "RevisionNotFound"
        return sha, None

    def _answer(self, handler, with_body: bool):
        path = unquote(urlparse(handler.path).path)
        self.requests.append((handler.command, path))
        if match := INFO.match(path):
            sha, error = self._resolve(match["repo"], match["revision"], handler)
            if error:
                return self._error(handler, 401 if match["repo"] in self.private else 404, error)
            files = self.repos[match["repo"]]["commits"][sha]
            body = json.dumps({"id": match["repo"], "modelId": match["repo"], "sha": sha, "private": False,
                               "siblings": [{"rfilename": name} for name in sorted(files)]}).encode()
            return self._send(handler, 200, body, {"Content-Type": "application/json"}, with_body)
        if match := RESOLVE.match(path):
            sha, error = self._resolve(match["repo"], match["revision"], handler)
            if error:
                return self._error(handler, 404, error)
            files = self.repos[match["repo"]]["commits"][sha]
            name = match["path"]
            if name not in files:
                return self._error(handler, 404, "EntryNotFound", {"X-Repo-Commit": sha})
            if with_body and self.faults.get(name) == "500":  # metadata fine, the download itself fails
                return self._error(handler, 500, None)
            data = files[name]
            headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                       "Content-Type": "application/octet-stream", "Accept-Ranges": "none"}
            if with_body and self.faults.get(name) == "cut":
                handler.send_response(200)
                for key, value in {**headers, "Content-Length": str(len(data))}.items():
                    handler.send_header(key, value)
                handler.end_headers()
                handler.wfile.write(data[: len(data) // 2])
                handler.wfile.flush()
                handler.close_connection = True
                return
            return self._send(handler, 200, data, headers, with_body)
        return self._error(handler, 404, "EntryNotFound")

    @staticmethod
    def _send(handler, status, body, headers, with_body):
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if with_body:
            handler.wfile.write(body)

    def _error(self, handler, status, code, headers=None):
        extra = dict(headers or {})
        if code:
            extra["X-Error-Code"] = code
        self._send(handler, status, json.dumps({"error": code or "server error"}).encode(),
                   {"Content-Type": "application/json", **extra}, handler.command != "HEAD")
