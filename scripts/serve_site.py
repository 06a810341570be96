#!/usr/bin/env python3
"""Serves a folder on 127.0.0.1 with the two headers that make the page cross-origin isolated.

    python3 scripts/serve_site.py PORT FOLDER        (scripts/serve.sh runs it on build-wasm/site)

A plain static server plus Cross-Origin-Opener-Policy: same-origin and
Cross-Origin-Embedder-Policy: require-corp, so the page has SharedArrayBuffer and its Train panel
uses the multi-threaded trainer (ekvae_train_mt.js). Any other static host serves the site too;
the page then trains on one thread.
"""
import functools
import http.server
import os
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript", ".json": "application/json"}

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()


def main():
    if len(sys.argv) != 3 or not sys.argv[1].isdigit():
        sys.exit("usage: serve_site.py PORT FOLDER   (e.g. serve_site.py 8000 build-wasm/site)")
    port, folder = int(sys.argv[1]), sys.argv[2]
    if not os.path.isfile(os.path.join(folder, "index.html")):
        sys.exit(f"serve_site.py: no index.html in {folder}: build the site first (scripts/serve.sh does)")
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Handler, directory=folder))
    except OSError as e:
        sys.exit(f"serve_site.py: cannot serve on port {port} ({e.strerror}): pass another port, e.g. scripts/serve.sh {port + 1}")
    print(f"serving {folder} on http://127.0.0.1:{port}/ (cross-origin isolated)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
