//! A small HTTP/1.1 client for the server tests (blocking, one request per connection, TCP or
//! Unix socket, optionally TLS), and a `vana-sandbox serve` process to test against.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where a server listens.
#[derive(Debug, Clone)]
pub enum Addr {
    /// TCP.
    Tcp(SocketAddr),
    /// A Unix socket.
    Unix(PathBuf),
}

impl Addr {
    /// Parses the server's `listening on …` line.
    pub fn from_banner(line: &str) -> Addr {
        let a = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        let a = a.trim_end_matches(" (TLS)");
        if let Some(p) = a.strip_prefix("unix:") {
            Addr::Unix(p.into())
        } else {
            Addr::Tcp(
                a.strip_prefix("tcp:")
                    .expect("tcp address")
                    .parse()
                    .expect("socket address"),
            )
        }
    }
}

/// A byte stream to the server.
pub trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// Connects (with read and write timeouts).
pub fn connect(addr: &Addr) -> Box<dyn Conn> {
    let t = Some(Duration::from_secs(60));
    match addr {
        Addr::Tcp(a) => {
            let s = TcpStream::connect(a).expect("connect tcp");
            s.set_read_timeout(t).unwrap();
            s.set_write_timeout(t).unwrap();
            Box::new(s)
        }
        Addr::Unix(p) => {
            let s = UnixStream::connect(p).expect("connect unix");
            s.set_read_timeout(t).unwrap();
            s.set_write_timeout(t).unwrap();
            Box::new(s)
        }
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Resp {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The error code of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Writes a request head and body.
pub fn send(
    conn: &mut dyn Conn,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&[u8]>,
    extra: &[(&str, &str)],
) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(k) = key {
        head.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        if !extra
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).expect("write head");
    if let Some(b) = body {
        // A server may answer (413) and close before it has read everything.
        let _ = conn.write_all(b);
    }
    let _ = conn.flush();
}

/// Reads an answer to the end of the connection.
pub fn read_response(conn: &mut dyn Conn) -> Resp {
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw);
    parse(&raw)
}

/// Parses a whole answer.
pub fn parse(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let stop = (start + size).min(b.len());
        out.extend_from_slice(&b[start..stop]);
        b = &b[(stop + 2).min(b.len())..];
    }
    out
}

/// One request on a fresh connection.
pub fn call(addr: &Addr, method: &str, path: &str, key: Option<&str>, body: Option<&[u8]>) -> Resp {
    let mut c = connect(addr);
    send(&mut *c, method, path, key, body, &[]);
    read_response(&mut *c)
}

/// `call` with a JSON body.
pub fn call_json(
    addr: &Addr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &serde_json::Value,
) -> Resp {
    call(addr, method, path, key, Some(body.to_string().as_bytes()))
}

/// Server-sent events of a body: (event name, data as JSON).
pub fn events(body: &[u8]) -> Vec<(String, serde_json::Value)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = String::new();
            for l in e.lines() {
                if let Some(n) = l.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = l.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (
                name,
                serde_json::from_str(&data).expect("event data is JSON"),
            )
        })
        .collect()
}

/// A `vana-sandbox serve` process; SIGTERM (then SIGKILL after 60 s) when dropped.
pub struct ServerProc {
    /// The process.
    pub child: Option<Child>,
    /// Where it listens.
    pub addr: Addr,
    /// Its stderr, once it exited.
    pub stderr: String,
}

impl ServerProc {
    /// Starts `vana-sandbox serve ARGS…` and waits for its `listening on` line.
    pub fn start(bin: &str, args: &[&str]) -> ServerProc {
        let mut child = Command::new(bin)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if !l.is_empty() => l,
            _ => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "the server did not start: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        ServerProc {
            addr: Addr::from_banner(&line),
            child: Some(child),
            stderr: String::new(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
    }

    /// Waits for the process to exit (at most `limit`): its exit code and how long it took.
    pub fn wait(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let begun = Instant::now();
        let Some(mut child) = self.child.take() else {
            return (None, Duration::ZERO);
        };
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                self.stderr = err;
                return (status.code(), begun.elapsed());
            }
            if begun.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
            if let Some(mut c) = self.child.take() {
                let begun = Instant::now();
                while begun.elapsed() < Duration::from_secs(60) {
                    if c.try_wait().ok().flatten().is_some() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Writes `text` to `dir/name` and returns the path as a string.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p.display().to_string()
}
