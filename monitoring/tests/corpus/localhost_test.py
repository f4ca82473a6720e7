# A unit test that starts a server on localhost and talks to it: sockets in tests are normal.
import http.server
import json
import socket
import threading
import unittest
import urllib.request


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ServerTest(unittest.TestCase):
    def test_roundtrip(self):
        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as r:
            self.assertEqual(json.load(r), {"ok": True})
        server.shutdown()

    def test_raw_socket(self):
        a, b = socket.socketpair()
        a.sendall(b"ping")
        self.assertEqual(b.recv(4), b"ping")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("localhost", 0))
        s.listen()
        c = socket.create_connection(s.getsockname())
        c.close()
        s.close()


if __name__ == "__main__":
    unittest.main()
