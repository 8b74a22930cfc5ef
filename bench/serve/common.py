"""The minimal HTTP server both Python references share: GET /ping, POST /invocations with the
Hugging Face inference toolkit's JSON ({"inputs": "text"} or {"inputs": [...]}), answered as
[{"label": ..., "score": ...}] per text. Standard library only (ThreadingHTTPServer), HTTP/1.1
keep-alive so the load generator reuses connections as it does with txcat."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(predict, port):
    """predict(list_of_texts) -> list of {"label", "score"}; one call at a time (a lock: the
    fast tokenizer and the pipeline are not safe to share between threads)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, each response waits for the
        # client's delayed ACK (about 40 ms on Linux).
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/ping":
                self.reply(200, {"status": "ok"})
            else:
                self.reply(404, {"error": "no route"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if self.path != "/invocations":
                self.reply(404, {"error": "no route"})
                return
            try:
                inputs = json.loads(raw)["inputs"]
            except (ValueError, KeyError, TypeError):
                self.reply(400, {"error": "expected {\"inputs\": ...}"})
                return
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            with lock:
                out = predict(texts)
            self.reply(200, out)

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
