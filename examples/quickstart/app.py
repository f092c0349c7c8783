"""The quickstart's three services in one small file: a counter store, an API over it, a web page.

Each runs as its own process (oct's process runtime), bound to ``$HOST:$PORT`` of the node oct
placed it on, and finds the service it depends on through the URL oct rendered into its env.
"""

import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE = sys.argv[1]
NODE = os.environ.get("OCT_NODE", "?")
hits = 0


def fetch(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        global hits
        if ROLE == "store":
            hits += 1
            body = {"service": "store", "node": NODE, "hits": hits}
        elif ROLE == "api":
            body = {"service": "api", "node": NODE, "store": fetch(os.environ["STORE_URL"])}
        else:
            api = fetch(os.environ["API_URL"])
            page = (
                f"<h1>{os.environ.get('GREETING', 'Hello')} from oct</h1>"
                f"<p>web on {NODE}, api on {api['node']}, store on {api['store']['node']}; "
                f"visits: {api['store']['hits']}</p>\n"
            )
            self._send(page.encode(), "text/html")
            return
        self._send(json.dumps(body).encode(), "application/json")

    def _send(self, data: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{ROLE}: {fmt % args}", flush=True)


if __name__ == "__main__":
    address = (os.environ["HOST"], int(os.environ["PORT"]))
    print(f"{ROLE} listening on {address[0]}:{address[1]}", flush=True)
    ThreadingHTTPServer(address, Handler).serve_forever()
